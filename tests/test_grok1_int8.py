"""`convert --dtype int8`: the release's int8 matrices + bf16 scales, loaded as int8 and dequantised in forward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("ml_dtypes")
from grok1_release_writer import TINY, write_release_checkpoint
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import model  # noqa: F401  (registers grok-1 with the Auto classes)
from model.grok1 import convert as convert_mod
from model.grok1.int8 import Int8Linear, dequantize_int8

MATRICES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_up_proj", "down_proj")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("int8")
    ckpt = root / "ckpt-0"
    expected = write_release_checkpoint(ckpt)
    cfg = root / "overrides.json"
    cfg.write_text(json.dumps({k: TINY[k] for k in ("num_attention_heads", "num_key_value_heads", "head_dim")}))
    outs = {}
    for dtype in ("int8", "float32"):
        outs[dtype] = root / dtype
        argv = ["--checkpoint", str(ckpt), "--out", str(outs[dtype]), "--config", str(cfg), "--dtype", dtype]
        assert convert_mod.main(argv) == 0
    return outs, expected


def _load_all(out: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted(out.glob("model-*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def _is_matrix(name: str) -> bool:
    return any(f".{m}" in name for m in MATRICES)


def test_int8_checkpoint_holds_release_int8_and_bf16_scales(dirs):
    outs, expected = dirs
    got = _load_all(outs["int8"])
    index = json.loads((outs["int8"] / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(got)
    scales = {n for n in got if n.endswith("_scale")}
    assert {n.removesuffix("_scale") for n in scales} == {n for n in expected if _is_matrix(n)}
    assert set(got) - scales == set(expected)
    for name, value in expected.items():
        if _is_matrix(name):
            weight, scale = got[name], got[name + "_scale"]
            assert weight.dtype == torch.int8 and scale.dtype == torch.bfloat16, name
            assert weight.shape == value.shape and scale.shape[:-1] == value.shape[:-1], name
            assert torch.equal(dequantize_int8(weight, scale, torch.float32), value), name
        else:
            assert got[name].dtype == torch.bfloat16, name
            assert torch.equal(got[name], value.to(torch.bfloat16)), name
    # Release groupings: per output column for q/k/v and gate/up, 8 input blocks for o_proj and down.
    assert got["model.layers.0.self_attn.q_proj.weight_scale"].shape == (16 + 16, 1)
    assert got["model.layers.0.self_attn.o_proj.weight_scale"].shape == (32, 8)
    assert got["model.layers.0.moe.experts.gate_up_proj_scale"].shape == (8, 96, 1)
    assert got["model.layers.0.moe.experts.down_proj_scale"].shape == (8, 32, 8)
    config = json.loads((outs["int8"] / "config.json").read_text())
    assert config["quantization"] == "int8"
    assert config["quantization_blocks"] == {
        "down_proj": 8, "gate_up_proj": 1, "k_proj": 1, "o_proj": 8, "q_proj": 1, "v_proj": 1,
    }  # fmt: skip


def test_int8_model_loads_as_int8_and_matches_float32(dirs):
    outs, _ = dirs
    ids = torch.tensor([[1, 5, 9, 200, 17, 3, 42, 250], [7, 7, 100, 2, 64, 31, 8, 1]])
    q = AutoModelForCausalLM.from_pretrained(outs["int8"], dtype=torch.float32, output_loading_info=True)
    q, info = q
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    f = AutoModelForCausalLM.from_pretrained(outs["float32"], dtype=torch.float32)
    assert isinstance(q.model.layers[0].self_attn.o_proj, Int8Linear)
    experts = q.model.layers[3].moe.experts
    assert experts.quantized and experts.gate_up_proj.dtype == torch.int8 and experts.down_proj.dtype == torch.int8
    assert not experts.gate_up_proj.requires_grad

    # The int8 weights were loaded as stored, not re-initialised.
    stored = _load_all(outs["int8"])
    state = q.state_dict()
    for name in ("model.layers.3.moe.experts.down_proj", "model.layers.10.self_attn.k_proj.weight"):
        assert torch.equal(state[name], stored[name]), name
        assert torch.equal(state[name + "_scale"].to(torch.bfloat16), stored[name + "_scale"]), name

    with torch.no_grad():
        got, want = q(ids).logits, f(ids).logits
    assert torch.isfinite(got).all() and torch.isfinite(want).all()

    # The int8 conversion also rounds the float tensors (norms, router, embeddings) to bf16, which moves the
    # logits by ~2% on this tiny random model; with the float32 checkpoint's float tensors copied in, the
    # int8 model (matrices dequantised in forward) computes the same logits as the float32 one.
    float_state = f.state_dict()
    with torch.no_grad():
        for name, param in q.named_parameters():
            if param.is_floating_point() and not name.endswith("_scale"):
                param.copy_(float_state[name])
        got = q(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4)

    def matrix_bytes(lm):
        return sum(p.numel() * p.element_size() for n, p in lm.named_parameters() if _is_matrix(n))

    q_int8 = sum(p.numel() * p.element_size() for n, p in q.named_parameters() if p.dtype == torch.int8)
    ratio = q_int8 / matrix_bytes(f)
    assert ratio == 0.25, ratio
    # Scales included (kept in the float32 compute dtype here), still well under a third.
    assert matrix_bytes(q) / matrix_bytes(f) < 0.33


def test_int8_model_generates_and_saves(dirs, tmp_path):
    outs, _ = dirs
    q = AutoModelForCausalLM.from_pretrained(outs["int8"])
    assert q.model.layers[0].self_attn.q_proj.weight.dtype == torch.int8
    ids = torch.tensor([[1, 5, 9]])
    with torch.no_grad():
        out = q.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)
    q.save_pretrained(tmp_path)
    again, info = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    for name, value in q.state_dict().items():
        assert torch.equal(again.state_dict()[name], value), name


def test_only_routed_experts_are_dequantised(dirs, monkeypatch):
    from model import experts as routed

    outs, _ = dirs
    q = AutoModelForCausalLM.from_pretrained(outs["int8"], dtype=torch.float32)
    dequantised = []
    original = routed.dequantize_int8

    def counting(weight, scale, dtype):
        dequantised.append(tuple(weight.shape))
        return original(weight, scale, dtype)

    monkeypatch.setattr(routed, "dequantize_int8", counting)
    with torch.no_grad():
        q(torch.tensor([[42]]), use_cache=False)
    k, layers = q.config.num_experts_per_tok, q.config.num_hidden_layers
    # one token: k experts per layer, each its gate, up and down, never all of them
    assert len(dequantised) == 3 * k * layers
