"""Growth operators (SPEC §4): grow a trained Hugging Face Llama into a wider and/or deeper one.

Pure functions on ``LlamaForCausalLM`` state dicts and ``LlamaConfig``\\ s (torch only, no kfp).
Width grows first, then depth.

Width (``width=``)
    ``fpi``  bert2BERT function-preserving initialisation. One hidden-unit map ``g`` (new unit →
             source unit; the first ``D_old`` units are the identity, then whole rounds
             ``i mod D_old``, and for a non-integer ratio a seeded random subset without
             replacement) is shared by everything that reads or writes the residual stream:
             the embedding, q/k/v and gate/up input columns, o_proj and down_proj output rows, every
             RMSNorm weight and the LM head's input columns. Out-dimension copies are plain copies;
             in-dimension copies are divided by the copy count of their source unit. The embedding
             is copied without division (the LM head is a separate, untied matrix whose input
             columns are divided). Attention grows by whole heads (head_dim and RoPE untouched,
             nothing is permuted inside a head), per kv group: new kv heads copy kv heads, the q heads
             of a new group copy the q heads of its source group, and o_proj's input columns of a
             copied head are divided by that head's copy count. FFN units grow the same way
             (gate/up rows copied, down_proj columns divided). Exact (up to float rounding) when the
             hidden size grows by an integer factor; otherwise RMSNorm sees a different mean square
             and a :class:`GrowthWarning` says the result is not function preserving. Head and FFN
             ratios may be anything: the heads/units are summed, so unequal copy counts stay exact.
             Note: copies are exact duplicates and receive identical gradients, so plain training
             never separates them; ``noise_std > 0`` adds N(0, noise_std²) to every weight entry in
             a new row or column (breaks the symmetry, no longer exact).
    ``aki``  bert2BERT advanced knowledge initialisation: as ``fpi``, but in layer ``l`` the new
             out-units (new rows of every projection: new heads, new FFN units, new residual dims
             written by o_proj/down_proj) are taken from layer ``l + 1`` (the top layer uses FPI);
             embeddings, norms and LM head use FPI. Not function preserving (the paper's choice).
    ``zero`` exact at any ratio. New residual dims are zero in the embedding and in the output rows
             of o_proj/down_proj, so they stay zero through the network; old RMSNorm weights are
             scaled by √(D_old/D_new) and ``rms_norm_eps`` by D_old/D_new (see :func:`grown_config`);
             new norm weights are the mean |old| (non-zero) and new input columns (q/k/v, gate/up,
             LM head) are seeded N(0, σ²), σ = ``noise_std`` or the target's ``initializer_range``
             (any value is exact because those dims are zero; non-zero so the new dims get
             gradient). New heads and FFN units have random input rows and zero output columns
             (o_proj/down_proj): exact and trainable.

Depth (``depth=``), layer ``i`` of the target copies source layer ``m[i]``:
    ``stack``       m = 0..L-1, 0..L-1, … truncated to the target count;
    ``interpolate`` m = floor(i·L/L_new): 0,0,1,1,…;
    ``identity``    the interpolate map, but each repeated copy has o_proj and down_proj zeroed, so
                    it adds nothing to the residual: exact. Its other weights get gradient once
                    o_proj/down_proj have moved off zero (from the second optimizer step on).

A tied source (``tie_word_embeddings``) is untied first (the LM head becomes a copy of the
embedding); the target must be untied.
"""

from __future__ import annotations

import copy
import math
import re
import shutil
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = [
    "GrowthError",
    "GrowthWarning",
    "WIDTH_METHODS",
    "DEPTH_METHODS",
    "check_growable",
    "grown_config",
    "layer_map",
    "is_exact",
    "grow_state_dict",
    "grow_model",
    "grow_saved",
]

WIDTH_METHODS = ("fpi", "aki", "zero")
DEPTH_METHODS = ("stack", "interpolate", "identity")

#: tokenizer files a saved HF model dir may hold (copied by :func:`grow_saved`)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)

