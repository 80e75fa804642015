"""The container images every seedbed component runs in (built from ``images/``).

One place for the references, read at compile time: override with ``SEEDBED_IMAGE`` /
``SEEDBED_GPU_IMAGE`` to point compiled pipelines at your registry, e.g.
``SEEDBED_IMAGE=registry.example.com/ml/seedbed:0.1.0 seedbed compile``.
"""

import os

#: CPU image (images/seedbed/Dockerfile): library + CPU torch
BASE_IMAGE = os.environ.get("SEEDBED_IMAGE", "ghcr.io/seedbed/seedbed:0.1.0")
#: CUDA image (images/seedbed-cuda/Dockerfile): the same library on a CUDA torch
GPU_IMAGE = os.environ.get("SEEDBED_GPU_IMAGE", "ghcr.io/seedbed/seedbed-cuda:0.1.0")
