from typing import List

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def merge_filter(
    shard_stats: List[str],
    work_uri: str,
    name: str,
    threshold: float,
    keep_rate: float,
    manifest: Output[Dataset],
    metrics: Output[Metrics],
) -> str:
    """Collect the per-shard stats into the filtered corpus's manifest; returns its URI."""
    import json

    from seedbed import store
    from seedbed.betr.filter import merge_filter_outputs

    out_uri = store.join(work_uri, name)

    done = [json.loads(s)["input_shard"] for s in shard_stats]
    m = merge_filter_outputs(out_uri, threshold=threshold, keep_rate=keep_rate, expected_inputs=done)
    with open(manifest.path, "w") as f:
        json.dump(m.to_dict(), f, indent=2)
    manifest.metadata["uri"] = out_uri
    totals = m.meta.get("totals", {})
    for key in ("docs_in", "docs_kept", "tokens_in", "tokens_kept", "malformed"):
        if key in totals:
            metrics.log_metric(key, float(totals[key]))
    return store.join(out_uri, "manifest.json")
