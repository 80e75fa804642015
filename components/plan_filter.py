from typing import List

from kfp import dsl

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def plan_filter(pool_uri: str) -> List[str]:
    """The pool's shard URIs: one filter task per shard (a ParallelFor over strings, SPEC §6)."""
    from seedbed.betr.filter import plan_filter as run

    return run(pool_uri)
