from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Output

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def collect_sweep(work_uri: str, run_uris: List[str], results: Output[Dataset]) -> str:
    """Every proxy run's held-out losses as one table (weight_<d>, model_size, n_tokens, <d>_loss);
    returns the Parquet URI (the CSV is the ``results`` artifact)."""
    from seedbed import store
    from seedbed.mixture.stages import collect_results

    out = collect_results(work_uri)
    store.copy_to_path(out["csv"], results.path)
    results.metadata.update(uri=out["csv"], rows=out["rows"], runs=out["runs"])
    return out["parquet"]
