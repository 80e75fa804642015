from kfp import dsl
from kfp.dsl import Dataset, Output

from components._images import EMBED_IMAGE


@dsl.component(base_image=EMBED_IMAGE, install_kfp_package=False)
def embed(
    corpus_uri: str,
    work_uri: str,
    name: str,
    model: str,
    batch_size: int,
    max_length: int,
    device: str,
    dtype: str,
    query_prefix: str,
    manifest: Output[Dataset],
) -> str:
    """Embed a corpus with sentence-transformers into float16 shards (SPEC §1.3); returns their URI."""
    from seedbed import store
    from seedbed.betr.embed import embed_corpus

    out_uri = store.join(work_uri, name)

    embed_corpus(
        corpus_uri,
        out_uri,
        model=model,
        batch_size=batch_size,
        max_length=max_length or None,
        device=device,
        dtype=dtype,
        query_prefix=query_prefix,
    )
    store.copy_to_path(store.join(out_uri, "manifest.json"), manifest.path)
    manifest.metadata["uri"] = out_uri
    return out_uri
