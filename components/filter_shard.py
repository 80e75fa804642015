from kfp import dsl

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def filter_shard(model_uri: str, shard_uri: str, work_uri: str, name: str, threshold: float, keep_rate: float) -> str:
    """Score one pool shard and write the kept docs (SPEC §1.7); returns the shard's stats JSON.

    Idempotent: a shard whose done-marker exists is skipped on rerun.
    """
    import json

    from seedbed import store
    from seedbed.betr.filter import filter_shard as run

    out_uri = store.join(work_uri, name)

    stats = run(model_uri, shard_uri, out_uri, threshold=threshold, keep_rate=keep_rate)
    return json.dumps(stats)
