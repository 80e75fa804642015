"""The DeepSpeed training loop every stage runs: proxy runs, the growth series, the final model.

One function, :func:`train`, started once per process (by ``torchrun`` on a cluster or laptop,
or directly for one process). It reads a token dataset, builds a Llama from a preset (or loads
one to continue from), trains it under DeepSpeed for a token budget with the run's mixture
schedule, checkpoints to the object store, resumes from the last complete checkpoint, and saves
the final model with ``save_pretrained``.

Why DeepSpeed: ZeRO 0–3, bf16, gradient accumulation and clipping, and multi-node data
parallelism behind one engine object, on CPU (gloo) and GPU (NCCL) alike — the same code path
from a 2-core laptop to many GPU nodes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from seedbed import store
from seedbed.train import checkpoint as ckpt
from seedbed.train.config import ConfigError, TrainConfig
from seedbed.train.loader import MixtureLoader
from seedbed.train.presets import build_model, flops_per_token, get_preset, param_count
from seedbed.train.schedule import build_schedule, lr_factor

#: dense bf16 peak FLOP/s per device, for MFU when ``peak_flops`` is not configured
PEAK_FLOPS = {"H100": 989.4e12, "H200": 989.4e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "L4": 121e12}


class TrainError(RuntimeError):
    """A run that cannot start or continue (the message says why)."""


# ----------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(cfg: TrainConfig) -> dict:
    """Join the process group (env:// from torchrun / the Trainer runtime; MPI env for
    ``deepspeed-distributed``; a one-process group when started directly)."""
    import deepspeed
    import torch

    if "RANK" not in os.environ and "OMPI_COMM_WORLD_SIZE" not in os.environ:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1",
                          LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    want = cfg.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError(f"device={cfg.device!r} but no CUDA device is available")
    backend = "nccl" if want.startswith("cuda") else "gloo"
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=True)
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("OMPI_COMM_WORLD_LOCAL_RANK", 0)))
    if want.startswith("cuda"):
        idx = int(want.split(":")[1]) if ":" in want else local_rank
        torch.cuda.set_device(idx)
        device = torch.device("cuda", idx)
    else:
        device = torch.device("cpu")
    dtype = cfg.dtype if cfg.dtype != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    return {"rank": rank, "world": world, "local_rank": local_rank, "device": device, "dtype": dtype}


def _peak_flops(cfg: TrainConfig, device) -> float | None:
    if cfg.peak_flops:
        return float(cfg.peak_flops)
    if device.type == "cuda":
        import torch

        name = torch.cuda.get_device_name(device)
        for k, v in PEAK_FLOPS.items():
            if k in name:
                return v
    return None


# ----------------------------------------------------------------------------- model + engine


def _model(cfg: TrainConfig, vocab_size: int, eos_id: int):
    preset = get_preset(cfg.preset, cfg.model_overrides)
    if not cfg.init_from:
        return build_model(preset, vocab_size, eos_id, cfg.seed), preset
    from transformers import LlamaForCausalLM

    local = Path(tempfile.mkdtemp(prefix="seedbed-init-"))
    try:
        store.download_dir(cfg.init_from, local)
        model = LlamaForCausalLM.from_pretrained(str(local), torch_dtype="float32")
    except store.NotFound:
        raise TrainError(f"init_from {cfg.init_from}: no model there") from None
    except (OSError, ValueError) as e:
        raise TrainError(f"init_from {cfg.init_from}: not a loadable HF model ({e})") from None
    finally:
        shutil.rmtree(local, ignore_errors=True)
    c = model.config
    shape = (c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.num_attention_heads, c.vocab_size)
    want = (preset.hidden, preset.ffn, preset.layers, preset.heads, vocab_size)
    if shape != want:
        raise TrainError(f"init_from {cfg.init_from} has (hidden, ffn, layers, heads, vocab) = {shape}, "
                         f"but preset {cfg.preset!r} with this tokenizer is {want}")
    return model, preset


def _param_groups(model, weight_decay: float):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (decay if p.ndim >= 2 and "norm" not in n else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def deepspeed_config(cfg: TrainConfig, world: int, dtype: str) -> dict:
    gas = cfg.grad_accum(world)
    return {
        "train_batch_size": cfg.global_batch_sequences,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": gas,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": dtype == "bf16"},
        "fp16": {"enabled": dtype == "fp16", "initial_scale_power": 16},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 2**31 - 1,
        "wall_clock_breakdown": False,
    }


# ----------------------------------------------------------------------------- the run


class _Metrics:
    """metrics.jsonl, kept locally by rank 0 and copied to the store with every checkpoint."""

    def __init__(self, out_uri: str, workdir: Path, rank: int):
        self.uri = store.join(out_uri, "metrics.jsonl")
        self.path = workdir / "metrics.jsonl"
        self.rank = rank

    def restore(self, upto_step: int) -> None:
        if self.rank or not store.exists(self.uri):
            return
        keep = [ln for ln in store.read_text(self.uri).splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= upto_step]
        self.path.write_text("".join(ln + "\n" for ln in keep))

    def write(self, rec: dict) -> None:
        if self.rank == 0:
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")

    def flush(self) -> None:
        if self.rank == 0 and self.path.exists():
            with open(self.path, "rb") as f, store.open_write(self.uri) as w:
                shutil.copyfileobj(f, w)


def _check_compatible(marker: dict, cfg: TrainConfig, world: int, ckpt_uri: str) -> None:
    old, new = marker.get("fingerprint", {}), cfg.fingerprint()
    diff = [f"{k}: {old.get(k)!r} → {new[k]!r}" for k in new if json.dumps(old.get(k), default=str, sort_keys=True)
            != json.dumps(new[k], default=str, sort_keys=True)]
    if diff:
        raise ckpt.CheckpointError(
            f"cannot resume from {ckpt_uri}: it was written with a different config ({'; '.join(diff)}). "
            "Restore those settings, or train into a new out_uri")
    if cfg.zero_stage > 0 and marker.get("world_size") != world:
        raise ckpt.CheckpointError(
            f"cannot resume from {ckpt_uri}: it holds ZeRO-{cfg.zero_stage} optimizer shards for "
            f"{marker.get('world_size')} processes, this run has {world}")


def _want_file(rank: int):
    import re

    pat = re.compile(r"zero_pp_rank_(\d+)_")

    def want(path: str) -> bool:
        m = pat.search(path)
        return m is None or int(m.group(1)) == rank

    return want


def _chunk_caps(cfg: TrainConfig, schedule) -> dict | None:
    """``max_unique_tokens`` split over the domains by their planned share of the run's tokens."""
    if not cfg.max_unique_tokens:
        return None
    share: dict[str, float] = {}
    for ph in schedule.phases:
        for d, w in ph.weights.items():
            share[d] = share.get(d, 0.0) + w * ph.sequences / schedule.total_sequences
    return {d: math.ceil(cfg.max_unique_tokens * s / cfg.seq_len) for d, s in share.items() if s > 0}


