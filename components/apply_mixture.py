from kfp import dsl

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def apply_mixture(settings_json: str, mixture_uri: str) -> str:
    """TrainConfig settings (JSON) with ``mixture`` and ``upsample`` taken from the fitted ``mixture.json``."""
    import json

    from seedbed.mixture.stages import settings_with_schedule

    return json.dumps(settings_with_schedule(json.loads(settings_json or "{}"), mixture_uri))
