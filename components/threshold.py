from kfp import dsl
from kfp.dsl import Dataset, Output

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def compute_thresholds(
    model_uri: str,
    pool_uri: str,
    work_uri: str,
    name: str,
    keep_rates: str,
    keep_rate: float,
    sample_size: int,
    seed: int,
    thresholds: Output[Dataset],
) -> float:
    """Score thresholds that keep given percentages of tokens on a held-out sample (SPEC §1.6).

    ``keep_rates`` is comma-separated percentages (e.g. "3,10,30"); returns the threshold for
    ``keep_rate``, the one the filter applies.
    """
    from seedbed import store
    from seedbed.betr.threshold import compute_thresholds as run, parse_keep_rates

    out_uri = store.join(work_uri, name)

    rates = parse_keep_rates(keep_rates)
    if keep_rate not in rates:
        rates = sorted(set(rates) | {keep_rate})
    result = run(model_uri, pool_uri, out_uri, keep_rates=rates, sample_size=sample_size, seed=seed)
    store.copy_to_path(store.join(out_uri, "thresholds.json"), thresholds.path)
    thresholds.metadata["uri"] = store.join(out_uri, "thresholds.json")
    return float(result["thresholds"][format(keep_rate, "g")])