_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
# suffix → (out axis kind, in axis kind); "vec" = a norm weight over the residual
_LAYER_PARAMS = {
    "self_attn.q_proj.weight": ("q", "res"),
    "self_attn.k_proj.weight": ("kv", "res"),
    "self_attn.v_proj.weight": ("kv", "res"),
    "self_attn.o_proj.weight": ("res", "q"),
    "mlp.gate_proj.weight": ("ffn", "res"),
    "mlp.up_proj.weight": ("ffn", "res"),
    "mlp.down_proj.weight": ("res", "ffn"),
    "input_layernorm.weight": ("vec", "res"),
    "post_attention_layernorm.weight": ("vec", "res"),
}
_WRITERS = ("self_attn.o_proj.weight", "mlp.down_proj.weight")  # write the residual stream
_IGNORED_KEYS = ("model.rotary_emb.inv_freq",)  # a buffer older checkpoints stored


class GrowthError(ValueError):
    """A pair of configs that cannot be grown into each other, a bad state dict or an unknown method."""


class GrowthWarning(UserWarning):
    """The growth runs but is not what it may look like (e.g. FPI at a non-integer ratio is not exact)."""


# ----------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class Shape:
    vocab: int
    hidden: int
    ffn: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int

    @property
    def group(self) -> int:
        return self.heads // self.kv_heads


