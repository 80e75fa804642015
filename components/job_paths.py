from kfp import dsl

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def job_path(work_uri: str, name: str) -> str:
    """``work_uri/name``: where one stage of curate-and-grow keeps its outputs."""
    from seedbed import store

    return store.join(work_uri, name)
