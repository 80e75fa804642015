from kfp import dsl
from kfp.dsl import Dataset, Output

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def build_targets(
    benchmarks_uri: str,
    work_uri: str,
    name: str,
    target_set: str,
    mode: str,
    per_benchmark: int,
    seed: int,
    manifest: Output[Dataset],
) -> str:
    """One target document per benchmark example (SPEC §1.1); returns the targets corpus URI."""
    from seedbed import store
    from seedbed.betr.targets import build_targets as run

    out_uri = store.join(work_uri, name)

    run(benchmarks_uri, out_uri, target_set=target_set, mode=mode, per_benchmark=per_benchmark, seed=seed)
    store.copy_to_path(store.join(out_uri, "manifest.json"), manifest.path)
    manifest.metadata["uri"] = out_uri
    return out_uri
