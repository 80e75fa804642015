"""``staged-growth``: train a model series by growth (SPEC §4); every stage is a released model.

    tokenize ── plan ─┬─ stage 1: config → train ── stage 2: grow+config → train ── … ── stage 4 ─┐
                      └─ baselines (optional): size i from scratch on T_i tokens ──────────────────┴─ report

The DAG has ``MAX_STAGES`` stage slots (compile-time, default 4 = the paper's 1B→8B); a series
with fewer stages leaves the rest empty (``prepare_stage`` returns "" and the launcher trains
nothing), so one compiled pipeline serves every series length without conditions on task outputs
(kfp 2.17's local runner mishandles those, SPEC §6). Each stage trains through the same launcher
as ``train-lm`` (a TrainJob on a cluster, torchrun locally), writes its HF model under
``work_uri/stage-i/model`` and is idempotent: a finished stage is never retrained, an interrupted
one resumes from its last complete checkpoint when the pipeline is run again.
"""

import os

from kfp import dsl

from components.plan_growth import plan_growth
from components.prepare_stage import prepare_stage
from components.series_report import series_report
from components._images import TRAIN_IMAGE
from pipelines._common import PLATFORM, cluster_settings
from pipelines._tasks import tokenize_task, train_task

MAX_STAGES = int(os.environ.get("SEEDBED_MAX_STAGES", "4"))


def growth_dag(
    tokens_uri, work_uri, series, run_settings, tokens_per_param, tokens_csv, lr, fixed_data, basis, width, depth,
    scratch_baselines, launch: dict,
):
    """Add the plan → stages (→ baselines) → report tasks to the pipeline being defined; returns
    (the MAX_STAGES stage training tasks, whose outputs are the stage run URIs or "", the report task).
    ``launch``: where every stage trains (``train_task``'s). Shared by staged-growth and curate-and-grow."""
    plan = cluster_settings(plan_growth(
        tokens_uri=tokens_uri, work_uri=work_uri, series_csv=series, tokens_csv=tokens_csv,
        tokens_per_param=tokens_per_param, lr=lr, fixed_data=fixed_data, basis=basis, width=width, depth=depth,
        settings_json=run_settings,
    ), cpu="1", memory="2G").set_display_name("plan series")

    prev, stages, runs = plan, [], []
    for i in range(1, MAX_STAGES + 1):
        cfg = cluster_settings(prepare_stage(work_uri=work_uri, stage=i, scratch=False, enabled=True),
                               cpu="4", memory="32G").set_display_name(f"stage {i}: grow + config").after(prev)
        prev = train_task(cfg.output, f"stage {i}: train", launch)
        stages.append(prev)
        base_cfg = cluster_settings(prepare_stage(work_uri=work_uri, stage=i, scratch=True, enabled=scratch_baselines),
                                    cpu="1", memory="2G").set_display_name(f"baseline {i}: config").after(plan)
        runs += [prev, train_task(base_cfg.output, f"baseline {i}: train from scratch", launch)]
    report = cluster_settings(series_report(work_uri=work_uri), cpu="1", memory="4G").set_display_name("series report")
    return stages, report.after(*runs)


@dsl.pipeline(
    name="staged-growth",
    description="Train a model series by staged growth (bert2BERT-style width/depth operators): train the "
    "smallest, grow, continue; the series costs what its largest model alone costs.",
)
def staged_growth(
    work_uri: str,
    domains_json: str,
    series: str = "1b,2b,4b,8b",
    run_settings: str = "{}",
    tokens_per_param: float = 40.0,
    tokens_csv: str = "",
    lr: str = "preset",
    fixed_data: bool = False,
    basis: str = "auto",
    width: str = "zero",
    depth: str = "identity",
    scratch_baselines: bool = False,
    tokenizer: str = "train",
    vocab_size: int = 50304,
    valid_fraction: float = 0.01,
    mode: str = "cluster",
    image: str = TRAIN_IMAGE,
    runtime: str = "torch-distributed",
    runtime_kind: str = "TrainingRuntime",
    nodes: int = 1,
    procs_per_node: int = 8,
    gpus_per_node: int = 8,
    cpu_per_node: str = "",
    memory_per_node: str = "",
    shm_size: str = "64Gi",
    node_selector_json: str = PLATFORM.gpu_node_selector_json,
    tolerations_json: str = PLATFORM.gpu_tolerations_json,
    train_timeout_s: int = 0,
):
    """Train a growth series.

    Args:
        series: comma-separated presets, smallest first (e.g. "tiny-64,tiny-128,tiny-256").
        run_settings: JSON of TrainConfig fields shared by every stage (mixture, upsample, seq_len,
            global_batch_tokens, micro_batch_size, warmup_steps, zero_stage, ...); the plan sets
            preset, total_tokens and lr per stage.
        tokens_per_param: T_i = tokens_per_param × X_i (40 = 2× Chinchilla) unless tokens_csv gives T_i.
        lr: "preset" (1.5e-3 for 1B … 3e-4 for 8B), one number for every stage, or one per stage.
        fixed_data: the series sees at most T_n unique tokens; later stages repeat data.
        basis: parameter count X for FLOPs: auto | nominal | non_embedding | total.
        width / depth: growth operators (fpi | aki | zero; stack | interpolate | identity).
        scratch_baselines: also train each size from scratch on T_i tokens (same FLOPs as the
            series when stage i is released) for the report.
    """
    tok = tokenize_task(domains_json, work_uri, tokenizer, vocab_size, valid_fraction)
    launch = dict(mode=mode, image=image, runtime=runtime, runtime_kind=runtime_kind, nodes=nodes,
                  procs_per_node=procs_per_node, gpus_per_node=gpus_per_node, cpu_per_node=cpu_per_node,
                  memory_per_node=memory_per_node, shm_size=shm_size, node_selector_json=node_selector_json,
                  tolerations_json=tolerations_json, timeout_s=train_timeout_s)
    growth_dag(tokens_uri=tok.outputs["Output"], work_uri=work_uri, series=series, run_settings=run_settings,
               tokens_per_param=tokens_per_param, tokens_csv=tokens_csv, lr=lr, fixed_data=fixed_data, basis=basis,
               width=width, depth=depth, scratch_baselines=scratch_baselines, launch=launch)
