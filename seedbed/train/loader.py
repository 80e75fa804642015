"""Mixture data loader: packed sequences from several domains, deterministic and resumable.

Every domain's token stream (documents joined by EOS, see the token dataset contract) is cut
into non-overlapping chunks of ``seq_len`` tokens. Per epoch a domain visits its chunks in a
seeded pseudo-random order: an affine permutation ``i → (a·i + b) mod C`` with ``gcd(a, C) = 1``
— O(1) memory at any corpus size, unlike a materialised permutation of billions of chunks.

Which domain supplies the next sequence follows the current phase's weights by smooth weighted
round robin (the domain furthest behind its share goes next), so a phase of n sequences gives
domain d round(w_d·n) ± 1 sequences — the mixture a proxy run asked for, not a noisy sample of it.

The sequence stream is global: every rank walks the same stream and takes its own slice of each
global batch, so what the model sees depends only on the config and the seed, not on the number
of processes; the whole loader state is a few integers that go into each checkpoint.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from seedbed.train.schedule import Schedule


class DataExhausted(RuntimeError):
    """A domain ran out of unique tokens and the run is configured to fail instead of repeating."""


ON_EXHAUSTED = ("repeat", "fail")


def _domain_key(seed: int, domain: str) -> int:
    h = hashlib.sha256(f"{seed}:{domain}".encode()).digest()
    return int.from_bytes(h[:8], "little")


@dataclass
class _Domain:
    name: str
    shards: list  # 1-D arrays (memmaps)
    starts: np.ndarray  # first global chunk id of each shard
    chunks: int

    def chunk(self, cid: int, seq_len: int) -> np.ndarray:
        s = int(np.searchsorted(self.starts, cid, side="right")) - 1
        off = (cid - int(self.starts[s])) * seq_len
        return self.shards[s][off : off + seq_len]


class MixtureLoader:
    def __init__(self, shards: dict[str, list], schedule: Schedule, seed: int = 0, on_exhausted: str = "repeat",
                 max_chunks: dict[str, int] | None = None, start_cursor: dict[str, list] | None = None):
        """``max_chunks``: use at most this many chunks (unique sequences) of a domain — a
        unique-data budget; later epochs repeat them. ``start_cursor``: where each domain's
        stream starts (``{domain: [epoch, position]}``, e.g. where a previous growth stage
        stopped, so the next stage sees fresh data)."""
        if on_exhausted not in ON_EXHAUSTED:
            raise ValueError(f"on_exhausted must be one of {ON_EXHAUSTED}, got {on_exhausted!r}")
        self.schedule = schedule
        self.seq_len = schedule.seq_len
        self.seed = int(seed)
        self.on_exhausted = on_exhausted
        self.domains: dict[str, _Domain] = {}
        for name in sorted(shards):
            arrs = list(shards[name])
            counts = [len(a) // self.seq_len for a in arrs]
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) if arrs else np.zeros(0, np.int64)
            n = int(sum(counts))
            if max_chunks and name in max_chunks:
                n = min(n, max(1, int(max_chunks[name])))
            self.domains[name] = _Domain(name, arrs, starts, n)
        used = {d for p in schedule.phases for d, w in p.weights.items() if w > 0}
        for d in sorted(used):
            if d not in self.domains:
                raise ValueError(f"the schedule uses domain {d!r}, which the token dataset lacks")
            if self.domains[d].chunks == 0:
                raise ValueError(f"domain {d!r} has fewer than seq_len={self.seq_len} tokens: nothing to train on")
        self._perm_cache: dict[tuple[str, int], tuple[int, int]] = {}
        self.start_cursor = {d: [int(c[0]), int(c[1])] for d, c in (start_cursor or {}).items() if d in self.domains}
        for d, (ep, pos) in self.start_cursor.items():
            if ep < 0 or not 0 <= pos <= self.domains[d].chunks:
                raise ValueError(f"start cursor {[ep, pos]} of domain {d!r} is outside its {self.domains[d].chunks} chunks")
        self.reset()

    # ------------------------------------------------------------------ state

    def reset(self) -> None:
        self.seq_index = 0
        self.phase_counts = [{d: 0 for d in self.domains} for _ in self.schedule.phases]
        self.cursor = {d: list(self.start_cursor.get(d, [0, 0])) for d in self.domains}  # epoch, position
        self.repeated = {d: 0 for d in self.domains}  # sequences drawn from an epoch >= 1

    def state_dict(self) -> dict:
        return {"seq_index": self.seq_index, "phase_counts": [dict(c) for c in self.phase_counts],
                "cursor": {d: list(c) for d, c in self.cursor.items()}, "repeated": dict(self.repeated),
                "seed": self.seed, "seq_len": self.seq_len,
                "chunks": {d: dom.chunks for d, dom in self.domains.items()}}

    def load_state_dict(self, state: dict) -> None:
        mine = {d: dom.chunks for d, dom in self.domains.items()}
        if state.get("chunks") != mine or state.get("seq_len") != self.seq_len or state.get("seed") != self.seed:
            raise ValueError("loader state does not match this token dataset / seq_len / seed: "
                             f"checkpoint has chunks={state.get('chunks')} seq_len={state.get('seq_len')} "
                             f"seed={state.get('seed')}, this run has chunks={mine} seq_len={self.seq_len} seed={self.seed}")
        self.seq_index = int(state["seq_index"])
        self.phase_counts = [{d: int(c.get(d, 0)) for d in self.domains} for c in state["phase_counts"]]
        self.cursor = {d: [int(x) for x in state["cursor"][d]] for d in self.domains}
        self.repeated = {d: int(state["repeated"][d]) for d in self.domains}

    # ------------------------------------------------------------------ planning

    def plan(self) -> dict:
        """Sequences each domain will supply over the whole schedule (an upper bound: the
        round-robin gives ``w·n`` rounded up or down), and how many of those are repeats.

        Closed form, so a run configured to fail on exhaustion fails before training, not hours in.
        """
        need = {d: 0 for d in self.domains}
        for ph in self.schedule.phases:
            for d, w in ph.weights.items():
                if w > 0:
                    need[d] += min(ph.sequences, math.ceil(w * ph.sequences - 1e-9))
        out = {}
        for d in need:
            ep, pos = self.start_cursor.get(d, [0, 0])
            fresh = max(0, self.domains[d].chunks - pos) if ep == 0 else 0  # not yet seen by earlier stages
            out[d] = {"sequences": need[d], "tokens": need[d] * self.seq_len,
                      "unique_tokens": self.domains[d].chunks * self.seq_len, "fresh_tokens": fresh * self.seq_len,
                      "repeated_sequences": max(0, need[d] - fresh)}
        return out

    def check_plan(self) -> dict:
        plan = self.plan()
        if self.on_exhausted == "fail":
            short = {d: p for d, p in plan.items() if p["repeated_sequences"] > 0}
            if short:
                msg = "; ".join(f"{d}: needs {p['tokens']:,} tokens but has {p['fresh_tokens']:,} unique left"
                                for d, p in short.items())
                raise DataExhausted(f"not enough unique tokens ({msg}). Lower those weights, add data, "
                                    "or set on_exhausted='repeat' to repeat them (counted in the summary)")
        return plan

    # ------------------------------------------------------------------ sampling

    @staticmethod
    def _pick(weights: dict, counts: dict, n: int) -> str:
        best, best_gap = None, -math.inf
        for d in sorted(weights):
            w = weights[d]
            if w <= 0:
                continue
            gap = w * (n + 1) - counts.get(d, 0)
            if gap > best_gap + 1e-12:
                best, best_gap = d, gap
        return best

    def _perm(self, d: str, epoch: int) -> tuple[int, int]:
        key = (d, epoch)
        if key not in self._perm_cache:
            c = self.domains[d].chunks
            rng = np.random.default_rng([_domain_key(self.seed, d), epoch])
            a = int(rng.integers(1, max(2, c))) if c > 1 else 1
            while math.gcd(a, c) != 1:
                a += 1
            self._perm_cache[key] = (a, int(rng.integers(0, c)))
        return self._perm_cache[key]

    def _next_chunk(self, d: str) -> int:
        dom = self.domains[d]
        epoch, pos = self.cursor[d]
        if pos >= dom.chunks:
            if self.on_exhausted == "fail":
                raise DataExhausted(f"domain {d!r} ran out of unique tokens after {dom.chunks * self.seq_len:,} "
                                    "(on_exhausted='fail')")
            epoch, pos = epoch + 1, 0
        a, b = self._perm(d, epoch)
        cid = (a * pos + b) % dom.chunks
        self.cursor[d] = [epoch, pos + 1]
        if epoch > 0:
            self.repeated[d] += 1
        return cid

    def next_sequences(self, n: int) -> list[tuple[str, int]]:
        """The next ``n`` (domain, chunk id) of the global stream; advances the state."""
        out = []
        for _ in range(n):
            pi = self.schedule.phase_index(self.seq_index)
            ph = self.schedule.phases[pi]
            counts = self.phase_counts[pi]
            d = self._pick(ph.weights, counts, self.seq_index - self.schedule.phase_start(pi))
            counts[d] += 1
            out.append((d, self._next_chunk(d)))
            self.seq_index += 1
        return out

    def materialize(self, refs: list[tuple[str, int]]) -> np.ndarray:
        """Token ids (int64, shape [len(refs), seq_len]) for some of a batch's sequences."""
        out = np.empty((len(refs), self.seq_len), dtype=np.int64)
        for i, (d, cid) in enumerate(refs):
            out[i] = self.domains[d].chunk(cid, self.seq_len)
        return out

    def next_batch(self, global_seqs: int, rank: int = 0, world: int = 1) -> tuple[np.ndarray, list[tuple[str, int]]]:
        """One global batch: this rank's contiguous slice (tokens) and the whole batch's refs."""
        if global_seqs % world:
            raise ValueError(f"global batch of {global_seqs} sequences does not split over {world} ranks")
        refs = self.next_sequences(global_seqs)
        per = global_seqs // world
        return self.materialize(refs[rank * per : (rank + 1) * per]), refs

    # ------------------------------------------------------------------ accounting

    def tokens_by_phase(self) -> list[dict]:
        return [{"name": ph.name, "tokens": {d: c * self.seq_len for d, c in counts.items() if c}}
                for ph, counts in zip(self.schedule.phases, self.phase_counts)]
