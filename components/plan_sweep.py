from typing import List

from kfp import dsl

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def plan_sweep(
    tokens_uri: str,
    work_uri: str,
    presets_csv: str,
    tokens_csv: str,
    heldout_presets_csv: str,
    heldout_tokens_csv: str,
    domains_csv: str,
    n_mixtures: int,
    min_weight: float,
    eval_points: int,
    settings_json: str,
    seed: int,
) -> List[str]:
    """Design the proxy sweep (SPEC §2) and write ``<work_uri>/sweep.json``; returns one item per run.

    ``n_mixtures`` 0: ≈10 for 3–4 domains, ≈20 for 6–8. ``domains_csv`` "": every domain of the tokens.
    """
    import json

    from seedbed.mixture.stages import plan_sweep as run
    from seedbed.params import csv_ints, csv_list

    return run(work_uri, tokens_uri, csv_list(presets_csv), csv_ints(tokens_csv), json.loads(settings_json or "{}"),
               heldout_presets=csv_list(heldout_presets_csv), heldout_tokens=csv_ints(heldout_tokens_csv),
               n_mixtures=n_mixtures or None, min_weight=min_weight, eval_points=eval_points, seed=seed,
               domains=csv_list(domains_csv) or None)
