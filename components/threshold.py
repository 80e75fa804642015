from kfp import dsl
from kfp.dsl import Dataset, Output

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def compute_thresholds(
    model_uri: str,
    pool_uri: str,
    exclude_corpus_uri: str,
    work_uri: str,
    name: str,
    keep_rates: str,
    keep_rate: float,
    sample_size: int,
    seed: int,
    thresholds: Output[Dataset],
) -> float:
    """Score thresholds that keep given percentages of tokens on a held-out sample (SPEC §1.6).

    The docs in ``exclude_corpus_uri`` (the classifier's training sample) are kept out of the
    held-out sample. ``keep_rates`` is comma-separated percentages (e.g. "3,10,30"); returns the threshold for
    ``keep_rate``, the one the filter applies.
    """
    from seedbed import store
    from seedbed.betr.threshold import compute_thresholds as run, rate_key, validate_keep_rates
    from seedbed.params import csv_floats

    out_uri = store.join(work_uri, name)

    rates = validate_keep_rates(csv_floats(keep_rates) + [keep_rate])
    result = run(
        model_uri, pool_uri, out_uri, keep_rates=rates, sample_size=sample_size, seed=seed,
        exclude_corpus=exclude_corpus_uri or None,
    )
    store.copy_to_path(store.join(out_uri, "thresholds.json"), thresholds.path)
    thresholds.metadata["uri"] = store.join(out_uri, "thresholds.json")
    return float(result["thresholds"][rate_key(keep_rate)])
