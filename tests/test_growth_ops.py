"""Growth operators (SPEC §4) on real Llama models trained a few steps on real tokens.

Every source model is trained with AdamW on real BPE-tokenized text (the ``tiny_tokens`` fixture),
so no weight (norms included) is at its init; logits are compared on held-out real sequences.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from seedbed.growth.operators import (
    DEPTH_METHODS,
    WIDTH_METHODS,
    GrowthError,
    GrowthWarning,
    check_growable,
    grow_model,
    grow_saved,
    grow_state_dict,
    grown_config,
    is_exact,
    layer_map,
)
from seedbed.train.presets import Preset, build_model, get_preset, llama_config, param_count
from seedbed.train.tokens import hf_tokenizer, open_tokens

VOCAB = 2048
SEQ = 64
TOL = 1e-4  # max |Δlogit| for a function-preserving growth
MEASURED: dict[str, float] = {}  # printed at the end (pytest -s): the numbers in the report


def cfg(hidden, ffn, layers, heads, kv, vocab=VOCAB, **kw):
    p = Preset(hidden=hidden, ffn=ffn, layers=layers, heads=heads, kv_heads=kv, max_context=1024, rope_theta=10_000.0)
    c = llama_config(p, vocab)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def preset_cfg(name, **over):
    return llama_config(get_preset(name, over or None), VOCAB)


# ----------------------------------------------------------------------------- real data + trained models


@pytest.fixture(scope="module")
def data(tiny_tokens):
    ds = open_tokens(tiny_tokens)
    assert ds.vocab_size == VOCAB
    train = np.concatenate([np.asarray(s) for d in ("wikipedia", "code_python") for s in ds.shards(d, "train")])
    held = []
    for d in ("wikipedia", "code_python"):
        v = np.concatenate([np.asarray(s) for s in ds.shards(d, "valid")])
        assert len(v) >= 2 * SEQ, f"too few held-out tokens in {d}"
        held += [v[:SEQ], v[SEQ:2 * SEQ]]
    return {"train": train, "held": torch.from_numpy(np.stack(held).astype(np.int64)), "ds": ds}


def batch(data, n=8, seed=0):
    g = np.random.default_rng(seed)
    t = data["train"]
    starts = g.integers(0, len(t) - SEQ, n)
    return torch.from_numpy(np.stack([t[s:s + SEQ] for s in starts]).astype(np.int64))


def train(model, data, steps=20, lr=3e-3):
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    model.train()
    losses = []
    for step in range(steps):
        x = batch(data, seed=step)
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    assert losses[-1] < losses[0] - 0.5, f"the source model did not train: {losses[0]:.2f} → {losses[-1]:.2f}"
    return model


MHA64 = Preset(hidden=64, ffn=192, layers=2, heads=2, kv_heads=None, max_context=1024, rope_theta=10_000.0)


@pytest.fixture(scope="module")
def models(data):
    """Trained sources: an MHA 64-wide, tiny-64 (GQA 2:1, one kv head) and tiny-128 (GQA 2:1)."""
    torch.set_num_threads(min(2, torch.get_num_threads()))
    out = {
        "mha64": train(build_model(MHA64, VOCAB, seed=1), data),
        "tiny-64": train(build_model(get_preset("tiny-64"), VOCAB, seed=2), data),
        "tiny-128": train(build_model(get_preset("tiny-128"), VOCAB, seed=3), data, steps=15),
    }
    for m in out.values():  # the norms moved off their init of ones
        assert not torch.allclose(m.model.norm.weight, torch.ones_like(m.model.norm.weight))
    return out


@torch.no_grad()
def dlogits(a, b, x) -> float:
    a.eval(), b.eval()
    la, lb = a(input_ids=x).logits, b(input_ids=x).logits
    assert torch.isfinite(lb).all()
    return (la - lb).abs().max().item()


def assert_matches_fresh(grown, dst):
    """Keys, shapes and parameter count equal those of a freshly built model of the target config."""
    fresh = LlamaForCausalLM(dst)
    fs, gs = fresh.state_dict(), grown.state_dict()
    assert set(fs) == set(gs)
    for k in fs:
        assert fs[k].shape == gs[k].shape, k
    assert sum(p.numel() for p in grown.parameters()) == sum(p.numel() for p in fresh.parameters())
    assert grown.lm_head.weight.data_ptr() != grown.model.embed_tokens.weight.data_ptr()


def grads(model, data, seed=100) -> dict[str, torch.Tensor]:
    model.train()
    model.zero_grad()
    x = batch(data, seed=seed)
    model(input_ids=x, labels=x).loss.backward()
    return {n: p.grad for n, p in model.named_parameters()}


def nonzero(g) -> bool:
    return g is not None and bool(g.abs().max() > 0)


# ----------------------------------------------------------------------------- exact growths

EXACT = {
    # id: (source, target config, width, depth)
    "fpi-x2-mha-64-128": ("mha64", lambda: cfg(128, 384, 2, 4, 4), "fpi", "stack"),
    "fpi-x2-gqa-64-128": ("tiny-64", lambda: cfg(128, 384, 2, 4, 2), "fpi", "stack"),
    "fpi-x2-gqa-tiny128-tiny256": ("tiny-128", lambda: preset_cfg("tiny-256"), "fpi", "stack"),
    "zero-gqa-128-192": ("tiny-128", lambda: cfg(192, 576, 4, 6, 3), "zero", "stack"),
    "zero-mha-64-96": ("mha64", lambda: cfg(96, 288, 2, 3, 3), "zero", "stack"),
    "identity-depth-2-4": ("tiny-64", lambda: cfg(64, 192, 4, 2, 1), "fpi", "identity"),
    "fpi+identity-tiny64-tiny128": ("tiny-64", lambda: preset_cfg("tiny-128"), "fpi", "identity"),
    "zero+identity-128-192-6layers": ("tiny-128", lambda: cfg(192, 576, 6, 6, 3), "zero", "identity"),
}


@pytest.mark.parametrize("case", list(EXACT))
def test_exact_growth_preserves_function_shapes_and_trains(case, models, data):
    src_name, make, width, depth = EXACT[case]
    src, dst = models[src_name], make()
    assert is_exact(src.config, dst, width, depth)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GrowthWarning)  # an exact growth warns about nothing
        grown = grow_model(src, dst, width, depth, seed=0)
    assert grown.config.rms_norm_eps == pytest.approx(
        src.config.rms_norm_eps * (src.config.hidden_size / dst.hidden_size if width == "zero" else 1.0))

    d = dlogits(src, grown, data["held"])
    MEASURED[case] = d
    assert d <= TOL, f"{case}: max |Δlogit| {d:.3g} on held-out real text"
    assert_matches_fresh(grown, grown_config(src.config, dst, width))

    # one backward on real data: every parameter tensor gets a gradient (inserted identity blocks:
    # only their o_proj/down_proj at first, everything after one optimizer step)
    _, zeroed = layer_map(src.config.num_hidden_layers, dst.num_hidden_layers, depth)
    waiting = {f"model.layers.{i}." for i, z in enumerate(zeroed) if z}
    g = grads(grown, data)
    for n, t in g.items():
        inner = any(n.startswith(p) for p in waiting) and not n.endswith(("o_proj.weight", "down_proj.weight"))
        assert nonzero(t) != inner, f"{case}: gradient of {n} is {'non-' if inner else ''}zero"
    if width == "zero":  # the new residual dims / heads / FFN units are trainable
        D0 = src.config.hidden_size
        q0 = src.config.num_attention_heads * src.config.head_dim
        f0 = src.config.intermediate_size
        assert nonzero(g["model.embed_tokens.weight"][:, D0:])
        for i in range(dst.num_hidden_layers):
            if zeroed[i]:
                continue
            assert nonzero(g[f"model.layers.{i}.self_attn.o_proj.weight"][D0:])  # writes the new dims
            assert nonzero(g[f"model.layers.{i}.self_attn.o_proj.weight"][:, q0:])  # reads the new heads
            assert nonzero(g[f"model.layers.{i}.mlp.down_proj.weight"][D0:])
            assert nonzero(g[f"model.layers.{i}.mlp.down_proj.weight"][:, f0:])
    if waiting:
        opt = torch.optim.AdamW(grown.parameters(), lr=1e-3)
        opt.step()
        g = grads(grown, data, seed=101)
        dead = [n for n, t in g.items() if not nonzero(t)]
        assert not dead, f"{case}: still no gradient after one step: {dead}"


# ----------------------------------------------------------------------------- inexact growths


def test_fpi_non_integer_ratio_warns_and_is_not_exact(models, data):
    src, dst = models["tiny-128"], cfg(192, 576, 4, 6, 3)
    assert not is_exact(src.config, dst, "fpi")
    with pytest.warns(GrowthWarning, match="non-integer"):
        grown = grow_model(src, dst, "fpi")
    d = dlogits(src, grown, data["held"])
    MEASURED["fpi-128-192 (non-integer)"] = d
    assert d > 1e-3, f"FPI 128→192 came out exact ({d:.3g})? RMSNorm should see a new mean square"
    assert_matches_fresh(grown, dst)
    # zero extension at the same ratio is exact (test above); FPI's non-integer map is seeded
    with pytest.warns(GrowthWarning):
        a = grow_state_dict(src.state_dict(), src.config, dst, "fpi", seed=0)
        b = grow_state_dict(src.state_dict(), src.config, dst, "fpi", seed=0)
        c = grow_state_dict(src.state_dict(), src.config, dst, "fpi", seed=1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_fpi_grows_gqa_per_kv_group(models):
    src = models["tiny-128"]  # 4 q heads, 2 kv heads: q heads 0,1 → kv 0; 2,3 → kv 1
    dst = preset_cfg("tiny-256")  # 8 q heads, 4 kv heads
    sd = grow_state_dict(src.state_dict(), src.config, dst, "fpi")
    hd, D0 = 32, 128
    head = lambda w, h: w[h * hd:(h + 1) * hd]  # noqa: E731
    for li in range(4):
        q0 = src.state_dict()[f"model.layers.{li}.self_attn.q_proj.weight"]
        k0 = src.state_dict()[f"model.layers.{li}.self_attn.k_proj.weight"]
        o0 = src.state_dict()[f"model.layers.{li}.self_attn.o_proj.weight"]
        q = sd[f"model.layers.{li}.self_attn.q_proj.weight"]
        k = sd[f"model.layers.{li}.self_attn.k_proj.weight"]
        o = sd[f"model.layers.{li}.self_attn.o_proj.weight"]
        for new_kv, old_kv in ((0, 0), (1, 1), (2, 0), (3, 1)):  # ×2: g(i) = i mod K
            torch.testing.assert_close(head(k, new_kv)[:, :D0] * 2, head(k0, old_kv))
            for slot in range(2):  # the q heads of the new group copy those of its source group
                torch.testing.assert_close(head(q, 2 * new_kv + slot)[:, D0:] * 2, head(q0, 2 * old_kv + slot))
                # o_proj input columns of a head copied twice are halved; its output rows copied
                cols = o[:D0, (2 * new_kv + slot) * hd:(2 * new_kv + slot + 1) * hd]
                torch.testing.assert_close(cols * 2, o0[:, (2 * old_kv + slot) * hd:(2 * old_kv + slot + 1) * hd])
        torch.testing.assert_close(o[D0:], o[:D0])  # residual copies: plain copies of the output rows


def test_aki_takes_new_units_from_the_next_layer_and_is_not_exact(models, data):
    src, dst = models["tiny-128"], preset_cfg("tiny-256")
    assert not is_exact(src.config, dst, "aki")
    grown = grow_model(src, dst, "aki")
    d = dlogits(src, grown, data["held"])
    MEASURED["aki-x2-tiny128-tiny256"] = d
    assert d > 1e-3
    assert_matches_fresh(grown, dst)
    aki = grow_state_dict(src.state_dict(), src.config, dst, "aki")
    fpi = grow_state_dict(src.state_dict(), src.config, dst, "fpi")
    olds = {"q_proj": 128, "k_proj": 64, "v_proj": 64, "o_proj": 128, "gate_proj": 384, "up_proj": 384, "down_proj": 128}
    for li in range(3):
        for name, n_old in olds.items():
            part = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            key = f"model.layers.{li}.{part}.{name}.weight"
            above = f"model.layers.{li + 1}.{part}.{name}.weight"
            torch.testing.assert_close(aki[key][:n_old], fpi[key][:n_old])  # old units: this layer
            torch.testing.assert_close(aki[key][n_old:], fpi[above][n_old:])  # new units: the layer above
    for k in aki:  # the top layer, embeddings, norms and LM head are FPI
        if k.startswith("model.layers.3.") or not k.startswith("model.layers."):
            torch.testing.assert_close(aki[k], fpi[k])
    # AKI without new units (depth only) changes nothing
    assert is_exact(src.config, preset_cfg("tiny-128"), "aki", "identity")


@pytest.mark.parametrize("depth,want", [("stack", [0, 1, 0, 1, 0]), ("interpolate", [0, 0, 0, 1, 1]),
                                        ("identity", [0, 0, 0, 1, 1])])
def test_depth_layer_mapping(depth, want, models):
    src = models["tiny-64"]
    dst = cfg(64, 192, 5, 2, 1)
    m, zeroed = layer_map(2, 5, depth)
    assert m == want
    assert zeroed == ([False, True, True, False, True] if depth == "identity" else [False] * 5)
    sd0 = src.state_dict()
    sd = grow_state_dict(sd0, src.config, dst, "fpi", depth)
    for i, j in enumerate(want):
        for k in sd0:
            if k.startswith(f"model.layers.{j}."):
                new = sd[k.replace(f"layers.{j}.", f"layers.{i}.", 1)]
                if zeroed[i] and k.endswith(("o_proj.weight", "down_proj.weight")):
                    assert not new.any()
                else:
                    assert torch.equal(new, sd0[k])
                assert new.data_ptr() != sd0[k].data_ptr()  # copies, not shared storage
    assert is_exact(src.config, dst, "fpi", depth) == (depth == "identity")


def test_stack_after_width_and_measured_inexact_depth(models, data):
    src = models["tiny-64"]
    wide = grow_state_dict(src.state_dict(), src.config, cfg(128, 384, 2, 4, 2), "fpi")
    for depth, m in (("stack", [0, 1, 0, 1]), ("interpolate", [0, 0, 1, 1])):
        grown = grow_model(src, preset_cfg("tiny-128"), "fpi", depth)
        sd = grown.state_dict()
        for i, j in enumerate(m):  # depth grows after width: layer i is the widened layer m[i]
            for k in wide:
                if k.startswith(f"model.layers.{j}."):
                    assert torch.equal(sd[k.replace(f"layers.{j}.", f"layers.{i}.", 1)], wide[k])
        MEASURED[f"fpi+{depth}-tiny64-tiny128"] = dlogits(src, grown, data["held"])
        assert MEASURED[f"fpi+{depth}-tiny64-tiny128"] > 1e-3


def test_tied_source_is_untied_and_bf16_kept(data):
    c = preset_cfg("tiny-64")
    c.tie_word_embeddings = True
    torch.manual_seed(4)
    src = train(LlamaForCausalLM(c), data, steps=12)
    assert src.lm_head.weight.data_ptr() == src.model.embed_tokens.weight.data_ptr()
    dst = cfg(128, 384, 2, 4, 2)
    grown = grow_model(src, dst, "fpi")
    assert grown.config.tie_word_embeddings is False
    assert grown.lm_head.weight.data_ptr() != grown.model.embed_tokens.weight.data_ptr()
    d = dlogits(src, grown, data["held"])
    MEASURED["fpi-x2-tied-source"] = d
    assert d <= TOL
    g16 = grow_model(src.to(torch.bfloat16), dst, "zero")
    assert g16.dtype == torch.bfloat16 and all(p.dtype == torch.bfloat16 for p in g16.parameters())
    with torch.no_grad():
        assert torch.isfinite(g16(input_ids=data["held"]).logits).all()


# ----------------------------------------------------------------------------- bad pairs


BAD = {
    "smaller target": (lambda: preset_cfg("tiny-128"), lambda: preset_cfg("tiny-64"), "smaller"),
    "fewer layers": (lambda: preset_cfg("tiny-128"), lambda: cfg(256, 768, 2, 8, 4), "layers 4 → 2"),
    "head_dim change": (lambda: preset_cfg("tiny-64"), lambda: cfg(128, 384, 2, 2, 1), "head_dim"),
    "vocab change": (lambda: preset_cfg("tiny-64"), lambda: cfg(128, 384, 2, 4, 2, vocab=4096), "vocabulary"),
    "rope change": (lambda: preset_cfg("tiny-64"), lambda: preset_cfg("tiny-128", rope_theta=5e5), "RoPE"),
    "kv group change": (lambda: preset_cfg("tiny-64"), lambda: cfg(128, 384, 2, 4, 1), "per kv head"),
    "tied target": (lambda: preset_cfg("tiny-64"), lambda: cfg(128, 384, 2, 4, 2, tie_word_embeddings=True), "tie"),
    "hidden/heads inconsistent": (
        lambda: preset_cfg("tiny-64"),
        lambda: LlamaConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=384, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                            rope_parameters={"rope_theta": 1e4, "rope_type": "default"}),
        "inconsistent",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_growth_pairs(case):
    make_src, make_dst, msg = BAD[case]
    with pytest.raises(GrowthError, match=msg):
        check_growable(make_src(), make_dst())


def test_bad_methods_and_state_dicts(models):
    src = models["tiny-64"]
    sd, dst = src.state_dict(), cfg(128, 384, 2, 4, 2)
    assert WIDTH_METHODS == ("fpi", "aki", "zero") and DEPTH_METHODS == ("stack", "interpolate", "identity")
    with pytest.raises(GrowthError, match="unknown width method 'net2net'"):
        grow_state_dict(sd, src.config, dst, width="net2net")
    with pytest.raises(GrowthError, match="unknown depth method 'mirror'"):
        grow_model(src, dst, depth="mirror")
    with pytest.raises(GrowthError, match="shape"):  # a state dict that is not the source config's
        grow_state_dict(models["mha64"].state_dict(), src.config, dst)  # 2 kv heads where tiny-64 has 1
    with pytest.raises(GrowthError, match="has layer 2 but the source config has 2 layers"):
        grow_state_dict(models["tiny-128"].state_dict(), src.config, dst)
    with pytest.raises(GrowthError, match="lacks"):
        grow_state_dict({k: v for k, v in sd.items() if "layers.1.mlp" not in k}, src.config, dst)
    with pytest.raises(GrowthError, match="not a bias-free Llama parameter"):
        grow_state_dict({**sd, "model.layers.0.self_attn.q_proj.bias": torch.zeros(64)}, src.config, dst)
    with pytest.raises(GrowthError, match="noise_std"):
        grow_state_dict(sd, src.config, dst, noise_std=-1.0)
    assert issubclass(GrowthError, ValueError)


def test_fpi_noise_breaks_symmetry(models, data):
    src, dst = models["tiny-64"], cfg(128, 384, 2, 4, 2)
    a = grow_model(src, dst, "fpi", noise_std=1e-3)
    o = a.model.layers[0].self_attn.o_proj.weight
    assert not torch.equal(o[64:], o[:64])  # residual copies now differ
    assert torch.equal(a.model.layers[0].input_layernorm.weight[64:], a.model.layers[0].input_layernorm.weight[:64])
    assert not is_exact(src.config, dst, "fpi", noise_std=1e-3)
    MEASURED["fpi-x2-noise1e-3"] = dlogits(src, a, data["held"])


# ----------------------------------------------------------------------------- saved dirs


@pytest.mark.parametrize("src_name,make,width,depth", [
    ("tiny-64", lambda: preset_cfg("tiny-128"), "fpi", "identity"),
    ("tiny-128", lambda: cfg(192, 576, 6, 6, 3), "zero", "identity"),
])
def test_grow_saved_round_trip(src_name, make, width, depth, models, data, tmp_path):
    src, dst = models[src_name], make()
    sdir, ddir = tmp_path / "src", tmp_path / "dst"
    src.save_pretrained(sdir)
    tok = hf_tokenizer(data["ds"].tokenizer_path())
    tok.save_pretrained(sdir)
    rep = grow_saved(sdir, ddir, dst, width, depth, seed=0)
    assert json.loads(json.dumps(rep)) == rep  # a plain report
    assert rep["exact"] is True and rep["width"] == width and rep["depth"] == depth
    assert rep["src_params"] == sum(p.numel() for p in src.parameters())
    assert rep["dst_params"] == sum(p.numel() for p in LlamaForCausalLM(dst).parameters())
    assert rep["dst"]["hidden"] == dst.hidden_size and rep["dst"]["layers"] == dst.num_hidden_layers
    assert "tokenizer.json" in rep["tokenizer_files"]
    if width == "zero":
        assert any("rms_norm_eps" in w for w in rep["warnings"])  # dst's 1e-5 was replaced
    else:
        assert rep["warnings"] == []
        assert rep["dst_params"] == param_count(get_preset("tiny-128"), VOCAB)
    back = LlamaForCausalLM.from_pretrained(ddir)
    assert back.config.rms_norm_eps == pytest.approx(rep["rms_norm_eps"])
    d = dlogits(src, back, data["held"])
    MEASURED[f"grow_saved {src_name} {width}+{depth}"] = d
    assert d <= TOL
    tok2 = AutoTokenizer.from_pretrained(ddir)
    text = "def grow(model):\n    return model  # Wikipedia"
    assert tok2(text)["input_ids"] == tok(text)["input_ids"]
    assert tok2.eos_token == tok.eos_token
    with pytest.raises(GrowthError, match="no config.json"):
        grow_saved(tmp_path / "nowhere", tmp_path / "x", dst)


def test_zzz_report_measurements():
    """Print every measured max |Δlogit| (visible with ``pytest -s``)."""
    for k, v in MEASURED.items():
        print(f"[growth] {k:40s} max|Δlogit| = {v:.3g}")
