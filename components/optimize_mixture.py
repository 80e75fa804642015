from kfp import dsl
from kfp.dsl import Artifact, Output

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def optimize_mixture(work_uri: str, fits_uri: str, target: str, preset: str, n_tokens: int, min_weight: float,
                     max_repeats: float, upsample_domains: str, upsample_fraction: float,
                     schedule: Output[Artifact]) -> str:
    """h* on the simplex for (preset, n_tokens) and an end-of-training upsampling window (SPEC §3);
    the ``schedule`` artifact is the mixture.json TrainConfig fragment. Returns its URI."""
    import json

    from seedbed.mixture.stages import optimize_stage
    from seedbed.params import csv_list

    r = optimize_stage(work_uri, fits_uri, target, preset, n_tokens, min_weight, max_repeats,
                       csv_list(upsample_domains) or None, upsample_fraction or None)
    with open(schedule.path, "w") as f:
        json.dump(r["fragment"], f, indent=2)
    schedule.metadata.update(uri=r["uri"], predicted_loss=r["optimum"]["loss"])
    return r["uri"]
