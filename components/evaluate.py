from kfp import dsl
from kfp.dsl import Markdown, Metrics, Output

from components._images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def evaluate_model(
    model_uri: str,
    tokens_uri: str,
    benchmarks_uri: str,
    tasks_csv: str,
    work_uri: str,
    name: str,
    seq_len: int,
    limit: int,
    batch_size: int,
    device: str,
    metrics: Output[Metrics],
    report: Output[Markdown],
) -> str:
    """Held-out loss per domain vs unigram, and zero-shot multiple choice via lm-eval (issue #3).

    Empty ``tokens_uri`` / ``benchmarks_uri`` / ``tasks_csv`` mean: no held-out loss / the shared
    data (or its fallback) / every task ("none" runs no task); 0 for ``seq_len`` / ``limit``
    means the model's context / every document. Returns the URI of ``eval.json``; an empty
    ``model_uri`` (an unused stage slot) evaluates nothing and returns "".
    """
    from seedbed import store
    from seedbed.evaluate.report import evaluate_model as run, flat_metrics

    if not model_uri:  # an unused stage slot of a fixed-size DAG (curate-and-grow): nothing to evaluate
        report.metadata["skipped"] = True
        return ""
    tasks = [] if tasks_csv.strip().lower() == "none" else (tasks_csv or None)
    r = run(
        model_uri,
        store.join(work_uri, name),
        tokens_uri=tokens_uri or None,
        benchmarks_dir=benchmarks_uri or None,
        tasks=tasks,
        seq_len=seq_len or None,
        limit=limit or None,
        batch_size=batch_size,
        device=device or "auto",
    )
    for key, value in flat_metrics(r).items():
        metrics.log_metric(key, value)
    store.copy_to_path(r["report_uri"], report.path)
    report.metadata["uri"] = r["report_uri"]
    return r["eval_uri"]
