"""BETR stage 8: a human-readable report of a selection run.

:func:`build_report` reads the JSON outputs of the earlier stages (formats in
``docs/stage-contracts.md``; any of them may be None, and its section is then left out) and
writes under ``out_prefix``:

* ``report.md``: Markdown for the Kubeflow UI (a Markdown visualization artifact). Plots are
  embedded as base64 ``data:image/png`` URIs, so the one file is self-contained.
* ``report.html``: the same content as a simple standalone HTML page (images embedded too).
* the plots as PNG files: ``score_hist.png`` (held-out score sample with one threshold line per
  keep rate), ``keep_rates.png`` (documents vs tokens kept per keep rate, and what the filter
  kept of the full pool), ``by_source.png`` (share of the input vs share of the kept documents
  per ``source``), ``metrics.png`` (classifier metrics).

Sections, in order: Summary; Targets and scoring (``score.json``); Classifier (``metrics.json``);
Score distribution and thresholds (``thresholds.json``); Filter (the filter ``manifest.json``:
totals and per-source keep rates); Best-matching documents (``top_matches.json``: a few
targets, one per benchmark first, with their best pool matches; texts truncated).

``thresholds.json``'s kept percentages are taken from ``docs_kept_pct``/``tokens_kept_pct``
when present, else computed from ``docs_kept``/``tokens_kept`` (counts out of
``sample_docs``/``sample_tokens`` when above 1, else fractions). Keep-rate keys are matched
numerically (``3``, ``3.0`` and ``"3"`` are one rate). The report holds no
timestamp: the same inputs give byte-identical files. Plots use matplotlib's Agg canvas
directly (no pyplot state, safe in threads and headless pods).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from seedbed import corpus, store
from seedbed.reporting import Block, md_escape, to_html, to_markdown

__all__ = ["ReportError", "build_report", "fmt_num", "fmt_pct", "md_escape"]


_MAX_CHART_SOURCES = 16


class ReportError(ValueError):
    """A report input is not in the expected format."""


# ----------------------------------------------------------------------------- formatting


def fmt_num(x: Any, digits: int = 4) -> str:
    """Numbers as the report prints them: ints with thousands separators, floats to ``digits``
    decimals without trailing zeros (``10.0``, ``0.6019``)."""
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x != x:  # NaN
            return "nan"
        if abs(x) >= 1e5:
            return f"{x:,.0f}"
        out = f"{x:.{digits}f}".rstrip("0")
        return out + "0" if out.endswith(".") else out
    return str(x)


def fmt_pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}%"


def _truncate(text: Any, n: int) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= n else s[: n - 1].rstrip() + "…"


# ----------------------------------------------------------------------------- plots


def _figure(w: float = 7.0, h: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _plot_score_hist(scores: list[float], thresholds: dict[str, float]) -> bytes:
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.hist(scores, bins=50, color="#4C72B0", alpha=0.85)
    colors = ["#C44E52", "#DD8452", "#55A868", "#8172B3", "#937860", "#DA8BC3"]
    for i, (rate, t) in enumerate(sorted(thresholds.items(), key=lambda kv: float(kv[0]))):
        ax.axvline(t, color=colors[i % len(colors)], linestyle="--", linewidth=1.5,
                   label=f"keep {rate}% tokens: t={t:.3f}")
    ax.set_xlabel("classifier score")
    ax.set_ylabel("documents (held-out sample)")
    ax.set_title(f"Score distribution (n={len(scores):,})")
    if thresholds:
        ax.legend(fontsize=8)
    return _png(fig)


def _plot_keep_rates(labels: list[str], docs_pct: list[float], tokens_pct: list[float]) -> bytes:
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    x = range(len(labels))
    w = 0.38
    b1 = ax.bar([i - w / 2 for i in x], docs_pct, w, label="documents kept", color="#4C72B0")
    b2 = ax.bar([i + w / 2 for i in x], tokens_pct, w, label="tokens kept", color="#DD8452")
    ax.bar_label(b1, fmt="%.1f", fontsize=8)
    ax.bar_label(b2, fmt="%.1f", fontsize=8)
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("% kept")
    ax.set_title("Keep rates: documents vs tokens")
    ax.legend(fontsize=8)
    return _png(fig)


def _plot_by_source(sources: list[str], in_share: list[float], kept_share: list[float]) -> bytes:
    fig = _figure(7.0, max(2.4, 0.45 * len(sources) + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    y = list(range(len(sources)))
    h = 0.38
    ax.barh([i - h / 2 for i in y], in_share, h, label="share of input docs", color="#8C8C8C")
    ax.barh([i + h / 2 for i in y], kept_share, h, label="share of kept docs", color="#55A868")
    ax.set_yticks(y)
    ax.set_yticklabels(sources, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("% of documents")
    ax.set_title("What the selection kept, by source")
    ax.legend(fontsize=8)
    return _png(fig)


def _plot_metrics(metrics: dict[str, float]) -> bytes:
    fig = _figure(5.5, 3.0)
    ax = fig.add_subplot(1, 1, 1)
    names = list(metrics)
    bars = ax.bar(names, [metrics[k] for k in names], color="#4C72B0")
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("Classifier on held-out labels")
    return _png(fig)


# ----------------------------------------------------------------------------- inputs


def _read(uri: str | None):
    if uri is None:
        return None
    return store.read_json(str(uri))


def _load_filter_meta(uri: str) -> dict:
    """The filter manifest's meta from the manifest file itself (any name, e.g. a KFP artifact
    path such as ``.../manifest/data``) or from the filter output prefix holding ``manifest.json``."""
    uri = str(uri)
    is_file = store.exists(uri) and not (not store.is_s3(uri) and Path(uri).is_dir())
    d = store.read_json(uri if is_file else store.join(uri, corpus.MANIFEST_NAME))
    if not isinstance(d, dict) or not isinstance(d.get("meta"), dict):
        raise ReportError(f"filter manifest {uri}: not a seedbed manifest (no 'meta' object)")
    return d["meta"]


def _require(obj, typ, what: str):
    if not isinstance(obj, typ):
        raise ReportError(f"{what}: expected a JSON {typ.__name__}, got {type(obj).__name__}")
    return obj


def _rate_key(p) -> str:
    """One spelling per keep rate, whatever the JSON had: 3, 3.0, "3" and "3.0" → "3"; 2.5 → "2.5"."""
    try:
        f = float(p)
    except (TypeError, ValueError):
        return str(p)
    return str(int(f)) if f.is_integer() else repr(f)


def _kept_pct(value, total) -> float | None:
    """A kept amount as a percentage: a count out of ``total`` when above 1, else a fraction."""
    if value is None:
        return None
    value = float(value)
    if value > 1 and total:
        return 100.0 * value / float(total)
    if value <= 1:
        return 100.0 * value
    return None


def _pct(a, b) -> float | None:
    return None if not b else 100.0 * float(a or 0) / float(b)


# ----------------------------------------------------------------------------- the stage


def build_report(
    out_prefix: str,
    *,
    score_json: str | None = None,
    top_matches_json: str | None = None,
    metrics_json: str | None = None,
    thresholds_json: str | None = None,
    filter_manifest: str | None = None,
    title: str = "BETR selection report",
    max_targets: int = 5,
    max_matches: int = 3,
    text_chars: int = 240,
) -> dict:
    """Write ``report.md``, ``report.html`` and the PNG plots under ``out_prefix``.

    ``filter_manifest`` is the filter's manifest file (any name) or its output prefix. Returns
    ``{"markdown_uri", "html_uri", "summary"}``; ``summary`` holds the headline numbers,
    the sections written and the PNG URIs. ``report.md`` is written last.
    """
    score = _read(score_json)
    top = _read(top_matches_json)
    metrics = _read(metrics_json)
    thr = _read(thresholds_json)
    fmeta = _load_filter_meta(filter_manifest) if filter_manifest is not None else None
    if score is not None:
        _require(score, dict, f"score.json {score_json}")
    if top is not None:
        _require(top, list, f"top_matches.json {top_matches_json}")
    if metrics is not None:
        _require(metrics, dict, f"metrics.json {metrics_json}")
    if thr is not None:
        _require(thr, dict, f"thresholds.json {thresholds_json}")

    summary: dict[str, Any] = {"sections": [], "pngs": {}}
    blocks: list[Block] = [Block("h1", title)]
    pngs: dict[str, bytes] = {}

    # ---- summary table
    rows: list[list] = []
    if score is not None:
        summary.update(n_docs=score.get("n_docs"), n_targets=score.get("n_targets"), positive_pct=score.get("positive_pct"))
        rows += [["documents scored (sample)", fmt_num(score.get("n_docs"))],
                 ["target examples", fmt_num(score.get("n_targets"))],
                 ["positives (top % by score)", fmt_num(score.get("positive_pct"))]]
    if metrics is not None:
        summary.update(accuracy=metrics.get("accuracy"), f1=metrics.get("f1"))
        rows += [["classifier accuracy (held out)", fmt_num(metrics.get("accuracy"))],
                 ["classifier F1 (held out)", fmt_num(metrics.get("f1"))]]
    totals = (fmeta or {}).get("totals", {}) or {}
    if fmeta is not None:
        docs_pct = _pct(totals.get("docs_kept"), totals.get("docs_in"))
        tok_pct = _pct(totals.get("tokens_kept"), totals.get("tokens_in"))
        summary["filter"] = {
            "keep_rate": fmeta.get("keep_rate"), "threshold": fmeta.get("threshold"),
            "docs_in": totals.get("docs_in"), "docs_kept": totals.get("docs_kept"),
            "tokens_in": totals.get("tokens_in"), "tokens_kept": totals.get("tokens_kept"),
            "docs_kept_pct": docs_pct, "tokens_kept_pct": tok_pct,
        }
        rows += [["filter keep rate (% tokens, target)", fmt_num(fmeta.get("keep_rate"))],
                 ["filter threshold", fmt_num(fmeta.get("threshold"))],
                 ["documents kept / in", f"{fmt_num(totals.get('docs_kept'))} / {fmt_num(totals.get('docs_in'))} ({fmt_pct(docs_pct)})"],
                 ["tokens kept / in", f"{fmt_num(totals.get('tokens_kept'))} / {fmt_num(totals.get('tokens_in'))} ({fmt_pct(tok_pct)})"]]
    blocks.append(Block("h2", "Summary"))
    if rows:
        blocks.append(Block("table", headers=["quantity", "value"], rows=rows))
    else:
        blocks.append(Block("p", "No stage outputs were given."))
    inputs = {"score.json": score_json, "top_matches.json": top_matches_json, "metrics.json": metrics_json,
              "thresholds.json": thresholds_json, "filter manifest": filter_manifest}
    blocks.append(Block("p", "Inputs: " + "; ".join(f"{k} = {v}" for k, v in inputs.items() if v is not None) + "."
                         if any(v is not None for v in inputs.values()) else "Inputs: none."))
    summary["sections"].append("summary")

    # ---- scoring
    if score is not None:
        blocks.append(Block("h2", "Targets and scoring"))
        agg = score.get("aggregation", "max")
        how = ("its best rank over all examples (max aggregation)" if agg == "max"
               else f"its ranks aggregated over all examples ({agg} aggregation)")
        blocks.append(Block("p", "Every target example ranks the sampled documents by cosine similarity; a document's "
                                  f"score is {how}. The top {fmt_num(score.get('positive_pct'))}% are the positive "
                                  "labels, negatives are downsampled to balance."))
        keys = ["n_docs", "n_targets", "top_k", "aggregation", "positive_pct", "n_positive", "n_negative", "n_negative_kept"]
        keys += [k for k in score if k not in keys and k != "params" and not isinstance(score[k], (dict, list))]
        blocks.append(Block("table", headers=["field", "value"], rows=[[k, fmt_num(score.get(k))] for k in keys if k in score]))
        summary["sections"].append("scoring")

    # ---- classifier
    if metrics is not None:
        blocks.append(Block("h2", "Classifier"))
        keys = ["accuracy", "precision", "recall", "f1", "n_train", "n_heldout", "threads"]
        keys += [k for k in metrics if k not in keys and k != "params" and not isinstance(metrics[k], (dict, list))]
        blocks.append(Block("table", headers=["metric", "value"], rows=[[k, fmt_num(metrics.get(k))] for k in keys if k in metrics]))
        plotted = {k: float(metrics[k]) for k in ("accuracy", "precision", "recall", "f1")
                   if isinstance(metrics.get(k), (int, float)) and not isinstance(metrics.get(k), bool)}
        if plotted:
            pngs["metrics.png"] = _plot_metrics(plotted)
            blocks.append(Block("img", "classifier metrics", png=pngs["metrics.png"], name="metrics.png"))
        summary["sections"].append("classifier")

    # ---- thresholds
    keep_labels: list[str] = []
    keep_docs: list[float] = []
    keep_toks: list[float] = []
    if thr is not None:
        blocks.append(Block("h2", "Score distribution and thresholds"))
        thresholds = {_rate_key(k): float(v) for k, v in (thr.get("thresholds") or {}).items() if v is not None}
        rates = [_rate_key(r) for r in (thr.get("keep_rates") or sorted(thresholds, key=float))]
        per_rate = {f: {_rate_key(k): v for k, v in (thr.get(f) or {}).items()}
                    for f in ("docs_kept", "tokens_kept", "docs_kept_pct", "tokens_kept_pct")}
        sample = [float(s) for s in (thr.get("score_sample") or [])]
        blocks.append(Block("p", f"Thresholds keep a fixed share of tokens, chosen on a held-out sample of "
                                  f"{fmt_num(thr.get('sample_docs'))} documents ({fmt_num(thr.get('sample_tokens'))} tokens)."))
        trows = []
        summary["thresholds"] = {}
        for k in rates:
            dk, tk = per_rate["docs_kept"].get(k), per_rate["tokens_kept"].get(k)
            dp = per_rate["docs_kept_pct"].get(k)
            tp = per_rate["tokens_kept_pct"].get(k)
            dp = float(dp) if dp is not None else _kept_pct(dk, thr.get("sample_docs"))
            tp = float(tp) if tp is not None else _kept_pct(tk, thr.get("sample_tokens"))
            trows.append([f"{k}%", fmt_num(thresholds.get(k)), fmt_num(dk), fmt_pct(dp), fmt_num(tk), fmt_pct(tp)])
            summary["thresholds"][k] = {"threshold": thresholds.get(k), "docs_kept_pct": dp, "tokens_kept_pct": tp}
            if dp is not None and tp is not None:
                keep_labels.append(f"sample @ {k}%")
                keep_docs.append(dp)
                keep_toks.append(tp)
        blocks.append(Block("table", headers=["keep rate (tokens)", "threshold", "docs kept", "docs kept %",
                                               "tokens kept", "tokens kept %"], rows=trows))
        if sample:
            pngs["score_hist.png"] = _plot_score_hist(sample, thresholds)
            blocks.append(Block("img", "score histogram with thresholds", png=pngs["score_hist.png"], name="score_hist.png"))
        summary["sections"].append("thresholds")

    # ---- filter
    if fmeta is not None:
        blocks.append(Block("h2", "Filter"))
        f = summary["filter"]
        if f["docs_kept_pct"] is not None and f["tokens_kept_pct"] is not None:
            keep_labels.append(f"full pool @ {fmt_num(fmeta.get('keep_rate'))}%")
            keep_docs.append(f["docs_kept_pct"])
            keep_toks.append(f["tokens_kept_pct"])
        trows = [[k, fmt_num(v)] for k, v in totals.items()]
        blocks.append(Block("p", f"The classifier scored every pool document; documents with score ≥ "
                                  f"{fmt_num(fmeta.get('threshold'))} were kept."))
        if trows:
            blocks.append(Block("table", headers=["total", "value"], rows=trows))
        by_source = fmeta.get("by_source") or {}
        if by_source:
            total_in = sum(int(v.get("docs_in", 0)) for v in by_source.values())
            total_kept = sum(int(v.get("docs_kept", 0)) for v in by_source.values())
            order = sorted(by_source, key=lambda s: (-int(by_source[s].get("docs_in", 0)), s))
            srows, in_share, kept_share = [], [], []
            summary["by_source"] = {}
            for s in order:
                di, dk = int(by_source[s].get("docs_in", 0)), int(by_source[s].get("docs_kept", 0))
                ish, ksh = _pct(di, total_in) or 0.0, _pct(dk, total_kept) or 0.0
                in_share.append(ish)
                kept_share.append(ksh)
                srows.append([s, fmt_num(di), fmt_num(dk), fmt_pct(_pct(dk, di)), fmt_pct(ish), fmt_pct(ksh)])
                summary["by_source"][s] = {"docs_in": di, "docs_kept": dk, "input_share_pct": ish, "kept_share_pct": ksh}
            blocks.append(Block("h3", "Kept documents by source"))
            blocks.append(Block("table", headers=["source", "docs in", "docs kept", "kept % of source",
                                                   "share of input", "share of kept"], rows=srows))
            names = [str(x) for x in order]
            if len(names) > _MAX_CHART_SOURCES:  # the table lists every source; the chart the largest
                k = _MAX_CHART_SOURCES - 1
                names = names[:k] + [f"(other {len(names) - k} sources)"]
                in_share = in_share[:k] + [sum(in_share[k:])]
                kept_share = kept_share[:k] + [sum(kept_share[k:])]
            pngs["by_source.png"] = _plot_by_source(names, in_share, kept_share)
            blocks.append(Block("img", "share of kept documents by source", png=pngs["by_source.png"], name="by_source.png"))
        summary["sections"].append("filter")

    if keep_labels:
        pngs["keep_rates.png"] = _plot_keep_rates(keep_labels, keep_docs, keep_toks)
        # the keep-rate chart belongs to the thresholds section when there is one, else to the filter's
        anchor = "Score distribution and thresholds" if thr is not None else "Filter"
        idx = next(i for i, b in enumerate(blocks) if b.kind == "h2" and b.text == anchor)
        end = next((i for i in range(idx + 1, len(blocks)) if blocks[i].kind == "h2"), len(blocks))
        blocks.insert(end, Block("img", "documents vs tokens kept per keep rate", png=pngs["keep_rates.png"], name="keep_rates.png"))

    # ---- best matches
    if top is not None:
        blocks.append(Block("h2", "Best-matching documents"))
        # one target per benchmark first (in file order), then more until max_targets
        limit = max(0, max_targets)
        entries = [t for t in top if isinstance(t, dict)]
        first_of: dict = {}
        for i, t in enumerate(entries):
            first_of.setdefault(t.get("benchmark"), i)
        chosen_idx = sorted(first_of.values())[:limit]
        taken = set(chosen_idx)
        chosen_idx += [i for i in range(len(entries)) if i not in taken][: limit - len(chosen_idx)]
        picked = [entries[i] for i in chosen_idx]
        blocks.append(Block("p", f"{len(picked)} of {len(top):,} targets shown with their {max_matches} "
                                  f"most similar sampled documents (texts truncated to {text_chars} characters)."))
        summary["top_matches"] = []
        for t in picked:
            matches = [m for m in (t.get("matches") or []) if isinstance(m, dict)][: max(0, max_matches)]
            blocks.append(Block("h3", f"{t.get('benchmark', '?')} · {t.get('target_id', '?')}"))
            blocks.append(Block("p", "Target: " + _truncate(t.get("target_text"), text_chars)))
            blocks.append(Block("table", headers=["#", "cosine", "source", "id", "text"], rows=[
                [i + 1, fmt_num(m.get("cos"), 3), m.get("source") or "–", m.get("id"), _truncate(m.get("text"), text_chars)]
                for i, m in enumerate(matches)
            ]))
            summary["top_matches"].append({"target_id": t.get("target_id"), "benchmark": t.get("benchmark"),
                                           "best_cos": matches[0].get("cos") if matches else None})
        summary["sections"].append("top_matches")

    md = to_markdown(blocks)
    page = to_html(blocks, title)
    for name, data in pngs.items():
        uri = store.join(out_prefix, name)
        store.write_bytes(uri, data)
        summary["pngs"][name] = uri
    html_uri = store.join(out_prefix, "report.html")
    md_uri = store.join(out_prefix, "report.md")
    store.write_text(html_uri, page)
    store.write_text(md_uri, md)  # last: its presence means the report is complete
    return {"markdown_uri": md_uri, "html_uri": html_uri, "summary": summary}
