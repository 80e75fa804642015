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

    csv = lambda s, t=str: [t(x) for x in s.split(",") if x.strip()]  # noqa: E731
    return run(work_uri, tokens_uri, csv(presets_csv), csv(tokens_csv, lambda x: int(float(x))),
               json.loads(settings_json or "{}"), heldout_presets=csv(heldout_presets_csv),
               heldout_tokens=csv(heldout_tokens_csv, lambda x: int(float(x))), n_mixtures=n_mixtures or None,
               min_weight=min_weight, eval_points=eval_points, seed=seed, domains=csv(domains_csv) or None)
