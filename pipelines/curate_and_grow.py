"""``curate-and-grow``: seedbed's main job, one DAG from a pool and target benchmarks to an
evaluated model series.

    BETR selection ── + domain ── tokenize ── mixture sweep ── fit ── h* + upsampling ─┐
    (work_uri/…)      "betr"      (mixture/)  (ParallelFor)                           │
                                                                                        │
    staged growth on h* (growth/): plan ── stage 1 ── grow ── stage 2 … ── series report┤
                                   evaluate every released model (growth/eval-<i>) ─────┴─ report (summary/)

Every stage is the same task graph as its own pipeline (``betr_dag``, ``mixture_dag``,
``growth_dag``), so the parts behave, resume and are documented the same way; the growth
stages read the mixture stage's token dataset. BETR writes at the top of ``work_uri`` (its
filter loop may read only pipeline parameters under kfp.local, SPEC §6); the mixture fit under
``mixture/``, the series under ``growth/``, the final report under ``summary/``. h* is computed
for ``optimize_preset`` at ``optimize_tokens`` (``seedbed run curate-and-grow`` sets them to the
series' largest model and its token target). ``seedbed run curate-and-grow --config FILE``
validates a whole config (``seedbed.job.config``) before any task starts.
"""

from kfp import dsl

from components._images import TRAIN_IMAGE
from components.add_domain import add_domain
from components.apply_mixture import apply_mixture
from components.job_paths import job_path
from components.job_report import job_report
from pipelines._common import PLATFORM, cluster_settings
from pipelines._tasks import evaluate_task, tokenize_task
from pipelines.betr_select import betr_dag
from pipelines.mixture_fit import mixture_dag
from pipelines.staged_growth import growth_dag


