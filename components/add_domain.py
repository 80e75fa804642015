from kfp import dsl

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def add_domain(domains_json: str, name: str, corpus_uri: str) -> str:
    """``domains_json`` (domain → corpus URI) with ``name`` → ``corpus_uri`` added: the BETR selection
    becomes one domain among the others."""
    from seedbed.job.config import with_domain

    return with_domain(domains_json, name, corpus_uri)
