from typing import List

from kfp import dsl

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def plan_filter(pool_uri: str, model_uri: str, threshold: float) -> List[str]:
    """One work item per pool shard, as a JSON string: {"shard", "model", "threshold"}.

    The model and threshold travel inside the items, not as separate task outputs: in
    kfp 2.17's local runner every upstream task output read inside a ParallelFor resolves to the
    loop item (pipeline parameters are fine). Strings, not dicts, because ParallelFor over dicts
    with field access is broken locally too (SPEC §6). The same YAML runs on a cluster.
    """
    import json

    from seedbed.betr.filter import plan_filter as run

    return [json.dumps({"shard": s, "model": model_uri, "threshold": threshold}) for s in run(pool_uri)]