@dsl.pipeline(
    name="curate-and-grow",
    description="BETR selection → mixture-law fit with the selected set as a domain → staged-growth model series "
    "trained on the fitted mixture with end-of-training upsampling → evaluation → one report.",
)
def curate_and_grow(
    work_uri: str,
    pool_uris: str,
    benchmarks_uri: str,
    domains_json: str,
    betr_domain: str = "betr",
    # BETR (SPEC §1)
    target_set: str = "core",
    target_mode: str = "aware",
    per_benchmark: int = 500,
    sample_size: int = 100_000,
    heldout_size: int = 100_000,
    seed: int = 0,
    heldout_seed: int = 1,
    embed_model: str = "default",
    embed_batch_size: int = 64,
    embed_max_length: int = 256,
    embed_device: str = "auto",
    embed_dtype: str = "auto",
    target_query_prefix: str = "",
    top_k: int = 256,
    aggregation: str = "max",
    positive_pct: float = 10.0,
    fasttext_params: str = "{}",
    heldout_frac: float = 0.1,
    keep_rates: str = "3,10,30",
    keep_rate: float = 10.0,
    docs_per_shard: int = 100_000,
    make_report: bool = True,
    # tokens
    tokenizer: str = "train",
    vocab_size: int = 50304,
    valid_fraction: float = 0.01,
    # mixture fit (SPEC §2, §3)
    sweep_presets: str = "tiny-64,tiny-128",
    sweep_tokens: str = "300000,300000",
    sweep_heldout_presets: str = "tiny-256",
    sweep_heldout_tokens: str = "300000",
    sweep_domains: str = "",
    n_mixtures: int = 0,
    min_weight: float = 0.1,
    eval_points: int = 5,
    sweep_settings: str = '{"seq_len": 128, "global_batch_tokens": 4096, "micro_batch_size": 16, "warmup_steps": 5}',
    fit_targets: str = "mean",
    optimize_target: str = "mean",
    optimize_preset: str = "8b",
    optimize_tokens: int = 320_000_000_000,
    max_repeats: float = 4.0,
    upsample_domains: str = "",
    upsample_fraction: float = 0.15,
    # staged growth (SPEC §4)
    series: str = "1b,2b,4b,8b",
    train_settings: str = "{}",
    tokens_per_param: float = 40.0,
    series_tokens: str = "",
    lr: str = "preset",
    fixed_data: bool = False,
    basis: str = "auto",
    width: str = "zero",
    depth: str = "identity",
    scratch_baselines: bool = False,
    # where training runs
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
    # evaluation
    eval_tasks: str = "arc_easy,arc_challenge,openbookqa,sciq,piqa,hellaswag",
    eval_limit: int = 500,
    eval_seq_len: int = 0,
    eval_batch_size: int = 8,
    eval_device: str = "auto",
):
    """Curate the data, fit its mixture, grow the model series, evaluate it, report.

    Args:
        domains_json: the domains mixed with the BETR selection (JSON object: name → corpus URI).
        betr_domain: the BETR-selected set's domain name in the mixture.
        sweep_*: the proxy sweep (mixture-fit's presets, tokens, heldout_presets, heldout_tokens, run_settings).
        fit_targets / optimize_target / optimize_preset / optimize_tokens: what the laws are fitted to and the
            (N, D) h* is for (normally the series' largest model and its token target).
        series / series_tokens / train_settings: the growth series (staged-growth's series, tokens_csv,
            run_settings without mixture/upsample: those come from the fit).
    """
    selected = betr_dag(
        work_uri=work_uri, pool_uris=pool_uris, benchmarks_uri=benchmarks_uri, target_set=target_set,
        target_mode=target_mode, per_benchmark=per_benchmark, sample_size=sample_size, heldout_size=heldout_size,
        seed=seed, heldout_seed=heldout_seed, embed_model=embed_model, embed_batch_size=embed_batch_size,
        embed_max_length=embed_max_length, embed_device=embed_device, embed_dtype=embed_dtype,
        target_query_prefix=target_query_prefix, top_k=top_k, aggregation=aggregation, positive_pct=positive_pct,
        fasttext_params=fasttext_params, heldout_frac=heldout_frac, keep_rates=keep_rates, keep_rate=keep_rate,
        docs_per_shard=docs_per_shard, make_report=make_report,
    )
    paths = {name: cluster_settings(job_path(work_uri=work_uri, name=name), cpu="0.5", memory="1G")
             .set_display_name(f"path: {name}") for name in ("filtered", "mixture", "growth")}
    paths["filtered"].after(selected)
    domains = cluster_settings(add_domain(domains_json=domains_json, name=betr_domain,
                                          corpus_uri=paths["filtered"].output), cpu="0.5", memory="1G"
                               ).set_display_name("domains + BETR selection")
    tok = tokenize_task(domains.output, paths["mixture"].output, tokenizer, vocab_size, valid_fraction)
    launch = dict(mode=mode, image=image, runtime=runtime, runtime_kind=runtime_kind, nodes=nodes,
                  procs_per_node=procs_per_node, gpus_per_node=gpus_per_node, node_selector_json=node_selector_json,
                  tolerations_json=tolerations_json)
    optimum = mixture_dag(
        tokens_uri=tok.outputs["Output"], work_uri=paths["mixture"].output, presets=sweep_presets, tokens=sweep_tokens,
        heldout_presets=sweep_heldout_presets, heldout_tokens=sweep_heldout_tokens, sweep_domains=sweep_domains,
        n_mixtures=n_mixtures, min_weight=min_weight, eval_points=eval_points, run_settings=sweep_settings, seed=seed,
        targets=fit_targets, optimize_target=optimize_target, optimize_preset=optimize_preset,
        optimize_tokens=optimize_tokens, max_repeats=max_repeats, upsample_domains=upsample_domains,
        upsample_fraction=upsample_fraction, launch=launch,
    )
    settings = cluster_settings(apply_mixture(settings_json=train_settings, mixture_uri=optimum.outputs["Output"]),
                                cpu="0.5", memory="1G").set_display_name("series settings + fitted mixture")
    stages, series_rep = growth_dag(
        tokens_uri=tok.outputs["Output"], work_uri=paths["growth"].output, series=series,
        run_settings=settings.output, tokens_per_param=tokens_per_param, tokens_csv=series_tokens, lr=lr,
        fixed_data=fixed_data, basis=basis, width=width, depth=depth, scratch_baselines=scratch_baselines,
        launch=dict(launch, cpu_per_node=cpu_per_node, memory_per_node=memory_per_node, shm_size=shm_size,
                    timeout_s=train_timeout_s),
    )
    evaluation = dict(benchmarks_uri=benchmarks_uri, tasks_csv=eval_tasks, seq_len=eval_seq_len, limit=eval_limit,
                      batch_size=eval_batch_size, device=eval_device)
    evals = [evaluate_task(stage.outputs["Output"], tok.outputs["Output"], paths["growth"].output, f"eval-{i}",
                           f"evaluate stage {i}", evaluation) for i, stage in enumerate(stages, 1)]
    cluster_settings(job_report(work_uri=work_uri, betr_domain=betr_domain), cpu="1", memory="4G") \
        .set_display_name("report").after(series_rep, *evals)
