from kfp import dsl
from kfp.dsl import Markdown, Metrics, Output

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def series_report(work_uri: str, report: Output[Markdown], metrics: Output[Metrics]) -> str:
    """Loss vs cumulative FLOPs for every stage (and from-scratch baselines) on one plot; returns report.md's URI."""
    from seedbed import store
    from seedbed.growth.report import series_report as run

    r = run(work_uri)
    for row in r["stages"]:
        for key in ("grown_val_loss", "scratch_val_loss"):
            if row[key] is not None:
                metrics.log_metric(f"stage{row['stage']}_{key}", row[key])
    store.copy_to_path(r["report_uri"], report.path)
    report.metadata["uri"] = r["report_uri"]
    return r["report_uri"]
