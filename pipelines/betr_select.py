"""``betr-select``: benchmark-targeted data selection (SPEC §1) as a KFP pipeline.

    ingest pool ─┬─ sample ── embed(sample) ─┐
                 │                            ├─ score+label ── train fastText ── thresholds ─┐
    targets ─────┼─ embed(targets) ───────────┘                                               │
                 └─ plan shards ── ParallelFor(filter shard) ── Collected ── merge ── report ─┘

Every stage writes under ``work_uri/<stage>`` on the object store and is idempotent there, so
a rerun with the same ``work_uri`` resumes: finished stages and finished filter shards are
skipped by the library. KFP's own step cache is therefore switched off (a cache hit would
skip the library's checks; retrains must never be cache hits, SPEC §6).

kfp.local notes (SPEC §6, kfp 2.17.0): conditions only use pipeline parameters (``dsl.If`` on a
named output is silently skipped locally); the ParallelFor iterates over a list of strings
(dict items with field access are broken); list parameters are passed as comma-separated
strings (ints in lists arrive as floats); and inside the ParallelFor no upstream task output is
read, because kfp.local resolves each of them to the loop item: the filter's model and threshold
travel inside the loop items instead.
"""


import os

from kfp import dsl

from pipelines._common import cluster_settings as _cluster_settings

from components.embed import embed
from components.filter_shard import filter_shard
from components.ingest import ingest_corpus
from components.merge_filter import merge_filter
from components.plan_filter import plan_filter
from components.report import betr_report
from components.sample import sample_pool
from components.score import score_and_label
from components.targets import build_targets
from components.threshold import compute_thresholds
from components.train_classifier import train_classifier

#: Filter tasks run at once on a cluster (compile-time: KFP needs a constant here)
FILTER_PARALLELISM = int(os.environ.get("SEEDBED_FILTER_PARALLELISM", "16"))


def betr_dag(
    work_uri, pool_uris, benchmarks_uri, target_set, target_mode, per_benchmark, sample_size, heldout_size,
    seed, heldout_seed, embed_model, embed_batch_size, embed_max_length, embed_device, embed_dtype,
    target_query_prefix, top_k, aggregation, positive_pct, fasttext_params, heldout_frac, keep_rates,
    keep_rate, docs_per_shard, make_report,
):
    """Add the BETR tasks to the pipeline being defined; returns the merge task (its ``manifest``
    output and the filtered corpus at ``work_uri/filtered``). Shared by betr-select and curate-and-grow."""
    pool = _cluster_settings(
        ingest_corpus(sources=pool_uris, work_uri=work_uri, name="pool", docs_per_shard=docs_per_shard)
    ).set_display_name("ingest pool")
    targets = _cluster_settings(
        build_targets(
            benchmarks_uri=benchmarks_uri,
            work_uri=work_uri,
            name="targets",
            target_set=target_set,
            mode=target_mode,
            per_benchmark=per_benchmark,
            seed=seed,
        )
    ).set_display_name("targets")
    sample = _cluster_settings(
        sample_pool(pool_uri=pool.outputs["Output"], work_uri=work_uri, name="sample", n=sample_size, seed=seed)
    ).set_display_name("sample pool")

    def _embed(corpus_uri, name: str, prefix):
        return _cluster_settings(
            embed(
                corpus_uri=corpus_uri,
                work_uri=work_uri,
                name=name,
                model=embed_model,
                batch_size=embed_batch_size,
                max_length=embed_max_length,
                device=embed_device,
                dtype=embed_dtype,
                query_prefix=prefix,
            ),
            cpu="4",
            memory="16G",
            gpus=1,
        ).set_display_name(f"embed {name.split('-')[-1]}")

    target_emb = _embed(targets.outputs["Output"], "emb-targets", target_query_prefix)
    sample_emb = _embed(sample.outputs["Output"], "emb-sample", "")

    scored = _cluster_settings(
        score_and_label(
            target_emb_uri=target_emb.outputs["Output"],
            doc_emb_uri=sample_emb.outputs["Output"],
            doc_corpus_uri=sample.outputs["Output"],
            target_corpus_uri=targets.outputs["Output"],
            work_uri=work_uri,
            name="score",
            top_k=top_k,
            aggregation=aggregation,
            positive_pct=positive_pct,
            seed=seed,
            device=embed_device,
        ),
        memory="16G",
        gpus=1,
    ).set_display_name("score + label")
    clf = _cluster_settings(
        train_classifier(
            labels_uri=scored.outputs["Output"],
            work_uri=work_uri,
            name="classifier",
            fasttext_params=fasttext_params,
            heldout_frac=heldout_frac,
            seed=seed,
        )
    ).set_display_name("train fastText")
    thr = _cluster_settings(
        compute_thresholds(
            model_uri=clf.outputs["Output"],
            pool_uri=pool.outputs["Output"],
            exclude_corpus_uri=sample.outputs["Output"],
            work_uri=work_uri,
            name="thresholds",
            keep_rates=keep_rates,
            keep_rate=keep_rate,
            sample_size=heldout_size,
            seed=heldout_seed,
        )
    ).set_display_name("thresholds")
    shards = _cluster_settings(
        plan_filter(pool_uri=pool.outputs["Output"], model_uri=clf.outputs["Output"], threshold=thr.outputs["Output"])
    ).set_display_name("plan filter")
    # inside the loop only the loop item and pipeline parameters are read (kfp.local bug, see plan_filter)
    with dsl.ParallelFor(shards.output, parallelism=FILTER_PARALLELISM) as item:
        fs = _cluster_settings(
            filter_shard(item=item, work_uri=work_uri, name="filtered", keep_rate=keep_rate)
        ).set_display_name("filter shard")
    merged = _cluster_settings(
        merge_filter(
            shard_stats=dsl.Collected(fs.output),
            work_uri=work_uri,
            name="filtered",
            threshold=thr.outputs["Output"],
            keep_rate=keep_rate,
        )
    ).set_display_name("merge filter outputs")
    with dsl.If(make_report == True):  # noqa: E712 (a KFP condition, not a Python comparison)
        _cluster_settings(
            betr_report(
                score_summary=scored.outputs["summary"],
                top_matches=scored.outputs["top_matches"],
                classifier_metrics=clf.outputs["metrics_json"],
                thresholds=thr.outputs["thresholds"],
                filter_manifest=merged.outputs["manifest"],
                work_uri=work_uri,
                name="report",
            )
        ).set_display_name("report")
    return merged


@dsl.pipeline(
    name="betr-select",
    description="Benchmark-targeted ranking: embed targets and a pool sample, label the docs nearest "
    "to benchmark examples, train a fastText scorer, and filter the whole pool by it.",
)
def betr_select(
    work_uri: str,
    pool_uris: str,
    benchmarks_uri: str,
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
) -> dsl.Dataset:
    """Select the pool documents most like the target benchmarks.

    Args:
        work_uri: where every stage writes (local dir or s3://bucket/prefix); reruns resume here.
        pool_uris: comma-separated jsonl(.gz/.zst) files or prefixes, or one seedbed corpus prefix.
        benchmarks_uri: benchmark examples (a folder/prefix of *.jsonl.gz, or one file).
        target_set: a named target set (core, arc, science, gsm8k, ...) or comma-separated benchmarks.
        target_mode: "aware" (equal examples per benchmark) or "blind" (all examples).
        keep_rates: comma-separated token keep rates (%) to compute thresholds for.
        keep_rate: the keep rate (%) the filter applies; must be in (0, 100].
        heldout_seed: seed of the held-out threshold sample (differs from `seed`: other docs).
    """
    return betr_dag(**locals()).outputs["manifest"]
