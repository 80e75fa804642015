from kfp import dsl
from kfp.dsl import Dataset, Output

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def sample_pool(pool_uri: str, work_uri: str, name: str, n: int, seed: int, manifest: Output[Dataset]) -> str:
    """Deterministic seeded sample of n pool documents (SPEC §1.2); returns the sample's URI."""
    from seedbed import store
    from seedbed.betr.sample import sample_corpus

    out_uri = store.join(work_uri, name)

    sample_corpus(pool_uri, n, out_uri, seed=seed)
    store.copy_to_path(store.join(out_uri, "manifest.json"), manifest.path)
    manifest.metadata["uri"] = out_uri
    return out_uri
