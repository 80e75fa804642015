from kfp import dsl

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def filter_shard(item: str, work_uri: str, name: str, keep_rate: float) -> str:
    """Score one pool shard and write the kept docs (SPEC §1.7); returns the shard's stats JSON.

    ``item`` is one work item of ``plan_filter`` ({"shard", "model", "threshold"}). Idempotent:
    a shard whose done-marker exists is skipped on rerun.
    """
    import json

    from seedbed import store
    from seedbed.betr.filter import filter_shard as run

    job = json.loads(item)
    stats = run(job["model"], job["shard"], store.join(work_uri, name), threshold=job["threshold"], keep_rate=keep_rate)
    return json.dumps(stats)