def shape_of(cfg, name: str = "config") -> Shape:
    """The dimensions growth cares about, read from a ``LlamaConfig``."""
    try:
        hidden, heads = int(cfg.hidden_size), int(cfg.num_attention_heads)
        kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
        hd = int(getattr(cfg, "head_dim", None) or (hidden // heads if heads else 0))
        s = Shape(int(cfg.vocab_size), hidden, int(cfg.intermediate_size), int(cfg.num_hidden_layers), heads, kv, hd)
    except (AttributeError, TypeError, ValueError) as e:
        raise GrowthError(f"{name}: not a Llama config ({type(e).__name__}: {e})") from None
    if min(s.vocab, s.hidden, s.ffn, s.layers, s.heads, s.kv_heads, s.head_dim) < 1:
        raise GrowthError(f"{name}: every dimension must be positive, got {asdict(s)}")
    if s.heads % s.kv_heads:
        raise GrowthError(f"{name}: {s.heads} attention heads are not divisible by {s.kv_heads} kv heads")
    if s.heads * s.head_dim != s.hidden:
        raise GrowthError(
            f"{name}: hidden/heads inconsistent: hidden_size {s.hidden} != heads {s.heads} × head_dim {s.head_dim}"
        )
    return s


def _rope(cfg) -> dict:
    out = dict(getattr(cfg, "rope_parameters", None) or {})
    for k in ("rope_theta", "rope_scaling"):  # older transformers keep these as attributes
        v = getattr(cfg, k, None)
        if v is not None and k not in out:
            out[k] = v
    out.setdefault("rope_type", "default")
    return out


def check_growable(src, dst) -> None:
    """Raise :class:`GrowthError` unless ``src`` can grow into ``dst`` (same vocabulary, head_dim,
    RoPE, q heads per kv head, activation, no biases; no dimension smaller; ``dst`` untied)."""
    a, b = shape_of(src, "source config"), shape_of(dst, "target config")
    for cfg, name in ((src, "source"), (dst, "target")):
        mt = getattr(cfg, "model_type", "llama")
        if mt != "llama":
            raise GrowthError(f"the {name} config is a {mt!r} model; growth handles Llama only")
        if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
            raise GrowthError(f"the {name} config uses biases (attention_bias/mlp_bias); "
                              "growth handles bias-free Llama only")
    if getattr(dst, "tie_word_embeddings", False):
        raise GrowthError("the target config ties the LM head to the embedding; growth needs tie_word_embeddings=False "
                          "(the embedding is copied without division, the LM head's input columns are divided)")
    if a.vocab != b.vocab:
        raise GrowthError(f"vocabulary differs: source {a.vocab}, target {b.vocab} (growth keeps the tokenizer)")
    if a.head_dim != b.head_dim:
        raise GrowthError(f"head_dim differs: source {a.head_dim}, target {b.head_dim}; "
                          "attention grows by adding heads, head_dim (and so RoPE) must stay fixed")
    ra, rb = _rope(src), _rope(dst)
    if ra != rb:
        raise GrowthError(f"RoPE settings differ: source {ra}, target {rb}; growth must not change RoPE frequencies")
    if ra["rope_type"] != "default" and src.max_position_embeddings != dst.max_position_embeddings:
        raise GrowthError(f"max_position_embeddings differs ({src.max_position_embeddings} → "
                          f"{dst.max_position_embeddings}) "
                          f"with rope_type {ra['rope_type']!r}, which depends on it")
    if a.group != b.group:
        raise GrowthError(f"query heads per kv head differ: source {a.heads}/{a.kv_heads} = {a.group}, target "
                          f"{b.heads}/{b.kv_heads} = {b.group}; GQA grows whole kv groups, the group size must stay fixed")
    if getattr(src, "hidden_act", "silu") != getattr(dst, "hidden_act", "silu"):
        raise GrowthError(f"activation differs: source {src.hidden_act!r}, target {dst.hidden_act!r}")
    smaller = [f"{k} {getattr(a, k)} → {getattr(b, k)}" for k in ("hidden", "ffn", "layers", "heads", "kv_heads")
               if getattr(b, k) < getattr(a, k)]
    if smaller:
        raise GrowthError(f"the target is smaller than the source: {', '.join(smaller)} (growth never shrinks)")


def _check_methods(width: str, depth: str) -> None:
    if width not in WIDTH_METHODS:
        raise GrowthError(f"unknown width method {width!r}; known: {', '.join(WIDTH_METHODS)}")
    if depth not in DEPTH_METHODS:
        raise GrowthError(f"unknown depth method {depth!r}; known: {', '.join(DEPTH_METHODS)}")


def _grown_eps(src, dst, width: str) -> float:
    eps = float(src.rms_norm_eps)
    if width == "zero":
        eps *= int(src.hidden_size) / int(dst.hidden_size)
    return eps


def grown_config(src, dst, width: str = "fpi"):
    """The config the grown weights are meant for: a copy of ``dst`` with ``rms_norm_eps`` derived
    from the source (unchanged for fpi/aki, × D_old/D_new for zero extension — the exactness of
    ``zero`` depends on it) and ``tie_word_embeddings=False``."""
    _check_methods(width, "stack")
    check_growable(src, dst)
    cfg = copy.deepcopy(dst)
    cfg.rms_norm_eps = _grown_eps(src, dst, width)
    cfg.tie_word_embeddings = False
    return cfg


def layer_map(n_old: int, n_new: int, depth: str = "stack") -> tuple[list[int], list[bool]]:
    """(source layer of each target layer, whether its o_proj/down_proj are zeroed)."""
    _check_methods("fpi", depth)
    if n_new < n_old or n_old < 1:
        raise GrowthError(f"cannot grow {n_old} layers into {n_new}")
    if depth == "stack":
        return [i % n_old for i in range(n_new)], [False] * n_new
    m = [i * n_old // n_new for i in range(n_new)]
    if depth == "interpolate":
        return m, [False] * n_new
    return m, [i > 0 and m[i - 1] == m[i] for i in range(n_new)]


def is_exact(src, dst, width: str = "fpi", depth: str = "stack", noise_std: float | None = None) -> bool:
    """Whether growing ``src`` into ``dst`` this way is function preserving (up to float rounding)."""
    _check_methods(width, depth)
    a, b = shape_of(src, "source config"), shape_of(dst, "target config")
    depth_ok = depth == "identity" or a.layers == b.layers
    if width == "zero":
        width_ok = True
    else:
        noisy = bool(noise_std) and (a.hidden, a.ffn, a.heads) != (b.hidden, b.ffn, b.heads)
        if width == "fpi":
            width_ok = b.hidden % a.hidden == 0 and not noisy
        else:  # aki: only when there are no new units at all
            width_ok = (a.hidden, a.ffn, a.heads) == (b.hidden, b.ffn, b.heads)
    return bool(width_ok and depth_ok)


# ----------------------------------------------------------------------------- the maps


def _unit_map(n_old: int, n_new: int, gen: torch.Generator) -> torch.Tensor:
    """new unit → source unit: identity first, whole rounds ``i mod n_old``, then a seeded random
    subset without replacement for the remainder (copy counts differ by at most one)."""
    reps, rem = divmod(n_new, n_old)
    parts = [torch.arange(n_old)] * reps
    if rem:
        parts.append(torch.randperm(n_old, generator=gen)[:rem].sort().values)
    return torch.cat(parts)


@dataclass
class _Axis:
    idx: torch.Tensor  # new index → source index
    div: torch.Tensor  # float32 per new index: the copy count of its source
    n_old: int

    @property
    def n_new(self) -> int:
        return len(self.idx)


def _axis(idx: torch.Tensor, n_old: int) -> _Axis:
    counts = torch.bincount(idx, minlength=n_old).to(torch.float32)
    return _Axis(idx, counts[idx], n_old)


def _head_rows(head_idx: torch.Tensor, hd: int) -> torch.Tensor:
    return (head_idx[:, None] * hd + torch.arange(hd)[None, :]).reshape(-1)


def _axes(a: Shape, b: Shape, seed: int) -> dict[str, _Axis]:
    gen = torch.Generator().manual_seed(int(seed))
    g_res = _unit_map(a.hidden, b.hidden, gen)
    g_kv = _unit_map(a.kv_heads, b.kv_heads, gen)
    g_ffn = _unit_map(a.ffn, b.ffn, gen)
    r = a.group
    h = torch.arange(b.heads)
    g_q = g_kv[h // r] * r + h % r  # a new q head copies the same slot of its kv group's source group
    return {
        "res": _axis(g_res, a.hidden),
        "kv": _axis(_head_rows(g_kv, a.head_dim), a.kv_heads * a.head_dim),
        "q": _axis(_head_rows(g_q, a.head_dim), a.heads * a.head_dim),
        "ffn": _axis(g_ffn, a.ffn),
        "vocab": _axis(torch.arange(a.vocab), a.vocab),
    }


# ----------------------------------------------------------------------------- width


def _fpi(w: torch.Tensor, out: _Axis | None, inn: _Axis, divide: bool = True) -> torch.Tensor:
    if out is None:  # a norm weight: plain copies
        return w.index_select(0, inn.idx)
    w = w.index_select(0, out.idx).index_select(1, inn.idx)
    return w / inn.div[None, :] if divide else w


def _new_mask(out: _Axis | None, inn: _Axis) -> torch.Tensor:
    if out is None:
        return torch.zeros(inn.n_new, dtype=torch.bool)
    m = torch.zeros(out.n_new, inn.n_new, dtype=torch.bool)
    m[out.n_old:, :] = True
    m[:, inn.n_old:] = True
    return m


def _zero_ext(w: torch.Tensor, out: _Axis, inn: _Axis, new_rows: str, new_cols: str, std: float,
              gen: torch.Generator) -> torch.Tensor:
    o, i = w.shape
    new = torch.empty(out.n_new, inn.n_new, dtype=torch.float32)
    new[:o, :i] = w
    for region, rule in ((new[o:, :], new_rows), (new[:o, i:], new_cols)):
        if region.numel() == 0:
            continue
        if rule == "zero":
            region.zero_()
        else:
            region.copy_(torch.randn(region.shape, generator=gen) * std)
    return new


def _zero_norm(w: torch.Tensor, inn: _Axis, scale: float) -> torch.Tensor:
    old = w * scale
    fill = old.abs().mean()
    if not torch.isfinite(fill) or float(fill) == 0.0:
        fill = torch.tensor(scale)
    out = torch.empty(inn.n_new, dtype=torch.float32)
    out[: inn.n_old] = old
    out[inn.n_old:] = fill
    return out


def _split(sd: dict[str, torch.Tensor], a: Shape) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    top: dict[str, torch.Tensor] = {}
    layers: list[dict[str, torch.Tensor]] = [{} for _ in range(a.layers)]
    for k, v in sd.items():
        if k in _IGNORED_KEYS:
            continue
        m = _LAYER_KEY.match(k)
        if m:
            li, suffix = int(m.group(1)), m.group(2)
            if suffix not in _LAYER_PARAMS:
                raise GrowthError(f"state dict key {k!r} is not a bias-free Llama parameter")
            if li >= a.layers:
                raise GrowthError(f"state dict has layer {li} but the source config has {a.layers} layers")
            layers[li][suffix] = v
        elif k in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
            top[k] = v
        else:
            raise GrowthError(f"state dict key {k!r} is not a bias-free Llama parameter")
    for k in ("model.embed_tokens.weight", "model.norm.weight"):
        if k not in top:
            raise GrowthError(f"state dict lacks {k}")
    for li, layer in enumerate(layers):
        missing = sorted(set(_LAYER_PARAMS) - set(layer))
        if missing:
            raise GrowthError(f"state dict lacks model.layers.{li}.{missing[0]} (and {len(missing) - 1} more)")
    return top, layers


def _expected_shape(kind_out: str, kind_in: str, s: Shape) -> tuple[int, ...]:
    size = {"res": s.hidden, "q": s.heads * s.head_dim, "kv": s.kv_heads * s.head_dim, "ffn": s.ffn, "vocab": s.vocab}
    return (size[kind_in],) if kind_out == "vec" else (size[kind_out], size[kind_in])


def _grow(sd, src, dst, width, depth, seed, noise_std):
    _check_methods(width, depth)
    check_growable(src, dst)
    a, b = shape_of(src, "source config"), shape_of(dst, "target config")
    if noise_std is not None and (not math.isfinite(float(noise_std)) or float(noise_std) < 0):
        raise GrowthError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
    top, layers = _split(sd, a)
    tied = bool(getattr(src, "tie_word_embeddings", False)) or "lm_head.weight" not in top
    if tied:
        top["lm_head.weight"] = top["model.embed_tokens.weight"]
    # shapes must match the source config
    checks = [("model.embed_tokens.weight", ("vocab", "res")), ("lm_head.weight", ("vocab", "res")),
              ("model.norm.weight", ("vec", "res"))]
    for k, kinds in checks:
        want = _expected_shape(*kinds, a)
        if tuple(top[k].shape) != want:
            raise GrowthError(f"{k} has shape {tuple(top[k].shape)} but the source config implies {want}")
    for li, layer in enumerate(layers):
        for suffix, kinds in _LAYER_PARAMS.items():
            want = _expected_shape(*kinds, a)
            if tuple(layer[suffix].shape) != want:
                raise GrowthError(f"model.layers.{li}.{suffix} has shape {tuple(layer[suffix].shape)} "
                                  f"but the source config implies {want}")

    messages: list[str] = []
    if width == "fpi" and b.hidden % a.hidden:
        messages.append(f"FPI at a non-integer hidden ratio {a.hidden} → {b.hidden} is not function preserving: "
                        "residual units get unequal copy counts, so RMSNorm sees a new mean square "
                        "(use width='zero' for an exact growth at this ratio)")
    axes = _axes(a, b, seed)
    dtypes = {k: v.dtype for k, v in top.items()}
    ldtypes = [{k: v.dtype for k, v in layer.items()} for layer in layers]
    gen = torch.Generator().manual_seed(int(seed) + 1_000_003)
    f32 = lambda t: t.detach().to("cpu", torch.float32)  # noqa: E731

    new_top: dict[str, torch.Tensor] = {}
    new_layers: list[dict[str, torch.Tensor]] = []
    if width in ("fpi", "aki"):
        emb = f32(top["model.embed_tokens.weight"])
        new_top["model.embed_tokens.weight"] = _fpi(emb, axes["vocab"], axes["res"], divide=False)
        new_top["model.norm.weight"] = _fpi(f32(top["model.norm.weight"]), None, axes["res"])
        new_top["lm_head.weight"] = _fpi(f32(top["lm_head.weight"]), axes["vocab"], axes["res"])
        for li in range(a.layers):
            nxt = li + 1 if (width == "aki" and li + 1 < a.layers) else None
            layer = {}
            for suffix, (ko, ki) in _LAYER_PARAMS.items():
                out = None if ko == "vec" else axes[ko]
                w = _fpi(f32(layers[li][suffix]), out, axes[ki])
                if nxt is not None and out is not None and out.n_new > out.n_old:
                    w[out.n_old:] = _fpi(f32(layers[nxt][suffix]), out, axes[ki])[out.n_old:]
                layer[suffix] = w
            new_layers.append(layer)
        if noise_std:
            for name, w in list(new_top.items()) + [(s, w) for layer in new_layers for s, w in layer.items()]:
                if w.dim() == 2:
                    ko, ki = ("vocab", "res") if name in new_top else _LAYER_PARAMS[name]
                    mask = _new_mask(axes[ko], axes[ki])
                    if mask.any():
                        w.add_(torch.randn(w.shape, generator=gen) * float(noise_std) * mask)
    else:  # zero extension
        std = float(noise_std) if noise_std is not None else float(getattr(dst, "initializer_range", 0.02) or 0.02)
        scale = math.sqrt(a.hidden / b.hidden)
        res, vocab = axes["res"], axes["vocab"]
        emb = f32(top["model.embed_tokens.weight"])
        new_top["model.embed_tokens.weight"] = _zero_ext(emb, vocab, res, "zero", "zero", std, gen)
        new_top["model.norm.weight"] = _zero_norm(f32(top["model.norm.weight"]), res, scale)
        new_top["lm_head.weight"] = _zero_ext(f32(top["lm_head.weight"]), vocab, res, "rand", "rand", std, gen)
        for li in range(a.layers):
            layer = {}
            for suffix, (ko, ki) in _LAYER_PARAMS.items():
                w = f32(layers[li][suffix])
                if ko == "vec":
                    layer[suffix] = _zero_norm(w, axes[ki], scale)
                elif suffix in _WRITERS:  # new residual rows and new head/unit columns: zero
                    layer[suffix] = _zero_ext(w, axes[ko], axes[ki], "zero", "zero", std, gen)
                else:  # readers: new head/unit rows and new residual columns random
                    layer[suffix] = _zero_ext(w, axes[ko], axes[ki], "rand", "rand", std, gen)
            new_layers.append(layer)

    # depth, after width
    lmap, zeroed = layer_map(a.layers, b.layers, depth)
    out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": new_top["model.embed_tokens.weight"]}
    for i, (src_li, z) in enumerate(zip(lmap, zeroed)):
        for suffix in _LAYER_PARAMS:
            w = new_layers[src_li][suffix]
            w = torch.zeros_like(w) if (z and suffix in _WRITERS) else w.clone()
            out[f"model.layers.{i}.{suffix}"] = w.to(ldtypes[src_li][suffix]).contiguous()
    out["model.norm.weight"] = new_top["model.norm.weight"]
    out["lm_head.weight"] = new_top["lm_head.weight"]
    for k in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"):
        out[k] = out[k].to(dtypes[k]).contiguous().clone()

    for msg in messages:
        warnings.warn(msg, GrowthWarning, stacklevel=3)
    info = {
        "width": width,
        "depth": depth,
        "seed": int(seed),
        "noise_std": noise_std,
        "src": asdict(a),
        "dst": asdict(b),
        "layer_map": lmap,
        "zeroed_layers": [i for i, z in enumerate(zeroed) if z],
        "untied": tied,
        "rms_norm_eps": _grown_eps(src, dst, width),
        "exact": is_exact(src, dst, width, depth, noise_std),
        "warnings": messages,
    }
    return out, info


# ----------------------------------------------------------------------------- public API


def grow_state_dict(sd: dict[str, torch.Tensor], src, dst, width: str = "fpi", depth: str = "stack",
                    seed: int = 0, noise_std: float | None = None) -> dict[str, torch.Tensor]:
    """Grow a ``LlamaForCausalLM`` state dict of config ``src`` into one for ``dst``.

    The result has every key of a fresh ``LlamaForCausalLM(dst)`` (untied: ``lm_head.weight``
    included) in the source tensors' dtypes. Load it into a model built from
    ``grown_config(src, dst, width)`` — zero extension changes ``rms_norm_eps``. ``noise_std``:
    for fpi/aki the std of symmetry-breaking noise on new rows/columns (default none: exact);
    for zero the std of the random new input weights (default: ``dst.initializer_range``).
    Deterministic for a given ``seed``.
    """
    return _grow(sd, src, dst, width, depth, seed, noise_std)[0]


def _build(cfg, sd: dict[str, torch.Tensor]):
    """A ``LlamaForCausalLM`` for ``cfg`` holding exactly ``sd`` (no random init, no extra copy)."""
    from transformers import LlamaForCausalLM
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    with torch.device("meta"):
        model = LlamaForCausalLM(cfg)
    model.load_state_dict(sd, strict=True, assign=True)
    model.model.rotary_emb = LlamaRotaryEmbedding(config=cfg)  # its buffers are not in the state dict
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise GrowthError(f"internal: tensors left uninitialised after growth: {left[:5]}")
    return model


def _grow_model(model, dst, width, depth, seed, noise_std):
    src = model.config
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    new_sd, info = _grow(sd, src, dst, width, depth, seed, noise_std)
    cfg = grown_config(src, dst, width)
    cfg.dtype = model.dtype
    attn = getattr(src, "_attn_implementation", None)
    if attn and getattr(cfg, "_attn_implementation", None) is None:
        cfg._attn_implementation = attn
    grown = _build(cfg, new_sd)
    grown.train(model.training)
    return grown, info


def grow_model(model, dst, width: str = "fpi", depth: str = "stack", seed: int = 0, noise_std: float | None = None):
    """A new ``LlamaForCausalLM`` with ``model``'s weights grown into ``dst`` (config:
    :func:`grown_config`; dtype: the source's; on CPU). ``model`` is not modified."""
    return _grow_model(model, dst, width, depth, seed, noise_std)[0]



def grow_saved(src_dir: str | Path, dst_dir: str | Path, dst, width: str = "fpi", depth: str = "stack",
               seed: int = 0, noise_std: float | None = None) -> dict:
    """Load a saved HF Llama (``save_pretrained`` dir, tokenizer files included), grow it into ``dst``,
    ``save_pretrained`` it to ``dst_dir`` and copy the tokenizer files. Returns a report: source and
    target shapes and parameter counts, methods, layer map, the grown ``rms_norm_eps``, ``exact``
    (whether the growth is function preserving) and ``warnings``."""
    from transformers import LlamaForCausalLM

    _check_methods(width, depth)
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    if not (src_dir / "config.json").is_file():
        raise GrowthError(f"{src_dir} is not a saved Hugging Face model: no config.json there")
    if dst_dir.resolve() == src_dir.resolve():
        raise GrowthError(f"the grown model must go to a new directory, not over its source {src_dir}")
    model = LlamaForCausalLM.from_pretrained(str(src_dir), dtype="auto")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GrowthWarning)
        grown, info = _grow_model(model, dst, width, depth, seed, noise_std)
    for w in caught:  # pass them on
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    dst_dir.mkdir(parents=True, exist_ok=True)
    grown.save_pretrained(str(dst_dir))
    copied = []
    for name in TOKENIZER_FILES:
        if (src_dir / name).is_file():
            shutil.copy2(src_dir / name, dst_dir / name)
            copied.append(name)
    if not copied:
        info["warnings"].append(f"{src_dir} holds no tokenizer files; the grown model has none either")
    want_eps = float(getattr(dst, "rms_norm_eps", info["rms_norm_eps"]))
    if not math.isclose(want_eps, info["rms_norm_eps"], rel_tol=1e-9):
        how = "the source's eps scaled by D_old/D_new" if width == "zero" else "the source's eps"
        info["warnings"].append(f"rms_norm_eps is {info['rms_norm_eps']:.6g}, not the target config's {want_eps:.6g}: "
                                f"the grown weights need {how}")
    info.update(
        src_dir=str(src_dir),
        dst_dir=str(dst_dir),
        src_params=sum(p.numel() for p in model.parameters()),
        dst_params=sum(p.numel() for p in grown.parameters()),
        dtype=str(grown.dtype).replace("torch.", ""),
        tokenizer_files=copied,
    )
    return info
