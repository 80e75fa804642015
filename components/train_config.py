from kfp import dsl

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def write_train_config(tokens_uri: str, work_uri: str, name: str, settings_json: str) -> str:
    """Validate the run's settings (TrainConfig fields as JSON) against the token dataset and write
    ``<work_uri>/<name>/train.json``; returns its URI for the launcher."""
    import json

    from seedbed import store
    from seedbed.train.config import write_run_config

    return write_run_config(tokens_uri, store.join(work_uri, name), json.loads(settings_json or "{}"))
