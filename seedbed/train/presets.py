"""Llama model presets: one table for every size seedbed trains (SPEC §4), built with HF transformers.

The paper's series (1B/2B/4B/8B: hidden, FFN, layers, heads) and tiny CPU sizes for tests and
laptop runs live in :data:`PRESETS`. A model is a ``LlamaConfig`` + ``LlamaForCausalLM`` with a
random init — nothing is downloaded — so any Hugging Face tool loads what ``save_pretrained``
writes. Embeddings are untied from the LM head (growth copies them without division, SPEC §4).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


class PresetError(ValueError):
    """An unknown preset or an inconsistent model shape."""


@dataclass(frozen=True)
class Preset:
    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int | None = None  # None = multi-head attention (kv_heads == heads)
    max_context: int = 4096
    rope_theta: float = 500_000.0
    lr: float | None = None  # SPEC §4: the learning rate for this size (None = set in the run config)
    nominal_params: float | None = None  # the size a name stands for (1B = 1e9): SPEC §4's FLOPs accounting

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


#: name → shape. The 1B–8B rows are SPEC §4's table (learning rates from the same section).
PRESETS: dict[str, Preset] = {
    # tiny CPU sizes: seconds per step on a laptop core; head_dim 32 and 2 query heads per kv head
    # throughout, so each grows into the next (SPEC §4: heads are added, head_dim never changes)
    "tiny-64": Preset(hidden=64, ffn=192, layers=2, heads=2, kv_heads=1, max_context=1024, rope_theta=10_000.0, lr=4e-3),
    "tiny-128": Preset(hidden=128, ffn=384, layers=4, heads=4, kv_heads=2, max_context=1024, rope_theta=10_000.0, lr=3e-3),
    "tiny-256": Preset(hidden=256, ffn=768, layers=4, heads=8, kv_heads=4, max_context=2048, rope_theta=10_000.0, lr=2e-3),
    # the paper's series
    "1b": Preset(hidden=2048, ffn=7168, layers=18, heads=16, lr=1.5e-3, nominal_params=1e9),
    "2b": Preset(hidden=2560, ffn=8960, layers=22, heads=20, lr=1.1e-3, nominal_params=2e9),
    "4b": Preset(hidden=3200, ffn=11200, layers=27, heads=25, lr=7.0e-4, nominal_params=4e9),
    "8b": Preset(hidden=4096, ffn=14336, layers=33, heads=32, lr=3.0e-4, nominal_params=8e9),
}


def get_preset(name: str, overrides: dict | None = None) -> Preset:
    key = str(name).lower()
    if key not in PRESETS:
        raise PresetError(f"unknown model preset {name!r}; known: {', '.join(PRESETS)}")
    p = PRESETS[key]
    if overrides:
        bad = set(overrides) - {f.name for f in dataclasses.fields(Preset)}
        if bad:
            raise PresetError(f"unknown model field(s) {sorted(bad)} in overrides for preset {name!r}")
        p = dataclasses.replace(p, **overrides)
    validate(p, name)
    return p


def validate(p: Preset, name: str = "model") -> None:
    if min(p.hidden, p.ffn, p.layers, p.heads) < 1:
        raise PresetError(f"{name}: hidden, ffn, layers and heads must be positive")
    if p.hidden % p.heads:
        raise PresetError(f"{name}: hidden {p.hidden} is not divisible by heads {p.heads}")
    kv = p.kv_heads or p.heads
    if p.heads % kv:
        raise PresetError(f"{name}: heads {p.heads} is not divisible by kv_heads {kv}")


def llama_config(p: Preset, vocab_size: int, eos_id: int = 0, dtype: str | None = None):
    """The HF ``LlamaConfig`` for a preset and a tokenizer's vocabulary."""
    from transformers import LlamaConfig

    if vocab_size < 2:
        raise PresetError(f"vocab_size must be >= 2, got {vocab_size}")
    return LlamaConfig(
        vocab_size=int(vocab_size),
        hidden_size=p.hidden,
        intermediate_size=p.ffn,
        num_hidden_layers=p.layers,
        num_attention_heads=p.heads,
        num_key_value_heads=p.kv_heads or p.heads,
        head_dim=p.head_dim,
        max_position_embeddings=p.max_context,
        rope_theta=p.rope_theta,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        attention_dropout=0.0,
        initializer_range=0.02,
        use_cache=False,
        **({"torch_dtype": dtype} if dtype else {}),
    )


def build_model(p: Preset, vocab_size: int, eos_id: int = 0, seed: int = 0):
    """A randomly initialised ``LlamaForCausalLM`` (deterministic from ``seed``)."""
    import torch
    from transformers import LlamaForCausalLM

    cfg = llama_config(p, vocab_size, eos_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return model


def param_count(p: Preset, vocab_size: int, embeddings: bool = True) -> int:
    """Parameters of the model a preset builds (exact: matches ``sum(p.numel())``)."""
    kv = p.kv_heads or p.heads
    attn = p.hidden * p.hidden * 2 + p.hidden * kv * p.head_dim * 2  # q,o + k,v
    mlp = 3 * p.hidden * p.ffn
    per_layer = attn + mlp + 2 * p.hidden  # two RMSNorms
    n = p.layers * per_layer + p.hidden  # final norm
    if embeddings:
        n += 2 * vocab_size * p.hidden  # untied input embedding + LM head
    return n


def flops_per_token(p: Preset, vocab_size: int) -> float:
    """Training FLOPs per token, 6·N with N the non-embedding parameters plus the LM head
    (the usual MFU convention: the input embedding is a lookup, the head is a matmul)."""
    return 6.0 * (param_count(p, vocab_size, embeddings=False) + vocab_size * p.hidden)
