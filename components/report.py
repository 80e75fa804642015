from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Markdown, Output

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def betr_report(
    score_summary: Input[Dataset],
    top_matches: Input[Dataset],
    classifier_metrics: Input[Dataset],
    thresholds: Input[Dataset],
    filter_manifest: Input[Dataset],
    work_uri: str,
    name: str,
    report_md: Output[Markdown],
    report_html: Output[HTML],
):
    """The BETR report (Markdown for the KFP UI, plus HTML) from the stages' JSON artifacts."""
    from seedbed import store
    from seedbed.betr.report import build_report

    r = build_report(
        store.join(work_uri, name),
        score_json=score_summary.path,
        top_matches_json=top_matches.path,
        metrics_json=classifier_metrics.path,
        thresholds_json=thresholds.path,
        filter_manifest=filter_manifest.path,
    )
    store.copy_to_path(r["markdown_uri"], report_md.path)
    store.copy_to_path(r["html_uri"], report_html.path)
    report_md.metadata["uri"] = r["markdown_uri"]
    report_html.metadata["uri"] = r["html_uri"]
