"""The training run's configuration: one JSON document, validated before anything runs.

Everything that differs between a laptop and a GPU cluster — device, dtype, batch sizes, ZeRO
stage, peak FLOPs — is a field here, so the same entrypoint runs unchanged on both.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from seedbed import store
from seedbed.fields import check_fields
from seedbed.train.presets import PresetError, get_preset
from seedbed.train.schedule import LR_SCHEDULES, ScheduleError

ZERO_STAGES = (0, 1, 2, 3)
DTYPES = ("auto", "fp32", "bf16", "fp16")


class ConfigError(ValueError):
    """A training config that cannot run: unknown fields, impossible sizes, bad values."""


@dataclass
class TrainConfig:
    tokens_uri: str  # token dataset (seedbed.train.tokens)
    out_uri: str  # checkpoints, metrics, final model
    mixture: dict  # domain → weight (the base phase)
    total_tokens: int
    name: str = "run"
    preset: str = "tiny-64"
    model_overrides: dict = field(default_factory=dict)
    init_from: str | None = None  # an HF model dir to start from (staged growth) instead of random init
    data_cursor_from: str | None = None  # a finished run's out_uri: continue its data streams (fresh data)
    max_unique_tokens: int | None = None  # cap on unique tokens (split by planned domain share); then repeat
    upsample: dict | None = None  # {"weights": {...}, "fraction": 0.15} — SPEC §3 end-of-training window
    phases: list | None = None  # explicit phases instead of mixture+upsample
    on_exhausted: str = "repeat"  # "repeat" (counted) | "fail"
    seq_len: int = 256
    global_batch_tokens: int = 8192
    micro_batch_size: int = 8  # sequences per process per forward
    lr: float | None = None  # None → the preset's learning rate (SPEC §4), else required
    lr_schedule: str = "cosine"  # cosine | constant | wsd
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    decay_fraction: float = 0.2  # wsd only
    betas: tuple = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    zero_stage: int = 1
    dtype: str = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 0
    checkpoint_every: int = 100  # optimizer steps; 0 = only at the end
    keep_checkpoints: int = 2
    log_every: int = 1
    eval_every: int = 0  # optimizer steps between held-out loss evaluations (0 = only at the end)
    eval_tokens: int = 65_536  # held-out tokens per domain per evaluation
    peak_flops: float | None = None  # per device; None = known GPU table, or no MFU on CPU
    progress: bool = True
    max_steps: int | None = None  # stop early (debugging / crash tests); the schedule is unchanged
    activation_checkpointing: bool = False

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        check_fields(cls, d, "training config", ConfigError)
        cfg = cls(**d)
        cfg.validate()
        return cfg

    @classmethod
    def load(cls, uri: str) -> "TrainConfig":
        try:
            raw = store.read_json(uri)
        except store.NotFound:
            raise ConfigError(f"training config {uri} does not exist") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"training config {uri} is not valid JSON: {e}") from None
        return cls.from_dict(raw)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    def save(self, uri: str) -> None:
        store.write_json(uri, self.to_dict())

    # ------------------------------------------------------------------ checks

    def validate(self) -> None:
        try:
            p = get_preset(self.preset, self.model_overrides)
        except PresetError as e:
            raise ConfigError(str(e)) from None
        for k in ("total_tokens", "seq_len", "global_batch_tokens", "micro_batch_size", "log_every"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{k} must be a positive integer, got {v!r}")
        if self.seq_len > p.max_context:
            raise ConfigError(f"seq_len {self.seq_len} is larger than preset {self.preset!r}'s context of "
                              f"{p.max_context} tokens (raise model_overrides.max_context or shorten seq_len)")
        if self.global_batch_tokens % self.seq_len:
            raise ConfigError(f"global_batch_tokens {self.global_batch_tokens} is not a multiple of seq_len {self.seq_len}")
        if self.total_tokens < self.global_batch_tokens:
            raise ConfigError(f"total_tokens {self.total_tokens} is less than one global batch "
                              f"({self.global_batch_tokens} tokens)")
        if self.zero_stage not in ZERO_STAGES:
            raise ConfigError(f"zero_stage must be one of {ZERO_STAGES}, got {self.zero_stage!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.on_exhausted not in ("repeat", "fail"):
            raise ConfigError(f"on_exhausted must be 'repeat' or 'fail', got {self.on_exhausted!r}")
        if self.resolved_lr() <= 0:
            raise ConfigError(f"lr must be > 0, got {self.resolved_lr()}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.max_unique_tokens is not None and (not isinstance(self.max_unique_tokens, int) or self.max_unique_tokens < self.seq_len):
            raise ConfigError(f"max_unique_tokens must be an integer >= seq_len, got {self.max_unique_tokens!r}")
        if self.max_unique_tokens is not None and self.on_exhausted == "fail":
            raise ConfigError("max_unique_tokens caps the data so it repeats: it needs on_exhausted='repeat'")
        if self.keep_checkpoints < 1:
            raise ConfigError("keep_checkpoints must be >= 1")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be auto, cpu or cuda, got {self.device!r}")
        from seedbed.train.schedule import build_schedule

        try:  # weights and durations, before any process starts
            build_schedule(self.total_steps * self.global_batch_sequences, self.seq_len, self.mixture,
                           None, self.upsample, self.phases)
        except ScheduleError as e:
            raise ConfigError(str(e)) from None

    def resolved_lr(self) -> float:
        if self.lr is not None:
            return float(self.lr)
        p = get_preset(self.preset, self.model_overrides)
        if p.lr is None:
            raise ConfigError(f"preset {self.preset!r} has no default learning rate: set lr")
        return p.lr

    # ------------------------------------------------------------------ derived sizes

    @property
    def global_batch_sequences(self) -> int:
        return self.global_batch_tokens // self.seq_len

    @property
    def total_steps(self) -> int:
        """Optimizer steps: the token budget in whole global batches."""
        return self.total_tokens // self.global_batch_tokens

    def grad_accum(self, world_size: int) -> int:
        per_step = self.micro_batch_size * world_size
        if self.global_batch_sequences % per_step:
            raise ConfigError(
                f"global batch of {self.global_batch_sequences} sequences ({self.global_batch_tokens} tokens) is not "
                f"a multiple of micro_batch_size {self.micro_batch_size} × {world_size} processes; pick a "
                f"global_batch_tokens that is a multiple of {per_step * self.seq_len}")
        return self.global_batch_sequences // per_step

    def fingerprint(self) -> dict:
        """What a checkpoint must agree on to be resumed (the rest may change, e.g. logging)."""
        keys = ("tokens_uri", "preset", "model_overrides", "init_from", "data_cursor_from", "max_unique_tokens", "mixture", "upsample", "phases",
                "on_exhausted", "seq_len", "global_batch_tokens", "total_tokens", "lr", "lr_schedule",
                "warmup_steps", "min_lr_ratio", "decay_fraction", "betas", "eps", "weight_decay", "seed", "zero_stage")
        d = self.to_dict()
        return {k: d[k] for k in keys}

    def fingerprint_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.fingerprint(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_run_config(tokens_uri: str, out_uri: str, overrides: dict, config_uri: str | None = None) -> str:
    """Validate a run's config against its token dataset and write it next to the run.

    ``overrides`` are TrainConfig fields (``mixture``, ``preset``, ``total_tokens``...);
    ``tokens_uri``/``out_uri`` are set here. Returns the config's URI (default ``<out>/train.json``).
    """
    from seedbed.train.schedule import build_schedule
    from seedbed.train.tokens import open_tokens

    if not isinstance(overrides, dict):
        raise ConfigError(f"run settings must be a JSON object, got {type(overrides).__name__}")
    clash = {"tokens_uri", "out_uri"} & set(overrides)
    if clash:
        raise ConfigError(f"{sorted(clash)} are set by the pipeline; remove them from the run settings")
    cfg = TrainConfig.from_dict({**overrides, "tokens_uri": tokens_uri, "out_uri": out_uri})
    domains = open_tokens(tokens_uri).domains
    try:
        build_schedule(cfg.total_steps * cfg.global_batch_sequences, cfg.seq_len, cfg.mixture, domains,
                       cfg.upsample, cfg.phases)
    except ScheduleError as e:
        raise ConfigError(str(e)) from None
    uri = config_uri or store.join(out_uri, "train.json")
    cfg.save(uri)
    return uri
