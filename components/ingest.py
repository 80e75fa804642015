from kfp import dsl
from kfp.dsl import Dataset, Output

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest_corpus(sources: str, work_uri: str, name: str, docs_per_shard: int, manifest: Output[Dataset]) -> str:
    """Ingest comma-separated jsonl(.gz/.zst) files/prefixes into a sharded corpus; returns its URI.

    A single source that already is a seedbed corpus (has manifest.json) is used in place.
    """
    from seedbed import corpus, store

    out_uri = store.join(work_uri, name)

    srcs = [s.strip() for s in sources.split(",") if s.strip()]
    if len(srcs) == 1 and store.exists(store.join(srcs[0], "manifest.json")):
        uri = srcs[0]
    else:
        corpus.ingest(srcs, out_uri, docs_per_shard=docs_per_shard, source_field_from_file=True)
        uri = out_uri
    store.copy_to_path(store.join(uri, "manifest.json"), manifest.path)
    manifest.metadata["uri"] = uri
    return uri
