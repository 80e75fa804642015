"""One YAML file describes a curate-and-grow run; :func:`load_config` validates it and maps it to
the pipeline's parameters (``pipelines/curate_and_grow.py``).

Sections and keys (every key optional; unset keys keep the pipeline's defaults)::

    work: s3://bucket/seedbed/runs/2026-11   # where every stage writes; a rerun resumes here
    data:
      pool: [s3://bucket/pool/]               # files or prefixes BETR selects from
      benchmarks: s3://bucket/benchmarks/     # benchmark examples (targets and evaluation)
      domains: {web: s3://…, code: s3://…}    # the other domains mixed with the BETR selection
    betr:    {domain, target_set, target_mode, per_benchmark, sample_size, heldout_size, keep_rate,
              keep_rates, top_k, aggregation, positive_pct, fasttext, embed_model, embed_batch_size,
              embed_max_length, embed_device, embed_dtype, docs_per_shard, seed}
    tokens:  {tokenizer, vocab_size, valid_fraction}
    sweep:   {domains, presets, tokens, heldout_presets, heldout_tokens, n_mixtures, min_weight,
              eval_points, settings, targets, optimize_target, max_repeats, upsample_domains,
              upsample_fraction}
    series:  {presets, tokens, tokens_per_param, lr, fixed_data, basis, width, depth, baselines, settings}
    run:     {mode, image, runtime, runtime_kind, nodes, procs_per_node, gpus_per_node, cpu_per_node,
              memory_per_node, shm_size, node_selector, tolerations, timeout_s}
    eval:    {tasks, limit, seq_len, batch_size, device}

h* is computed for the series' largest model at its token target (the model the mixture is
for), and ``mixture`` / ``upsample`` of ``series.settings`` come from the fit, so they may not be
set by hand. Every problem is reported at once, each naming its key.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from seedbed import store
from seedbed.params import csv_ints, csv_list


class ConfigError(ValueError):
    pass


def _csv(v) -> str:
    return ",".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)


def _json(v) -> str:
    return json.dumps(v)


#: section → key → (pipeline parameter, converter, expected YAML type(s))
SCHEMA: dict[str, dict[str, tuple]] = {
    "data": {"pool": ("pool_uris", _csv, (list, str)), "benchmarks": ("benchmarks_uri", str, str),
             "domains": ("domains_json", _json, dict)},
    "betr": {"domain": ("betr_domain", str, str), "target_set": ("target_set", str, str),
             "target_mode": ("target_mode", str, str), "per_benchmark": ("per_benchmark", int, int),
             "sample_size": ("sample_size", int, int), "heldout_size": ("heldout_size", int, int),
             "keep_rate": ("keep_rate", float, (int, float)), "keep_rates": ("keep_rates", _csv, (list, str)),
             "top_k": ("top_k", int, int), "aggregation": ("aggregation", str, str),
             "positive_pct": ("positive_pct", float, (int, float)), "fasttext": ("fasttext_params", _json, dict),
             "embed_model": ("embed_model", str, str), "embed_batch_size": ("embed_batch_size", int, int),
             "embed_max_length": ("embed_max_length", int, int), "embed_device": ("embed_device", str, str),
             "embed_dtype": ("embed_dtype", str, str), "docs_per_shard": ("docs_per_shard", int, int),
             "seed": ("seed", int, int)},
    "tokens": {"tokenizer": ("tokenizer", str, str), "vocab_size": ("vocab_size", int, int),
               "valid_fraction": ("valid_fraction", float, (int, float))},
    "sweep": {"domains": ("sweep_domains", _csv, (list, str)), "presets": ("sweep_presets", _csv, (list, str)),
              "tokens": ("sweep_tokens", _csv, (list, str, int)),
              "heldout_presets": ("sweep_heldout_presets", _csv, (list, str)),
              "heldout_tokens": ("sweep_heldout_tokens", _csv, (list, str, int)),
              "n_mixtures": ("n_mixtures", int, int), "min_weight": ("min_weight", float, (int, float)),
              "eval_points": ("eval_points", int, int), "settings": ("sweep_settings", _json, dict),
              "targets": ("fit_targets", _csv, (list, str)), "optimize_target": ("optimize_target", str, str),
              "max_repeats": ("max_repeats", float, (int, float)),
              "upsample_domains": ("upsample_domains", _csv, (list, str)),
              "upsample_fraction": ("upsample_fraction", float, (int, float))},
    "series": {"presets": ("series", _csv, (list, str)), "tokens": ("series_tokens", _csv, (list, str, int)),
               "tokens_per_param": ("tokens_per_param", float, (int, float)), "lr": ("lr", _csv, (list, str, float)),
               "fixed_data": ("fixed_data", bool, bool), "basis": ("basis", str, str), "width": ("width", str, str),
               "depth": ("depth", str, str), "baselines": ("scratch_baselines", bool, bool),
               "settings": ("train_settings", _json, dict)},
    "run": {"mode": ("mode", str, str), "image": ("image", str, str), "runtime": ("runtime", str, str),
            "runtime_kind": ("runtime_kind", str, str),
            "nodes": ("nodes", int, int), "procs_per_node": ("procs_per_node", int, int),
            "gpus_per_node": ("gpus_per_node", int, int), "cpu_per_node": ("cpu_per_node", str, (str, int)),
            "memory_per_node": ("memory_per_node", str, str), "shm_size": ("shm_size", str, str),
            "node_selector": ("node_selector_json", _json, dict), "tolerations": ("tolerations_json", _json, list),
            "timeout_s": ("train_timeout_s", int, int)},
    "eval": {"tasks": ("eval_tasks", _csv, (list, str)), "limit": ("eval_limit", int, int),
             "seq_len": ("eval_seq_len", int, int), "batch_size": ("eval_batch_size", int, int),
             "device": ("eval_device", str, str)},
}
TOP = ("work", *SCHEMA)
#: the config keys of the mixture fit's choices, as :func:`seedbed.mixture.sweep.check_choices` names them
SWEEP_KEYS = {"domains": "sweep.domains", "targets": "sweep.targets", "optimize_target": "sweep.optimize_target",
              "upsample_domains": "sweep.upsample_domains"}


def read_config(path: str) -> dict:
    try:
        raw = yaml.safe_load(store.read_text(path))
    except store.NotFound:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections ({', '.join(TOP)}), got {type(raw).__name__}")
    return raw


def to_params(raw: dict, base_dir: Path | None = None) -> dict:
    """The pipeline parameters a config sets. Relative local paths are resolved against ``base_dir``."""
    problems, p = [], {}
    for key in raw:
        if key not in TOP:
            problems.append(f"unknown section {key!r}; known: {', '.join(TOP)}")
    if "work" in raw:
        p["work_uri"] = _path(str(raw["work"]), base_dir)
    for section, keys in SCHEMA.items():
        sec = raw.get(section) or {}
        if not isinstance(sec, dict):
            problems.append(f"{section}: expected a mapping, got {type(sec).__name__}")
            continue
        for key, value in sec.items():
            if key not in keys:
                problems.append(f"unknown key {section}.{key}; known: {', '.join(keys)}")
                continue
            param, conv, types = keys[key]
            types = types if isinstance(types, tuple) else (types,)
            if isinstance(value, bool) and bool not in types or not isinstance(value, types):
                problems.append(f"{section}.{key}: expected {' or '.join(t.__name__ for t in types)}, "
                                f"got {value!r}")
                continue
            p[param] = conv(value)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    for param in ("pool_uris", "benchmarks_uri"):
        if param in p:
            p[param] = ",".join(_path(u, base_dir) for u in csv_list(p[param]))
    if "domains_json" in p:
        p["domains_json"] = json.dumps({d: _path(str(u), base_dir) for d, u in json.loads(p["domains_json"]).items()})
    return p


def _path(uri: str, base_dir: Path | None) -> str:
    if store.is_s3(uri) or base_dir is None or Path(uri).is_absolute():
        return uri
    return str((base_dir / uri).resolve())


def check_params(p: dict):
    """Cross-field checks that need no data: every problem at once, naming the config key.
    Returns the growth plan (its last stage is the model h* is computed for)."""
    from seedbed.growth.plan import plan_series
    from seedbed.growth.series import check_stage_settings, parse_lr
    from seedbed.mixture.sweep import check_choices, design_sweep

    problems = []
    domains = json.loads(p.get("domains_json") or "{}")
    betr = p.get("betr_domain", "betr")
    if not domains:
        problems.append("data.domains: give at least one domain to mix with the BETR selection")
    if betr in domains:
        problems.append(f"betr.domain {betr!r} is also a name in data.domains; pick another")
    names = sorted({*domains, betr})
    mixed = csv_list(p.get("sweep_domains", "")) or names
    problems += check_choices(names, mixed, csv_list(p.get("fit_targets", "mean")), p.get("optimize_target", "mean"),
                              csv_list(p.get("upsample_domains", "")), SWEEP_KEYS)
    train = json.loads(p.get("train_settings") or "{}")
    for k in ("mixture", "upsample"):
        if k in train:
            problems.append(f"series.settings.{k} is set by the mixture fit; remove it")
    sweep = json.loads(p.get("sweep_settings") or "{}")
    try:
        design_sweep(mixed, csv_list(p["sweep_presets"]), csv_ints(p["sweep_tokens"]), sweep, p.get("vocab_size", 4096),
                     p.get("n_mixtures") or None, p.get("min_weight", 0.1), p.get("eval_points", 5),
                     csv_list(p.get("sweep_heldout_presets", "")), csv_ints(p.get("sweep_heldout_tokens", "")))
    except (ValueError, KeyError) as e:
        problems.append(f"sweep: {e}")
    try:
        plan = plan_series(csv_list(p["series"]), vocab_size=p.get("vocab_size", 4096),
                           tokens=csv_ints(p.get("series_tokens", "")) or None,
                           tokens_per_param=p.get("tokens_per_param", 40.0),
                           lr=parse_lr(p.get("lr", "preset")), fixed_data=p.get("fixed_data", False),
                           basis=p.get("basis", "auto"), width=p.get("width", "zero"), depth=p.get("depth", "identity"))
        # the fit supplies the mixture; any mixture over the swept domains checks the rest
        check_stage_settings(plan, {**train, "mixture": {d: 1 / len(mixed) for d in mixed}})
    except (ValueError, KeyError) as e:
        problems.append(f"series: {e}")
        plan = None
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    return plan


def with_domain(domains_json: str, name: str, corpus_uri: str) -> str:
    """``domains_json`` with one more domain; a name already taken is an error."""
    domains = json.loads(domains_json or "{}")
    if name in domains:
        raise ConfigError(f"domain {name!r} is already in {sorted(domains)}")
    return json.dumps({**domains, name: corpus_uri})
