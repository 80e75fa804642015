from kfp import dsl
from kfp.dsl import Dataset, Output

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def ingest_corpus(sources: str, work_uri: str, name: str, docs_per_shard: int, manifest: Output[Dataset]) -> str:
    """Ingest comma-separated jsonl(.gz/.zst) files/prefixes into a sharded corpus; returns its URI.

    A single source that already is a seedbed corpus (has manifest.json) is used in place.
    """
    from seedbed import corpus, store

    uri = corpus.corpus_or_ingest(sources, store.join(work_uri, name), docs_per_shard=docs_per_shard,
                                  source_field_from_file=True)
    store.copy_to_path(store.join(uri, "manifest.json"), manifest.path)
    manifest.metadata["uri"] = uri
    return uri
