"""Data-mixture scaling laws (SPEC §2) and the end-of-training upsampling window (SPEC §3).

* :mod:`seedbed.mixture.laws` — the additive law (5+2k parameters) and the joint law (5+4k),
  vectorised prediction, named parameters and the log-space parametrisation the fit uses.
* :mod:`seedbed.mixture.fit` — loading and validating a loss table (the public layout:
  ``weight_<domain>…, model_size, n_tokens, <domain>_loss…``), Huber fits with random search +
  basin-hopping/L-BFGS-B, MRE on held-out rows, a predicted-vs-observed plot and a Table-2-style
  Markdown table.
* :mod:`seedbed.mixture.optimize` — the optimal mixture h* for a budget (N, D) under per-domain
  bounds and the data actually available, and the ``mixture``/``upsample`` dict that
  :class:`seedbed.train.config.TrainConfig` accepts.

The fitting modules are pure numpy/scipy (matplotlib only when plotting); no kfp. The proxy
sweep that produces the loss table lives next to them (``sweep``, ``stages``).
"""

from seedbed.mixture.laws import LAWS, AdditiveParams, JointParams, n_params, predict

__all__ = ["LAWS", "AdditiveParams", "JointParams", "n_params", "predict"]
