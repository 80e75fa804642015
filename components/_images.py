"""The container images seedbed's components run in: the one place that names them.

Three images, each built from ``images/<name>/Dockerfile`` with the repository root as context:

* ``seedbed``: CPU torch, the library, fastText and the KFP runtime; every CPU task.
* ``seedbed-embed``: CUDA torch, sentence-transformers and the packaged all-MiniLM-L6-v2;
  the embedding and similarity-scoring tasks.
* ``seedbed-train``: CUDA torch, DeepSpeed with prebuilt ops, torchrun, OpenMPI + mpi4py +
  OpenSSH; the training launch/sweep/evaluation tasks and the TrainJob pods they start.

References are ``<registry>/<name>:<tag>``, read at compile time and baked into the compiled
pipeline YAML. ``SEEDBED_REGISTRY`` and ``SEEDBED_IMAGE_TAG`` change every reference;
``SEEDBED_IMAGE``, ``SEEDBED_EMBED_IMAGE`` and ``SEEDBED_TRAIN_IMAGE`` replace one whole
reference. ``make images`` builds and pushes exactly what ``python -m components._images
--list`` prints, so compile with the same variables you built with::

    make images REGISTRY=registry.example.com/ml TAG=0.1.0
    SEEDBED_REGISTRY=registry.example.com/ml SEEDBED_IMAGE_TAG=0.1.0 seedbed compile --out dist
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

DEFAULT_REGISTRY = "ghcr.io/seedbed"
#: the project version (pyproject.toml; tests/test_images.py checks that they agree)
DEFAULT_TAG = "0.1.0"


@dataclass(frozen=True)
class Image:
    name: str
    #: the variable that overrides the whole reference
    env: str
    purpose: str

    @property
    def dockerfile(self) -> str:
        return f"images/{self.name}/Dockerfile"

    @property
    def ref(self) -> str:
        registry = os.environ.get("SEEDBED_REGISTRY") or DEFAULT_REGISTRY
        tag = os.environ.get("SEEDBED_IMAGE_TAG") or DEFAULT_TAG
        return os.environ.get(self.env) or f"{registry.rstrip('/')}/{self.name}:{tag}"


IMAGES = {
    img.name: img
    for img in (
        Image("seedbed", "SEEDBED_IMAGE", "CPU tasks: library, CPU torch, fastText, KFP runtime"),
        Image("seedbed-embed", "SEEDBED_EMBED_IMAGE", "embedding and scoring: CUDA torch, sentence-transformers"),
        Image("seedbed-train", "SEEDBED_TRAIN_IMAGE", "training: CUDA torch, DeepSpeed ops, torchrun, OpenMPI"),
    )
}

BASE_IMAGE = IMAGES["seedbed"].ref
EMBED_IMAGE = IMAGES["seedbed-embed"].ref
TRAIN_IMAGE = IMAGES["seedbed-train"].ref


def main(argv: list[str]) -> int:
    """``--list``: one ``<name> <dockerfile> <reference>`` line per image;
    ``--ref NAME`` / ``--dockerfile NAME``: one field (what the Makefile reads)."""
    if argv == ["--list"]:
        for img in IMAGES.values():
            print(img.name, img.dockerfile, img.ref)
        return 0
    if len(argv) == 2 and argv[0] in ("--ref", "--dockerfile") and argv[1] in IMAGES:
        print(getattr(IMAGES[argv[1]], argv[0][2:]))
        return 0
    print(f"usage: python -m components._images --list | --ref NAME | --dockerfile NAME "
          f"(NAME: {', '.join(IMAGES)})", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
