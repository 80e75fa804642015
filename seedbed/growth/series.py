"""Running a growth series on the object store: the plan, each stage's config, the grown inits.

Layout under ``work_uri``::

    plan.json                the SeriesPlan plus the shared run settings (written once)
    stage-1/                 a training run (seedbed.train): train.json, checkpoints/, model/, summary.json
    stage-2/init/            stage 1's model grown to stage 2's shape (HF dir + growth.json)
    stage-2/ ...             trained from stage-2/init with a fresh optimizer and a new warmup
    scratch-2/ ...           optional baseline: stage 2's size from scratch on T_2 tokens

Every step is idempotent: a finished plan, grown init or run is reused, never redone.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from seedbed import store
from seedbed.corpus import reuse_finished
from seedbed.growth.plan import PlanError, SeriesPlan, plan_series
from seedbed.train.config import TrainConfig, write_run_config

PLAN = "plan.json"


def stage_uri(work_uri: str, i: int, scratch: bool = False) -> str:
    return store.join(work_uri, f"{'scratch' if scratch else 'stage'}-{i}")


def _round_tokens(n: int, batch: int, what: str) -> int:
    out = (n // batch) * batch
    if out < batch:
        raise PlanError(f"{what}: {n:,} tokens is less than one global batch of {batch:,} tokens; raise the token "
                        "targets or lower global_batch_tokens")
    return out


def parse_lr(lr) -> float | list[float] | None:
    """The series' ``lr`` parameter: "preset" or "" → None (by size), one number → every stage's lr,
    several (comma-separated) → one per stage."""
    if str(lr).strip() in ("", "preset"):
        return None
    lrs = [float(x) for x in str(lr).split(",")]
    return lrs[0] if len(lrs) == 1 else lrs


def write_plan(work_uri: str, tokens_uri: str, series: list[str], run_settings: dict, *,
               tokens: list[int] | None = None, tokens_per_param: float | None = 40.0, lr=None,
               fixed_data: bool = False, basis: str = "auto", width: str = "zero", depth: str = "identity",
               overwrite: bool = False) -> dict:
    """Plan the series against the token dataset's vocabulary, check every stage's config, and
    write ``plan.json``. Returns the plan document."""
    from seedbed.growth.operators import DEPTH_METHODS, WIDTH_METHODS
    from seedbed.train.tokens import open_tokens

    if width not in WIDTH_METHODS:
        raise PlanError(f"unknown width method {width!r}; known: {', '.join(WIDTH_METHODS)}")
    if depth not in DEPTH_METHODS:
        raise PlanError(f"unknown depth method {depth!r}; known: {', '.join(DEPTH_METHODS)}")
    clash = {"preset", "total_tokens", "lr", "init_from", "data_cursor_from", "max_unique_tokens",
             "tokens_uri", "out_uri"} & set(run_settings)
    if clash:
        raise PlanError(f"{sorted(clash)} are set per stage by the plan; remove them from the run settings")
    ds = open_tokens(tokens_uri)
    params = {"tokens_uri": tokens_uri, "series": list(series), "tokens": tokens, "tokens_per_param": tokens_per_param,
              "lr": lr, "fixed_data": fixed_data, "basis": basis, "width": width, "depth": depth,
              "run_settings": run_settings}
    uri = store.join(work_uri, PLAN)
    done = reuse_finished(uri, params, overwrite, "growth plan", PlanError)
    if done is not None:
        return done
    plan = plan_series(series, vocab_size=ds.vocab_size, tokens=tokens, tokens_per_param=tokens_per_param, lr=lr,
                       fixed_data=fixed_data, basis=basis, width=width, depth=depth)
    doc = {"params": params, "plan": plan.to_dict(), "table": plan.table()}
    check_stage_settings(plan, run_settings)  # every stage's config must be valid before anything trains
    store.write_json(uri, doc)
    return doc


def check_stage_settings(plan: SeriesPlan, run_settings: dict) -> None:
    """Build every stage's (and baseline's) TrainConfig from the plan and ``run_settings``: raises on the first bad one."""
    doc = {"params": {"run_settings": run_settings}, "plan": plan.to_dict()}
    for i in range(1, len(plan.stages) + 1):
        _stage_settings(doc, i, scratch=False)
        _stage_settings(doc, i, scratch=True)


def read_plan(work_uri: str) -> tuple[dict, SeriesPlan]:
    try:
        doc = store.read_json(store.join(work_uri, PLAN))
    except store.NotFound:
        raise PlanError(f"no growth plan at {store.join(work_uri, PLAN)}: run the plan step first") from None
    return doc, SeriesPlan.from_dict(doc["plan"])


def _stage_settings(doc: dict, i: int, scratch: bool) -> dict:
    plan = SeriesPlan.from_dict(doc["plan"])
    if not 1 <= i <= len(plan.stages):
        raise PlanError(f"stage {i} is outside the plan's {len(plan.stages)} stages")
    st = plan.stages[i - 1]
    rs = dict(doc["params"]["run_settings"])
    batch = int(rs.get("global_batch_tokens", TrainConfig.global_batch_tokens))
    what = f"stage {i} ({st.preset})" + (" from scratch" if scratch else "")
    # from scratch: the compute the series has spent when stage i is released, FLOPs(X_i, T_i)
    n = st.target_tokens if scratch else st.train_tokens
    s = {**rs, "name": f"{'scratch' if scratch else 'stage'}-{i}", "preset": st.preset, "lr": st.lr,
         "total_tokens": _round_tokens(n, batch, what)}
    if plan.fixed_data:
        s["max_unique_tokens"] = int(st.unique_tokens)
        s["on_exhausted"] = "repeat"
    TrainConfig.from_dict({**s, "tokens_uri": "-", "out_uri": "-"})
    return s


def grow_into(src_model_uri: str, dst_uri: str, preset: str, width: str, depth: str, seed: int = 0) -> dict:
    """Grow the HF model at ``src_model_uri`` into ``preset``'s shape at ``dst_uri`` (idempotent)."""
    from transformers import AutoConfig

    from seedbed.growth.operators import grow_saved
    from seedbed.train.presets import get_preset, llama_config

    marker = store.join(dst_uri, "growth.json")
    if store.exists(marker):
        return store.read_json(marker)
    tmp = Path(tempfile.mkdtemp(prefix="seedbed-grow-"))
    try:
        src = store.download_dir(src_model_uri, tmp / "src")
        src_cfg = AutoConfig.from_pretrained(str(src))
        dst_cfg = llama_config(get_preset(preset), src_cfg.vocab_size, src_cfg.eos_token_id)
        report = grow_saved(src, tmp / "dst", dst_cfg, width=width, depth=depth, seed=seed)
        report = {**report, "source": src_model_uri, "preset": preset}
        store.upload_dir(tmp / "dst", dst_uri)
        store.write_json(marker, report)  # last: the grown init is complete
        return report
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def prepare_stage(work_uri: str, i: int, scratch: bool = False, enabled: bool = True) -> str:
    """Write stage ``i``'s training config (growing stage i-1's model first); returns its URI.

    Returns "" — nothing to train — when the plan has fewer than ``i`` stages or ``enabled`` is
    false: the pipeline has a fixed number of stage slots and skips the ones a series does not use.
    """
    doc, plan = read_plan(work_uri)
    if not enabled or i > len(plan.stages) or (scratch and i == 1):  # stage 1 is itself from scratch
        return ""
    settings = _stage_settings(doc, i, scratch)
    out = stage_uri(work_uri, i, scratch)
    if i > 1 and not scratch:
        prev = stage_uri(work_uri, i - 1)
        try:
            store.read_json(store.join(prev, "summary.json"))
        except store.NotFound:
            raise PlanError(f"stage {i} needs stage {i - 1} finished first ({prev}/summary.json is missing)") from None
        init = store.join(out, "init")
        grow_into(store.join(prev, "model"), init, plan.stages[i - 1].preset, plan.width, plan.depth,
                  seed=int(settings.get("seed", 0)))
        settings["init_from"] = init
        settings["data_cursor_from"] = prev  # the next stage reads on where the last one stopped
    return write_run_config(doc["params"]["tokens_uri"], out, settings)