def _cursor_from(cfg: TrainConfig, tokens) -> dict | None:
    """Where a previous run's data streams stopped (its summary's ``loader_end``)."""
    if not cfg.data_cursor_from:
        return None
    uri = store.join(cfg.data_cursor_from, "summary.json")
    try:
        end = store.read_json(uri)["loader_end"]
    except store.NotFound:
        raise TrainError(f"data_cursor_from: {uri} does not exist (is that run finished?)") from None
    except KeyError:
        raise TrainError(f"data_cursor_from: {uri} records no loader_end") from None
    if (end["seq_len"], end["seed"], end["tokens_uri"]) != (cfg.seq_len, cfg.seed, cfg.tokens_uri):
        raise TrainError(f"data_cursor_from {cfg.data_cursor_from}: that run used seq_len {end['seq_len']}, seed "
                         f"{end['seed']}, tokens {end['tokens_uri']}; continuing its data needs the same")
    return end["cursor"]


def train(cfg: TrainConfig, log=print) -> dict:
    """Run (or resume, or recognise as finished) one training run; returns its summary."""
    import deepspeed
    import torch
    import torch.distributed as dist
    from tqdm import tqdm

    from seedbed.train.tokens import hf_tokenizer, open_tokens

    summary_uri = store.join(cfg.out_uri, "summary.json")
    if store.exists(summary_uri):
        done = store.read_json(summary_uri)
        if done.get("fingerprint") == cfg.fingerprint_hash():
            log(f"[train] {cfg.out_uri} already finished (summary.json); nothing to do")
            return done
        raise ConfigError(f"{cfg.out_uri} holds a finished run with a different config; use a new out_uri")

    env = init_distributed(cfg)
    rank, world, device, dtype = env["rank"], env["world"], env["device"], env["dtype"]
    workdir = Path(tempfile.mkdtemp(prefix=f"seedbed-train-r{rank}-"))
    try:
        tokens = open_tokens(cfg.tokens_uri)
        hf_tok = hf_tokenizer(tokens.tokenizer_path())  # before any step: the final model ships it
        steps = cfg.total_steps
        gbs = cfg.global_batch_sequences
        schedule = build_schedule(steps * gbs, cfg.seq_len, cfg.mixture, tokens.domains, cfg.upsample, cfg.phases)
        loader = MixtureLoader({d: tokens.shards(d, "train") for d in tokens.domains}, schedule, cfg.seed,
                               cfg.on_exhausted, max_chunks=_chunk_caps(cfg, schedule),
                               start_cursor=_cursor_from(cfg, tokens))
        plan = loader.check_plan()
        gas = cfg.grad_accum(world)
        model, preset = _model(cfg, tokens.vocab_size, tokens.eos_id)
        if cfg.activation_checkpointing:
            model.gradient_checkpointing_enable()
        n_params = param_count(preset, tokens.vocab_size)
        fpt = flops_per_token(preset, tokens.vocab_size)
        peak = _peak_flops(cfg, device)
        lr = cfg.resolved_lr()

        def lam(step):
            return lr_factor(step, steps, cfg.lr_schedule, cfg.warmup_steps, cfg.min_lr_ratio, cfg.decay_fraction)

        opt = torch.optim.AdamW(_param_groups(model, cfg.weight_decay), lr=lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                fused=device.type == "cuda")
        engine, _, _, sched = deepspeed.initialize(
            model=model, optimizer=opt, config=deepspeed_config(cfg, world, dtype),
            lr_scheduler=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lam))

        metrics = _Metrics(cfg.out_uri, workdir, rank)
        state = {"step": 0, "tokens": 0, "flops": 0.0, "train_seconds": 0.0}
        resumed_from = None
        last = ckpt.latest(cfg.out_uri)
        if last is not None:
            step0, ckpt_uri = last
            marker = ckpt.verify(ckpt_uri)
            _check_compatible(marker, cfg, world, ckpt_uri)
            local = ckpt.download(ckpt_uri, marker, workdir / "resume" / ckpt.step_name(step0), _want_file(rank))
            try:
                _, client = engine.load_checkpoint(str(local.parent), tag=local.name, load_optimizer_states=True,
                                                   load_lr_scheduler_states=True)
            except Exception as e:  # noqa: BLE001 — torch/DeepSpeed raise many kinds on bad files
                raise ckpt.CheckpointError(f"checkpoint {ckpt_uri} could not be loaded: {e}") from e
            if not client or "loader" not in client:
                raise ckpt.CheckpointError(f"checkpoint {ckpt_uri} lacks the loader state")
            loader.load_state_dict(client["loader"])
            state = client["state"]
            metrics.restore(state["step"])
            resumed_from = ckpt_uri
            shutil.rmtree(workdir / "resume", ignore_errors=True)
            if rank == 0:
                log(f"[train] resumed from {ckpt_uri} at step {state['step']} ({state['tokens']:,} tokens)")
        elif rank == 0:
            log(f"[train] {cfg.name}: {n_params / 1e6:.1f}M params ({cfg.preset}), {steps} steps × "
                f"{cfg.global_batch_tokens:,} tokens, {world} process(es) × {cfg.micro_batch_size} seqs × "
                f"{gas} accumulation, ZeRO-{cfg.zero_stage}, {dtype} on {device.type}")

        def save(step: int) -> None:
            tag = ckpt.step_name(step)
            staging = workdir / "ckpt"
            shutil.rmtree(staging, ignore_errors=True)
            (staging / tag).mkdir(parents=True)
            engine.save_checkpoint(str(staging), tag=tag, save_latest=False,
                                   client_state={"loader": loader.state_dict(), "state": dict(state)})
            ckpt_uri = store.join(ckpt.root(cfg.out_uri), tag)
            files = ckpt.upload_rank_files(staging / tag, ckpt_uri)
            gathered = [None] * world
            dist.all_gather_object(gathered, files)
            if rank == 0:
                allf = {f["path"]: f for fs in gathered for f in fs}
                metrics.flush()
                ckpt.write_marker(ckpt_uri, list(allf.values()), {
                    "step": step, "tokens": state["tokens"], "world_size": world,
                    "fingerprint": cfg.fingerprint(), "config": cfg.to_dict()})
                ckpt.prune(cfg.out_uri, cfg.keep_checkpoints)
            shutil.rmtree(staging, ignore_errors=True)
            dist.barrier()

        def evaluate() -> dict:
            from seedbed.evaluate.lm import heldout_loss

            arrays = {d: tokens.shards(d, "valid") for d in tokens.domains if tokens.num_tokens(d, "valid") > 1}
            if not arrays:
                return {}
            engine.module.eval()
            res = heldout_loss(engine.module, arrays, cfg.seq_len, batch_size=cfg.micro_batch_size,
                               max_tokens=cfg.eval_tokens, device=device)
            engine.module.train()
            return {d: round(v["loss"], 6) for d, v in res.items()}

        stop = min(steps, cfg.max_steps) if cfg.max_steps else steps
        bar = tqdm(total=steps, initial=state["step"], disable=rank != 0 or not cfg.progress, unit="step",
                   dynamic_ncols=True, mininterval=2.0)
        loss_val = float("nan")
        last_phase = None
        engine.train()
        while state["step"] < stop:
            t0 = time.perf_counter()
            cur_lr = sched.get_last_lr()[0]
            batch, refs = loader.next_batch(gbs, rank, world)
            x = torch.from_numpy(batch).to(device)
            acc = torch.zeros((), dtype=torch.float64, device=device)
            for m in range(gas):
                mb = x[m * cfg.micro_batch_size : (m + 1) * cfg.micro_batch_size]
                out = engine(input_ids=mb, labels=mb)
                engine.backward(out.loss)
                engine.step()
                acc += out.loss.detach().double()
            dist.all_reduce(acc)
            loss_val = acc.item() / (gas * world)
            if not math.isfinite(loss_val):
                raise TrainError(f"loss became {loss_val} at step {state['step'] + 1}; lower lr or check the data")
            dt = time.perf_counter() - t0
            step_tokens = gbs * cfg.seq_len
            state["step"] += 1
            state["tokens"] += step_tokens
            state["flops"] += fpt * step_tokens
            state["train_seconds"] += dt
            tps = step_tokens / dt
            rec = {"step": state["step"], "tokens": state["tokens"], "loss": round(loss_val, 6),
                   "lr": cur_lr, "tokens_per_s": round(tps, 1),
                   "mfu": round(fpt * tps / (peak * world), 5) if peak else None,
                   "flops": state["flops"], "phase": schedule.phases[schedule.phase_index(loader.seq_index - 1)].name,
                   "step_seconds": round(dt, 4)}
            if rank == 0 and rec["phase"] != last_phase:
                log(f"[train] phase {rec['phase']!r} from token {state['tokens'] - step_tokens:,} "
                    f"(step {state['step']})")
            last_phase = rec["phase"]
            if cfg.eval_every and state["step"] % cfg.eval_every == 0 and state["step"] < steps:
                rec["val_loss"] = evaluate()
            if state["step"] % cfg.log_every == 0 or state["step"] == stop:
                metrics.write(rec)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_val:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
            if state["step"] < stop and cfg.checkpoint_every and state["step"] % cfg.checkpoint_every == 0:
                save(state["step"])
        bar.close()

        if state["step"] < steps:  # max_steps stop: checkpoint, no final model
            save(state["step"])
            if rank == 0:
                log(f"[train] stopped at step {state['step']} of {steps} (max_steps); resume by running again")
            return {"stopped_at": state["step"], "total_steps": steps}

        val = evaluate()
        save(state["step"])
        model_uri = store.join(cfg.out_uri, "model")
        summary = {}
        if cfg.zero_stage == 3:
            sd = engine._zero3_consolidated_16bit_state_dict()  # gathers on every rank, returns on rank 0
        if rank == 0:
            mdir = workdir / "model"
            target = engine.module
            if cfg.zero_stage == 3:
                target.save_pretrained(str(mdir), state_dict=sd)
            else:
                target.save_pretrained(str(mdir))
            hf_tok.save_pretrained(str(mdir))
            mean_tps = state["tokens"] / max(state["train_seconds"], 1e-9)
            summary = {
                "name": cfg.name, "fingerprint": cfg.fingerprint_hash(), "preset": cfg.preset, "params": n_params,
                "steps": state["step"], "tokens": state["tokens"], "flops": state["flops"],
                "final_loss": loss_val, "val_loss": val,
                "tokens_per_s": round(mean_tps, 1),
                "mfu": round(fpt * mean_tps / (peak * world), 5) if peak else None,
                "train_seconds": round(state["train_seconds"], 2), "world_size": world, "device": device.type,
                "dtype": dtype, "zero_stage": cfg.zero_stage, "schedule": schedule.describe(),
                "tokens_by_phase": loader.tokens_by_phase(),
                "repeated_tokens": {d: n * cfg.seq_len for d, n in loader.repeated.items() if n},
                "plan": plan, "resumed_from": resumed_from, "model_uri": model_uri,
                "loader_end": {"cursor": loader.cursor, "seq_len": cfg.seq_len, "seed": cfg.seed,
                               "tokens_uri": cfg.tokens_uri,
                               "chunks": {d: dom.chunks for d, dom in loader.domains.items()}},
                "config": cfg.to_dict(),
            }
            store.write_json(store.join(str(mdir), "seedbed.json"), summary)
            store.upload_dir(mdir, model_uri)
            metrics.flush()
            store.write_json(summary_uri, summary)  # last: the run's done-marker
            log(f"[train] done: {state['step']} steps, final loss {loss_val:.4f}, model at {model_uri}")
        dist.barrier()
        return summary
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
