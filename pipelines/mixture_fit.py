"""``mixture-fit``: replace a guessed data mixture by a fitted one (SPEC §2, §3).

    tokenize ── plan sweep ── ParallelFor(proxy run) ── Collected ── results table ── fit laws ── optimal mixture
                                                                                     (additive,   + upsampling
                                                                                      joint; MRE)  schedule

Each proxy run is a small training run at a constant learning rate that records every domain's
held-out loss at several token counts; reruns skip finished runs (the trainer's summary.json).
The ``schedule`` artifact (``mixture.json``) is a TrainConfig fragment — ``mixture`` and
``upsample`` — that ``train-lm``'s ``run_settings`` and the staged-growth stages take as is.
kfp.local note (SPEC §6): inside the ParallelFor only the loop item and pipeline parameters are
read; each item names its run and the run reads the design from ``work_uri/sweep.json``.
"""

import os

from kfp import dsl

from components._images import TRAIN_IMAGE
from components.collect_sweep import collect_sweep
from components.fit_mixture import fit_mixture
from components.optimize_mixture import optimize_mixture
from components.plan_sweep import plan_sweep
from components.sweep_run import sweep_run
from pipelines._common import PLATFORM, cluster_settings
from pipelines._tasks import tokenize_task

#: proxy runs trained at once on a cluster (compile-time: KFP needs a constant here)
SWEEP_PARALLELISM = int(os.environ.get("SEEDBED_SWEEP_PARALLELISM", "8"))


def mixture_dag(
    tokens_uri, work_uri, presets, tokens, heldout_presets, heldout_tokens, sweep_domains, n_mixtures, min_weight,
    eval_points, run_settings, seed, targets, optimize_target, optimize_preset, optimize_tokens, max_repeats,
    upsample_domains, upsample_fraction, launch: dict,
):
    """Add the sweep → fit → optimum tasks to the pipeline being defined; returns the optimize task
    (its output: ``mixture.json``'s URI). ``launch``: where the proxy runs train, as sweep_run takes it
    (mode, image, runtime, runtime_kind, nodes, procs_per_node, gpus_per_node, node_selector_json,
    tolerations_json). Shared by mixture-fit and curate-and-grow."""
    plan = cluster_settings(plan_sweep(
        tokens_uri=tokens_uri, work_uri=work_uri, presets_csv=presets, tokens_csv=tokens,
        heldout_presets_csv=heldout_presets, heldout_tokens_csv=heldout_tokens, domains_csv=sweep_domains,
        n_mixtures=n_mixtures, min_weight=min_weight, eval_points=eval_points, settings_json=run_settings, seed=seed,
    ), cpu="1", memory="2G").set_display_name("plan sweep")
    with dsl.ParallelFor(plan.output, parallelism=SWEEP_PARALLELISM) as item:
        run = cluster_settings(sweep_run(item=item, **launch), cpu="2", memory="8G",
                               timeout_s=0).set_display_name("proxy run")
    table = cluster_settings(collect_sweep(work_uri=work_uri, run_uris=dsl.Collected(run.output)),
                             cpu="1", memory="4G").set_display_name("results table")
    fit = cluster_settings(fit_mixture(work_uri=work_uri, table_uri=table.outputs["Output"], targets=targets),
                           cpu="2", memory="4G").set_display_name("fit mixture laws")
    return cluster_settings(optimize_mixture(
        work_uri=work_uri, fits_uri=fit.outputs["Output"], target=optimize_target, preset=optimize_preset,
        n_tokens=optimize_tokens, min_weight=min_weight, max_repeats=max_repeats,
        upsample_domains=upsample_domains, upsample_fraction=upsample_fraction,
    ), cpu="1", memory="2G").set_display_name("optimal mixture + schedule")


@dsl.pipeline(
    name="mixture-fit",
    description="Proxy sweep over data mixtures, additive/joint mixture-law fits (SPEC §2), and the optimal "
    "mixture with an end-of-training upsampling schedule (SPEC §3).",
)
def mixture_fit(
    work_uri: str,
    domains_json: str,
    presets: str = "tiny-64,tiny-128",
    tokens: str = "300000,300000",
    heldout_presets: str = "tiny-256",
    heldout_tokens: str = "300000",
    sweep_domains: str = "",
    n_mixtures: int = 0,
    min_weight: float = 0.1,
    eval_points: int = 5,
    run_settings: str = '{"seq_len": 128, "global_batch_tokens": 4096, "micro_batch_size": 16, "warmup_steps": 5}',
    seed: int = 0,
    targets: str = "mean",
    optimize_target: str = "mean",
    optimize_preset: str = "tiny-256",
    optimize_tokens: int = 1_000_000,
    max_repeats: float = 4.0,
    upsample_domains: str = "",
    upsample_fraction: float = 0.15,
    tokenizer: str = "train",
    vocab_size: int = 4096,
    valid_fraction: float = 0.02,
    mode: str = "cluster",
    image: str = TRAIN_IMAGE,
    runtime: str = "torch-distributed",
    runtime_kind: str = "TrainingRuntime",
    nodes: int = 1,
    procs_per_node: int = 1,
    gpus_per_node: int = 1,
    node_selector_json: str = PLATFORM.gpu_node_selector_json,
    tolerations_json: str = PLATFORM.gpu_tolerations_json,
):
    """Fit the data mixture.

    Args:
        presets / tokens: the fit's model sizes and their token budgets (comma-separated, paired).
        heldout_presets / heldout_tokens: larger runs on unseen mixtures, used only to validate the fit.
        sweep_domains: domains to mix ("" = every tokenized domain).
        targets: comma-separated fit targets: a domain name, "mean", or several.
        optimize_target: the target whose predicted loss h* minimises; optimize_preset / optimize_tokens: (N, D).
        max_repeats: repetition cap per domain (h_i·D ≤ max_repeats × its unique tokens).
        upsample_domains: domains the end-of-training window upweights ("" = those h* weights most).
    """
    tok = tokenize_task(domains_json, work_uri, tokenizer, vocab_size, valid_fraction)
    launch = dict(mode=mode, image=image, runtime=runtime, runtime_kind=runtime_kind, nodes=nodes,
                  procs_per_node=procs_per_node, gpus_per_node=gpus_per_node, node_selector_json=node_selector_json,
                  tolerations_json=tolerations_json)
    mixture_dag(
        tokens_uri=tok.outputs["Output"], work_uri=work_uri, presets=presets, tokens=tokens,
        heldout_presets=heldout_presets, heldout_tokens=heldout_tokens, sweep_domains=sweep_domains,
        n_mixtures=n_mixtures, min_weight=min_weight, eval_points=eval_points, run_settings=run_settings, seed=seed,
        targets=targets, optimize_target=optimize_target, optimize_preset=optimize_preset,
        optimize_tokens=optimize_tokens, max_repeats=max_repeats, upsample_domains=upsample_domains,
        upsample_fraction=upsample_fraction, launch=launch,
    )
