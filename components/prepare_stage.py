from kfp import dsl

from components._images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def prepare_stage(work_uri: str, stage: int, scratch: bool, enabled: bool) -> str:
    """Write stage ``stage``'s training config from the plan, growing the previous stage's model into
    its initialisation first (``scratch``: the same size from scratch instead). Returns the config URI,
    or "" (nothing to train) when the plan has fewer stages or ``enabled`` is false."""
    from seedbed.growth.series import prepare_stage as run

    return run(work_uri, stage, scratch=scratch, enabled=enabled)
