"""The DeepSpeed trainer end to end on real tokens: real processes, real checkpoints, real kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seedbed import store
from seedbed.train.config import ConfigError, TrainConfig

MIX = {"wikipedia": 0.4, "books_gutenberg": 0.2, "code_python": 0.2, "math": 0.1, "science_abstracts": 0.1}
UP = {"weights": {"wikipedia": 0.2, "books_gutenberg": 0.1, "code_python": 0.1, "math": 0.4,
                  "science_abstracts": 0.2}, "fraction": 0.2}


def base_cfg(tokens_uri, out_uri, **kw):
    cfg = {"tokens_uri": tokens_uri, "out_uri": out_uri, "preset": "tiny-64", "lr": 3e-3, "mixture": MIX,
           "upsample": UP, "seq_len": 64, "global_batch_tokens": 1024, "micro_batch_size": 8,
           "total_tokens": 1024 * 30, "warmup_steps": 3, "checkpoint_every": 10, "eval_tokens": 2048,
           "progress": False}
    cfg.update(kw)
    return cfg


def write_cfg(path: Path, cfg: dict) -> str:
    path.write_text(json.dumps(cfg))
    return str(path)


def run_entry(cfg_path: str, *sets: str, timeout=300, check=True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "seedbed.train.entry", "--config", cfg_path]
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"entry failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return p


def metrics(out_uri: str) -> list[dict]:
    return [json.loads(ln) for ln in store.read_text(store.join(out_uri, "metrics.jsonl")).splitlines() if ln]


def weights(model_uri: str, tmp: Path) -> dict:
    from transformers import AutoModelForCausalLM

    local = store.download_dir(model_uri, tmp)
    return AutoModelForCausalLM.from_pretrained(str(local)).state_dict()


@pytest.fixture(scope="module")
def finished_run(tiny_tokens, tmp_path_factory):
    """One uninterrupted run: the reference for the loss, resume and multi-process tests."""
    tmp = tmp_path_factory.mktemp("run")
    out = str(tmp / "out")
    cfg = write_cfg(tmp / "cfg.json", base_cfg(tiny_tokens, out))
    run_entry(cfg)
    return {"out": out, "cfg": cfg, "tmp": tmp}


def test_tiny_model_learns_and_is_saved_as_an_hf_model(finished_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = metrics(finished_run["out"])
    assert [r["step"] for r in m] == list(range(1, 31))
    first, last = sum(r["loss"] for r in m[:3]) / 3, sum(r["loss"] for r in m[-3:]) / 3
    assert last < first - 1.0, (first, last)  # ln(2048)=7.6 → clearly lower after 30 steps
    assert all(r["tokens_per_s"] > 0 and r["flops"] > 0 for r in m)
    assert {r["phase"] for r in m[:24]} == {"base"} and {r["phase"] for r in m[24:]} == {"upsample"}
    assert m[0]["lr"] < m[3]["lr"] and m[-1]["lr"] < m[10]["lr"]  # warmup, then cosine decay

    summary = store.read_json(store.join(finished_run["out"], "summary.json"))
    assert summary["tokens"] == 30 * 1024 and summary["steps"] == 30
    base, up = summary["tokens_by_phase"]
    assert sum(base["tokens"].values()) == 24 * 1024 and sum(up["tokens"].values()) == 6 * 1024
    assert base["tokens"]["wikipedia"] == pytest.approx(0.4 * 24 * 1024, abs=64)
    assert up["tokens"]["math"] == pytest.approx(0.4 * 6 * 1024, abs=64)
    assert set(summary["val_loss"]) >= {"wikipedia", "math", "all"}

    local = store.download_dir(summary["model_uri"], tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(str(local))
    tok = AutoTokenizer.from_pretrained(str(local))
    assert model.config.hidden_size == 64 and model.config.vocab_size == len(tok)
    ids = tok("def add(a, b):\n    return a + b", return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    assert loss < 7.6  # better than uniform over the vocabulary


def test_finished_run_is_not_trained_again(finished_run):
    before = store.read_text(store.join(finished_run["out"], "summary.json"))
    p = run_entry(finished_run["cfg"])
    assert "already finished" in p.stdout + p.stderr
    assert store.read_text(store.join(finished_run["out"], "summary.json")) == before


def test_kill_9_and_resume_gives_the_uninterrupted_weights(finished_run, tiny_tokens, tmp_path):
    out = str(tmp_path / "out")
    cfg = write_cfg(tmp_path / "cfg.json", base_cfg(tiny_tokens, out, checkpoint_every=4))
    proc = subprocess.Popen([sys.executable, "-m", "seedbed.train.entry", "--config", cfg],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    marker = Path(out) / "checkpoints" / "step-00000012" / "COMPLETE"
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.time() < deadline, "no checkpoint at step 12 in time"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (Path(out) / "summary.json").exists()
    # a half-written newer checkpoint (files, no marker) must not be taken as complete
    fake = Path(out) / "checkpoints" / "step-00000025"
    fake.mkdir(parents=True)
    (fake / "mp_rank_00_model_states.pt").write_bytes(b"half-written")

    p = run_entry(cfg)
    assert "resumed from" in p.stdout and "step-00000025" not in p.stdout
    resumed_step = int(p.stdout.split("at step ")[1].split()[0])
    assert resumed_step >= 12

    ref = metrics(finished_run["out"])
    got = metrics(out)
    assert [r["step"] for r in got] == list(range(1, 31))  # no step logged twice or missing
    for a, b in zip(ref, got):
        assert a["tokens"] == b["tokens"] and a["phase"] == b["phase"]
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5), (a["step"], a["loss"], b["loss"])
    s_ref = store.read_json(store.join(finished_run["out"], "summary.json"))
    s_got = store.read_json(store.join(out, "summary.json"))
    assert s_got["tokens_by_phase"] == s_ref["tokens_by_phase"]  # same tokens per domain: none twice, none skipped
    assert s_got["resumed_from"].endswith(f"step-{resumed_step:08d}")
    w_ref, w_got = weights(s_ref["model_uri"], tmp_path / "a"), weights(s_got["model_uri"], tmp_path / "b")
    for k in w_ref:
        torch.testing.assert_close(w_got[k], w_ref[k], rtol=1e-5, atol=1e-6, msg=k)


def test_checkpoints_and_model_on_s3(s3, tiny_tokens, tmp_path):
    out = f"s3://{s3}/runs/tiny"
    cfg = write_cfg(tmp_path / "cfg.json", base_cfg(tiny_tokens, out, total_tokens=1024 * 8, checkpoint_every=3,
                                                     keep_checkpoints=2))
    run_entry(cfg, "max_steps=5")
    steps = sorted(store.basename(u.rsplit("/", 1)[0]) for u in store.list_uris(f"{out}/checkpoints")
                   if u.endswith("COMPLETE"))
    assert steps == ["step-00000003", "step-00000005"]
    p = run_entry(cfg)
    assert "resumed from s3://" in p.stdout
    done = store.list_uris(f"{out}/checkpoints")
    assert {u.split("/")[-2] for u in done} == {"step-00000006", "step-00000008"}  # pruned to the newest two
    assert store.exists(f"{out}/model/model.safetensors") and store.exists(f"{out}/model/tokenizer.json")
    assert store.read_json(f"{out}/summary.json")["steps"] == 8


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("change,msg", [
    ({"mixture": {"wikipedia": 0.7, "math": 0.2}}, "sum to 0.9"),
    ({"mixture": {"wikipedia": 1.5, "math": -0.5}}, "finite and >= 0"),
    ({"preset": "13b"}, "unknown model preset '13b'"),
    ({"seq_len": 4096}, "larger than preset 'tiny-64'"),
    ({"global_batch_tokens": 1000}, "not a multiple of seq_len"),
    ({"zero_stage": 4}, "zero_stage must be one of"),
    ({"learning_rate": 1e-3}, "training config: unknown field"),
    ({"total_tokens": 100}, "less than one global batch"),
    ({"upsample": {"weights": {"math": 1.0}, "fraction": 1.5}}, "must be in"),
])
def test_bad_configs_are_named(tiny_tokens, tmp_path, change, msg):
    cfg = base_cfg(tiny_tokens, str(tmp_path / "o"))
    cfg.update(change)
    with pytest.raises(ConfigError, match=msg):
        TrainConfig.from_dict(cfg)


def test_bad_inputs_exit_2_with_a_clear_message_and_write_nothing(tiny_tokens, tmp_path, finished_run):
    # micro batch that does not divide the global batch over the processes
    cfg = write_cfg(tmp_path / "a.json", base_cfg(tiny_tokens, str(tmp_path / "a"), micro_batch_size=5))
    p = run_entry(cfg, check=False)
    assert p.returncode == 2 and "not a multiple of micro_batch_size 5" in p.stderr
    # a token dataset whose tokenizer is gone
    broken = tmp_path / "tok"
    store.download_dir(tiny_tokens, broken)
    (broken / "tokenizer.json").unlink()
    cfg = write_cfg(tmp_path / "b.json", base_cfg(str(broken), str(tmp_path / "b")))
    p = run_entry(cfg, check=False)
    assert p.returncode == 2 and "tokenizer" in p.stderr.lower()
    assert not (tmp_path / "b").exists()
    # a missing config
    p = run_entry(str(tmp_path / "nope.json"), check=False)
    assert p.returncode == 2 and "does not exist" in p.stderr


def test_corrupt_or_incompatible_checkpoint_is_refused(tiny_tokens, tmp_path):
    out = tmp_path / "o"
    cfg = write_cfg(tmp_path / "c.json", base_cfg(tiny_tokens, str(out), checkpoint_every=2))
    run_entry(cfg, "max_steps=4")
    # resuming with a different learning rate is an incompatible config
    p = run_entry(cfg, "lr=0.001", check=False)
    assert p.returncode == 2 and "different config (lr: 0.003 → 0.001)" in p.stderr
    # a truncated checkpoint file: the marker's sizes disagree
    f = out / "checkpoints" / "step-00000004" / "mp_rank_00_model_states.pt"
    f.write_bytes(f.read_bytes()[:100])
    p = run_entry(cfg, check=False)
    assert p.returncode == 2 and "is corrupt: mp_rank_00_model_states.pt has 100 bytes" in p.stderr
    # same size, garbage bytes: loading fails with the checkpoint named
    good = (out / "checkpoints" / "step-00000004" / "COMPLETE")
    size = next(x["size"] for x in json.loads(good.read_text())["files"] if x["path"] == f.name)
    f.write_bytes(b"\0" * size)
    p = run_entry(cfg, check=False)
    assert p.returncode == 2 and "could not be loaded" in p.stderr and "step-00000004" in p.stderr


def test_two_nodes_on_localhost_match_one_process(finished_run, tiny_tokens, tmp_path):
    """torchrun, 2 nodes × 1 process on 127.0.0.1: same global batch (2 × 8 sequences, no accumulation)
    as the one-process reference (8 sequences × 2 accumulation) → the same losses."""
    from seedbed.launch.local import run_torchrun_local

    out = tmp_path / "out"
    cfg = write_cfg(tmp_path / "cfg.json", base_cfg(tiny_tokens, str(out)))
    run_torchrun_local(["--config", cfg], nnodes=2, nproc_per_node=1, timeout_s=600, log_dir=str(tmp_path / "logs"),
                       log=lambda *a, **k: None)
    summary = store.read_json(str(out / "summary.json"))
    assert summary["world_size"] == 2
    ref, got = metrics(finished_run["out"]), metrics(str(out))
    assert [r["step"] for r in got] == [r["step"] for r in ref]
    for a, b in zip(ref, got):
        assert b["loss"] == pytest.approx(a["loss"], abs=2e-3), (a["step"], a["loss"], b["loss"])
    assert summary["tokens_by_phase"] == store.read_json(store.join(finished_run["out"], "summary.json"))["tokens_by_phase"]


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_every_zero_stage_trains_the_same_model(finished_run, tiny_tokens, tmp_path, stage):
    out = tmp_path / "out"
    cfg = write_cfg(tmp_path / "cfg.json", base_cfg(tiny_tokens, str(out), zero_stage=stage))
    run_entry(cfg, "max_steps=4")
    ref, got = metrics(finished_run["out"])[:4], metrics(str(out))
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(ref, got):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-4)
    assert (out / "checkpoints" / "step-00000004" / "COMPLETE").exists()
