"""The curate-and-grow report: what BETR selected, the fitted mixture and its predicted gain, the
series' loss-vs-FLOPs curves and the evaluation of every released model, in one page.

It reads what the stages left under ``work_uri`` (docs/stage-contracts.md)::

    filtered/manifest.json, report/report.md        BETR selection
    mixture/fit/fits.json, mixture/mixture.json      mixture-law fit and h* (+ schedule)
    growth/report/series.json, loss_vs_flops.png     the series
    growth/eval-<i>/eval.json                        evaluation of stage i's model

and writes ``summary/report.md``, ``summary/report.html`` and ``summary/summary.json``. A
missing part is reported as missing, never invented.
"""

from __future__ import annotations

from seedbed import store
from seedbed.reporting import Block, to_html, to_markdown

MIXTURE, GROWTH, OUT = "mixture", "growth", "summary"


def _read_json(uri: str):
    try:
        return store.read_json(uri)
    except store.NotFound:
        return None


def _f(v, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def _selection(work_uri: str, betr_domain: str, blocks: list) -> dict:
    m = _read_json(store.join(work_uri, "filtered", "manifest.json"))
    blocks.append(Block("h2", "1. Selection (BETR)"))
    if not m:
        blocks.append(Block("p", "No filtered corpus: the selection did not finish."))
        return {}
    meta = m.get("meta", {})
    t = meta.get("totals", {})
    blocks.append(Block("p", f"The pool was filtered to the documents whose fastText score is at least "
                             f"{_f(meta.get('threshold'))}, the threshold that keeps {meta.get('keep_rate')}% of the "
                             f"tokens. The kept set is the mixture domain '{betr_domain}'. Full report: "
                             f"{store.join(work_uri, 'report', 'report.md')}."))
    blocks.append(Block("table", headers=["", "documents", "tokens"], rows=[
        ["pool", _f(t.get("docs_in")), _f(t.get("tokens_in"))], ["kept", _f(t.get("docs_kept")), _f(t.get("tokens_kept"))]]))
    by = meta.get("by_source", {})
    if by:
        kept = max(1, sum(v.get("docs_kept", 0) for v in by.values()))
        blocks.append(Block("table", headers=["source", "docs in", "docs kept", "share of kept"], rows=[
            [s, _f(v.get("docs_in", 0)), _f(v.get("docs_kept", 0)), f"{100 * v.get('docs_kept', 0) / kept:.1f}%"]
            for s, v in sorted(by.items(), key=lambda kv: -kv[1].get("docs_kept", 0))]))
    return {"keep_rate": meta.get("keep_rate"), "threshold": meta.get("threshold"), **t}


def _mixture(work_uri: str, blocks: list) -> dict:
    fits = _read_json(store.join(work_uri, MIXTURE, "fit", "fits.json"))
    m = _read_json(store.join(work_uri, MIXTURE, "mixture.json"))
    blocks.append(Block("h2", "2. Data mixture (mixture-law fit)"))
    out = {}
    if fits:
        cols = [c for c in ("additive_train", "additive_heldout", "joint_train", "joint_heldout") if c in fits[0]]
        blocks.append(Block("p", "Mean relative error (%) of both laws on the proxy runs they were fitted on"
                                 + (" and on the held-out runs (a larger model, unseen mixtures)."
                                    if any("heldout" in c for c in cols) else " (the sweep had no held-out runs).")))
        blocks.append(Block("table", headers=["target", *[c.replace("_", " ") + " MRE %" for c in cols]],
                            rows=[[r["target"], *[_f(r.get(c), 2) for c in cols]] for r in fits]))
        out["mre"] = [{k: r.get(k) for k in ("target", *cols)} for r in fits]
    if not m:
        blocks.append(Block("p", "No optimal mixture: the mixture fit did not finish."))
        return out
    o = m["optimum"]
    ref = [("h* (fitted)", o["weights"], o["loss"])]
    for name in ("uniform", "natural"):
        if o.get(name):
            ref.append((name, o[name]["weights"], o[name]["loss"]))
    doms = sorted(o["weights"])
    blocks.append(Block("p", f"h* minimises the joint law's predicted {m['target']} loss for {m['preset']} at "
                             f"{m['n_tokens']:,} tokens, within the sweep's bounds and each domain's repetition cap."))
    blocks.append(Block("table", headers=["mixture", *doms, "predicted loss", "gain vs h*"], rows=[
        [name, *[f"{w[d]:.3f}" for d in doms], _f(loss), "–" if name.startswith("h*") else f"{loss - o['loss']:+.4f}"]
        for name, w, loss in ref]))
    up = m.get("upsample") or {}
    if up:
        blocks.append(Block("p", f"End-of-training window (last {100 * up['fraction']:.0f}% of tokens): "
                                 + ", ".join(f"{d} {w:.3f}" for d, w in sorted(up["weights"].items())) + "."))
    out.update(optimum=o["weights"], predicted_loss=o["loss"],
               predicted_gain_vs_uniform=o["uniform"]["loss"] - o["loss"] if o.get("uniform") else None,
               upsample=up)
    return out


def _series(work_uri: str, blocks: list) -> dict:
    s = _read_json(store.join(work_uri, GROWTH, "report", "series.json"))
    blocks.append(Block("h2", "3. Model series (staged growth)"))
    if not s:
        blocks.append(Block("p", "No series report: the growth stages did not finish."))
        return {}
    blocks.append(Block("table", headers=["stage", "preset", "cumulative FLOPs", "tokens", "held-out loss (grown)",
                                          "held-out loss (scratch, same FLOPs)"], rows=[
        [r["stage"], r["preset"], f"{r['cumulative_flops']:.3g}", _f(r["train_tokens"]), _f(r["grown_val_loss"]),
         _f(r["scratch_val_loss"])] for r in s["stages"]]))
    try:
        png = store.read_bytes(store.join(work_uri, GROWTH, "report", "loss_vs_flops.png"))
        blocks.append(Block("img", "loss vs cumulative FLOPs", png=png, name="loss_vs_flops.png"))
    except store.NotFound:
        pass
    return {"stages": [{k: r[k] for k in ("stage", "preset", "cumulative_flops", "grown_val_loss", "scratch_val_loss",
                                          "model_uri")} for r in s["stages"]]}


def _evaluation(work_uri: str, n_stages: int, blocks: list) -> list:
    blocks.append(Block("h2", "4. Evaluation of the released models"))
    evals = [(i, _read_json(store.join(work_uri, GROWTH, f"eval-{i}", "eval.json"))) for i in range(1, n_stages + 1)]
    evals = [(i, e) for i, e in evals if e]
    if not evals:
        blocks.append(Block("p", "No evaluation results."))
        return []
    tasks = sorted({t for _, e in evals for t in (e.get("mc") or {})})
    rows, out = [], []
    for i, e in evals:
        held = (e.get("heldout") or {}).get("all", {})
        mc = e.get("mc") or {}
        rows.append([i, _f(e.get("model", {}).get("parameters")), _f(held.get("loss")), _f(held.get("unigram_loss")),
                     *[_f((mc.get(t) or {}).get("acc"), 3) for t in tasks]])
        out.append({"stage": i, "val_loss": held.get("loss"), "acc": {t: (mc.get(t) or {}).get("acc") for t in tasks}})
    chance = {t: next((e["mc"][t]["chance"] for _, e in evals if t in (e.get("mc") or {})), None) for t in tasks}
    blocks.append(Block("p", "Held-out loss over every domain (unigram baseline on the same positions) and zero-shot "
                             "accuracy (lm-evaluation-harness). Chance: "
                             + ", ".join(f"{t} {_f(c, 3)}" for t, c in chance.items()) + "."))
    blocks.append(Block("table", headers=["stage", "parameters", "held-out loss", "unigram loss", *tasks], rows=rows))
    return out


def final_report(work_uri: str, betr_domain: str = "betr") -> dict:
    """Write ``summary/report.md``, ``report.html`` and ``summary.json`` under ``work_uri``; returns the summary."""
    blocks = [Block("h1", "seedbed curate-and-grow")]
    summary = {"work_uri": work_uri, "selection": _selection(work_uri, betr_domain, blocks),
               "mixture": _mixture(work_uri, blocks)}
    summary["series"] = _series(work_uri, blocks)
    summary["evaluation"] = _evaluation(work_uri, len(summary["series"].get("stages", [])), blocks)
    out = store.join(work_uri, OUT)
    store.write_text(store.join(out, "report.md"), to_markdown(blocks))
    store.write_text(store.join(out, "report.html"), to_html(blocks, "seedbed curate-and-grow"))
    summary.update(report_uri=store.join(out, "report.md"), html_uri=store.join(out, "report.html"))
    store.write_json(store.join(out, "summary.json"), summary)
    return summary
