"""The mixture loader on real tokenized domain corpora: mixture, phases, determinism, resume."""

from collections import Counter

import numpy as np
import pytest

from seedbed.train.loader import DataExhausted, MixtureLoader
from seedbed.train.schedule import build_schedule
from seedbed.train.tokens import open_tokens

SEQ = 64


@pytest.fixture(scope="module")
def ds(tiny_tokens):
    return open_tokens(tiny_tokens)


def _loader(ds, total_seqs, mixture, upsample=None, seed=0, on_exhausted="repeat"):
    sched = build_schedule(total_seqs, SEQ, mixture, ds.domains, upsample=upsample)
    return MixtureLoader({d: ds.shards(d) for d in ds.domains}, sched, seed, on_exhausted)


MIX = {"wikipedia": 0.5, "books_gutenberg": 0.2, "code_python": 0.2, "math": 0.1}
UP = {"weights": {"wikipedia": 0.2, "math": 0.5, "science_abstracts": 0.3}, "fraction": 0.2}


def test_phase_mixtures_are_met_and_switch_at_the_boundary(ds):
    ld = _loader(ds, 1000, MIX, UP)
    refs = ld.next_sequences(1000)
    base, tail = Counter(d for d, _ in refs[:800]), Counter(d for d, _ in refs[800:])
    for d, w in MIX.items():
        assert abs(base[d] - w * 800) <= 1
    assert "science_abstracts" not in base and "books_gutenberg" not in tail
    for d, w in UP["weights"].items():
        assert abs(tail[d] - w * 200) <= 1
    by_phase = ld.tokens_by_phase()
    assert by_phase[0]["tokens"]["math"] == base["math"] * SEQ
    assert sum(by_phase[1]["tokens"].values()) == 200 * SEQ


def test_sequences_are_real_contiguous_token_windows_without_repeats_in_an_epoch(ds):
    n = _loader(ds, 1, {"math": 1.0}).domains["math"].chunks
    ld = _loader(ds, n, {"math": 1.0})
    refs = ld.next_sequences(n)  # exactly one epoch
    ids = [c for _, c in refs]
    assert sorted(ids) == list(range(ld.domains["math"].chunks))  # a permutation: none skipped, none twice
    assert ld.repeated["math"] == 0
    flat = np.concatenate([np.asarray(s) for s in ds.shards("math")])
    toks = ld.materialize(refs[:5])
    for (d, cid), row in zip(refs[:5], toks):
        dom = ld.domains[d]
        s = int(np.searchsorted(dom.starts, cid, side="right")) - 1
        off = sum(len(a) for a in ds.shards("math")[:s]) + (cid - dom.starts[s]) * SEQ
        np.testing.assert_array_equal(row, flat[off : off + SEQ])
    assert (toks == ds.eos_id).any()  # documents are packed across EOS boundaries


def test_deterministic_from_seed_and_independent_of_world_size(ds):
    a = _loader(ds, 256, MIX, UP, seed=3)
    b = _loader(ds, 256, MIX, UP, seed=3)
    c = _loader(ds, 256, MIX, UP, seed=4)
    ra, rb, rc = a.next_sequences(256), b.next_sequences(256), c.next_sequences(256)
    assert ra == rb and ra != rc
    # two ranks' slices of each global batch are exactly the one-process batch
    one = _loader(ds, 256, MIX, UP, seed=3)
    r0, r1 = _loader(ds, 256, MIX, UP, seed=3), _loader(ds, 256, MIX, UP, seed=3)
    for _ in range(8):
        full, _ = one.next_batch(32)
        p0, _ = r0.next_batch(32, rank=0, world=2)
        p1, _ = r1.next_batch(32, rank=1, world=2)
        np.testing.assert_array_equal(full, np.concatenate([p0, p1]))


def test_resume_from_state_continues_with_the_same_tokens(ds):
    full = _loader(ds, 600, MIX, UP)
    expected = full.next_sequences(600)
    part = _loader(ds, 600, MIX, UP)
    first = part.next_sequences(437)  # mid-phase, mid-epoch
    state = part.state_dict()
    resumed = _loader(ds, 600, MIX, UP)
    resumed.load_state_dict(state)
    assert first + resumed.next_sequences(163) == expected
    assert resumed.tokens_by_phase() == full.tokens_by_phase()


def test_state_from_a_different_dataset_or_seed_is_refused(ds):
    st = _loader(ds, 100, MIX, seed=0).state_dict()
    with pytest.raises(ValueError, match="does not match"):
        _loader(ds, 100, MIX, seed=1).load_state_dict(st)


def test_exhaustion_repeats_and_counts_or_fails_before_training(ds):
    n_math = _loader(ds, 10, {"math": 1.0}).domains["math"].chunks
    total = int(n_math * 2.5)
    ld = _loader(ds, total, {"math": 1.0})
    plan = ld.check_plan()
    assert plan["math"]["repeated_sequences"] == total - n_math
    refs = ld.next_sequences(total)
    assert ld.repeated["math"] == total - n_math
    assert Counter(c for _, c in refs).most_common(1)[0][1] == 3  # 2.5 epochs: some chunks seen 3 times
    strict = _loader(ds, total, {"math": 1.0}, on_exhausted="fail")
    with pytest.raises(DataExhausted, match=r"math: needs .* tokens but has .* unique.*on_exhausted='repeat'"):
        strict.check_plan()
    with pytest.raises(DataExhausted, match="ran out of unique tokens"):
        strict.next_sequences(total)


def test_domain_shorter_than_a_sequence_is_rejected(ds):
    sched = build_schedule(10, SEQ, {"math": 1.0}, ["math"])
    with pytest.raises(ValueError, match="fewer than seq_len"):
        MixtureLoader({"math": [np.zeros(SEQ - 1, np.uint16)]}, sched)
