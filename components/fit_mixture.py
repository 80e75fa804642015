from kfp import dsl
from kfp.dsl import Markdown, Metrics, Output

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def fit_mixture(work_uri: str, table_uri: str, targets: str, report: Output[Markdown],
                metrics: Output[Metrics]) -> str:
    """Fit the additive and joint mixture laws (SPEC §2) to every target; returns fits.json's URI."""
    from seedbed import store
    from seedbed.mixture.stages import fit_stage
    from seedbed.params import csv_list

    r = fit_stage(work_uri, table_uri, csv_list(targets))
    for name, value in r["metrics"].items():
        metrics.log_metric(name, value)
    store.copy_to_path(r["report_uri"], report.path)
    report.metadata["uri"] = r["report_uri"]
    return r["fits_uri"]
