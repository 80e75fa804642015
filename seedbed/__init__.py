"""seedbed: pretraining-data curation, mixture fitting and staged growth.

The library holds all logic as plain functions and small classes; it never imports kfp.
Kubeflow components (``components/``) and pipelines (``pipelines/``) are thin layers on top.
"""

__version__ = "0.1.0"
