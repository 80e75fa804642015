from kfp import dsl
from kfp.dsl import Dataset, Output

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def tokenize_domains(
    domains_json: str,
    work_uri: str,
    name: str,
    tokenizer: str,
    vocab_size: int,
    valid_fraction: float,
    overwrite: bool,
    manifest: Output[Dataset],
) -> str:
    """Tokenize one corpus per domain into a token dataset (docs/training-contracts.md).

    ``domains_json``: a JSON object domain name -> corpus URI. ``tokenizer``: ``train`` (BPE of
    ``vocab_size``), ``olmo:gpt-neox-20b`` or a tokenizer.json URI. Returns the dataset URI.
    """
    import json

    from seedbed import store
    from seedbed.train.tokens import tokenize_domains as run

    out_uri = store.join(work_uri, name)
    run(
        json.loads(domains_json),
        out_uri,
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        valid_fraction=valid_fraction,
        overwrite=overwrite,
    )
    store.copy_to_path(store.join(out_uri, "manifest.json"), manifest.path)
    manifest.metadata["uri"] = store.join(out_uri, "manifest.json")
    return out_uri
