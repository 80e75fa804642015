"""The series report: loss against cumulative FLOPs for every stage on one plot (the shape of the
paper's Fig. 2), from-scratch baselines of the same sizes when they were trained, and a table
of each released model's held-out loss vs the same size from scratch at equal FLOPs.

FLOPs use the plan's accounting (6·X·tokens with X on the plan's parameter basis), so the
series and the baselines are on one scale: stage i's curve starts where stage i-1's compute
ended, a baseline's at zero.
"""

from __future__ import annotations

import base64
import io
import json

from seedbed import store
from seedbed.growth.series import read_plan, stage_uri


def _curve(run_uri: str, x_params: float, offset: float) -> dict | None:
    try:
        lines = store.read_text(store.join(run_uri, "metrics.jsonl")).splitlines()
        summary = store.read_json(store.join(run_uri, "summary.json"))
    except store.NotFound:
        return None
    recs = [json.loads(ln) for ln in lines if ln.strip()]
    return {"flops": [offset + 6.0 * x_params * r["tokens"] for r in recs], "loss": [r["loss"] for r in recs],
            "summary": summary}


def _smooth(ys: list[float], k: int = 9) -> list[float]:
    out, acc = [], []
    for y in ys:
        acc.append(y)
        if len(acc) > k:
            acc.pop(0)
        out.append(sum(acc) / len(acc))
    return out


def series_report(work_uri: str) -> dict:
    """Write ``report.md`` (plot inline), ``loss_vs_flops.png`` and ``series.json`` under
    ``<work_uri>/report``; returns the series summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    doc, plan = read_plan(work_uri)
    stages, rows = [], []
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    prev = 0.0
    for st in plan.stages:
        c = colors[(st.index - 1) % len(colors)]
        grown = _curve(stage_uri(work_uri, st.index), st.params, prev)
        scratch = _curve(stage_uri(work_uri, st.index, scratch=True), st.params, 0.0) if st.index > 1 else grown
        if grown:
            ax.plot(grown["flops"], _smooth(grown["loss"]), color=c, label=f"stage {st.index}: {st.preset}")
        if scratch and st.index > 1:
            ax.plot(scratch["flops"], _smooth(scratch["loss"]), color=c, linestyle="--", alpha=0.8,
                    label=f"{st.preset} from scratch")
        g_val = (grown or {}).get("summary", {}).get("val_loss", {}).get("all")
        s_val = (scratch or {}).get("summary", {}).get("val_loss", {}).get("all")
        trained = grown["summary"]["tokens"] if grown else st.train_tokens  # D_i in whole global batches
        row = {"stage": st.index, "preset": st.preset, "params": st.params, "train_tokens": trained,
               "target_tokens": st.target_tokens, "lr": st.lr, "cumulative_flops": st.cumulative_flops,
               "grown_val_loss": g_val, "scratch_val_loss": s_val,
               "grown_final_train_loss": grown["summary"]["final_loss"] if grown else None,
               "model_uri": grown["summary"]["model_uri"] if grown else None,
               "repeated_tokens": grown["summary"].get("repeated_tokens") if grown else None}
        rows.append(row)
        stages.append(st.index)
        prev = st.cumulative_flops
    ax.set_xscale("log")
    ax.set_xlabel(f"cumulative training FLOPs (6·X·tokens, X = {plan.basis} parameters)")
    ax.set_ylabel("training loss (nats/token, 9-step mean)")
    ax.set_title("Staged growth: loss vs cumulative compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    png = buf.getvalue()
    out = store.join(work_uri, "report")
    store.write_bytes(store.join(out, "loss_vs_flops.png"), png)

    md = ["# Staged growth series", "", "```", doc["table"], "```", "",
          "| stage | preset | cumulative FLOPs | trained tokens | lr | held-out loss (grown) | held-out loss (from scratch, same FLOPs) |",
          "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        fmt = lambda v: f"{v:.4f}" if isinstance(v, (int, float)) else "–"  # noqa: E731
        md.append(f"| {r['stage']} | {r['preset']} | {r['cumulative_flops']:.3g} | {r['train_tokens']:,} | "
                  f"{r['lr']:.2e} | {fmt(r['grown_val_loss'])} | {fmt(r['scratch_val_loss'])} |")
    md += ["", "Held-out loss: mean next-token loss over every domain's held-out split, at the end of the stage. "
           "From scratch: the same size trained on T_i tokens, i.e. the compute the series has spent when stage i "
           "is released.", "", f"![loss vs FLOPs](data:image/png;base64,{base64.b64encode(png).decode()})", ""]
    store.write_text(store.join(out, "report.md"), "\n".join(md))
    result = {"stages": rows, "plan": doc["plan"], "report_uri": store.join(out, "report.md"),
              "plot_uri": store.join(out, "loss_vs_flops.png")}
    store.write_json(store.join(out, "series.json"), result)
    return result
