from kfp import dsl

from components._images import TRAIN_IMAGE


@dsl.component(base_image=TRAIN_IMAGE, install_kfp_package=False)
def sweep_run(
    item: str,
    mode: str,
    image: str,
    runtime: str,
    runtime_kind: str,
    nodes: int,
    procs_per_node: int,
    gpus_per_node: int,
    node_selector_json: str,
    tolerations_json: str,
) -> str:
    """Train one proxy run of the sweep (the item names it; a finished run is skipped); returns its out_uri.

    Everything comes from the loop item and pipeline parameters: kfp 2.17's local runner resolves
    any upstream task output inside a ParallelFor to the loop item (SPEC §6).
    """
    from seedbed.launch import spec_from_args
    from seedbed.mixture.stages import run_item

    spec = spec_from_args(image=image, runtime=runtime, runtime_kind=runtime_kind, nodes=nodes,
                          procs_per_node=procs_per_node, gpus_per_node=gpus_per_node,
                          node_selector_json=node_selector_json, tolerations_json=tolerations_json)
    return run_item(item, mode, spec)
