from kfp import dsl
from kfp.dsl import HTML, Markdown, Output

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def job_report(work_uri: str, betr_domain: str, report: Output[Markdown], page: Output[HTML]) -> str:
    """The curate-and-grow report (selection, fitted mixture, series curves, evaluation); returns its URI."""
    from seedbed import store
    from seedbed.job.report import final_report

    r = final_report(work_uri, betr_domain)
    store.copy_to_path(r["report_uri"], report.path)
    store.copy_to_path(r["html_uri"], page.path)
    report.metadata["uri"] = r["report_uri"]
    return r["report_uri"]
