"""The Grok-1 release converter, on a tiny checkpoint written in the release's exact on-disk format."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ml_dtypes")
from grok1_release_writer import TINY, write_release_checkpoint
from safetensors.torch import load_file

from model.grok1 import convert as convert_mod
from model.grok1.names import from_hpcai, to_hpcai
from model.grok1.release import (
    QuantizedWeight8bit,
    UnsafeCheckpointError,
    dequantize,
    read_tensor,
    release_param_paths,
    tensor_filename,
)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    ckpt = tmp_path_factory.mktemp("release") / "ckpt-0"
    expected = write_release_checkpoint(ckpt)
    return ckpt, expected


@pytest.fixture(scope="module")
def converted(release, tmp_path_factory):
    ckpt, _ = release
    out = tmp_path_factory.mktemp("converted")
    overrides = {k: TINY[k] for k in ("num_attention_heads", "num_key_value_heads", "head_dim")}
    convert_mod.convert_checkpoint(ckpt, out, config_overrides=overrides, dtype="float32")
    return out


def _load_all(out: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted(out.glob("model-*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def test_file_order_is_jax_sorted_order():
    paths = release_param_paths(11)
    assert len(paths) == 2 + 12 * 11
    assert paths[:2] == ["language_model/in_out_embed/embeddings", "language_model/rms_norm/scale"]
    layers = [p.split("/")[1] for p in paths[2::12]]
    assert layers[:4] == ["decoder_layer_0", "decoder_layer_1", "decoder_layer_10", "decoder_layer_2"]
    assert [p.split("/", 2)[2] for p in paths[2:14]] == [
        "moe/linear/w", "moe/linear_1/w", "moe/linear_v/w",
        "multi_head_attention/key/w", "multi_head_attention/linear/w",
        "multi_head_attention/query/w", "multi_head_attention/value/w",
        "rms_norm/scale", "rms_norm_1/scale", "rms_norm_2/scale", "rms_norm_3/scale", "router/w",
    ]  # fmt: skip
    assert len(release_param_paths(64)) == 770  # the full release


def test_release_files_reference_main_class_and_read_back(release):
    ckpt, _ = release
    raw = (ckpt / tensor_filename(2)).read_bytes()
    assert b"__main__" in raw and b"QuantizedWeight8bit" in raw
    obj = read_tensor(ckpt, 2)
    assert isinstance(obj, QuantizedWeight8bit)
    assert obj.weight.dtype == np.int8 and str(obj.scales.dtype) == "bfloat16"
    assert isinstance(read_tensor(ckpt, 0), np.ndarray)


def test_both_scale_groupings_dequantise():
    weight = np.arange(-8, 8, dtype=np.int8).reshape(4, 4)
    per_column = QuantizedWeight8bit(weight, np.array([[1.0, 2.0, 3.0, 4.0]], dtype=np.float32))
    np.testing.assert_array_equal(dequantize(per_column), weight * np.array([1.0, 2.0, 3.0, 4.0]))
    blocked = QuantizedWeight8bit(weight, np.array([[1.0] * 4, [10.0] * 4], dtype=np.float32))
    want = weight.astype(np.float32) * np.array([[1.0], [1.0], [10.0], [10.0]])
    np.testing.assert_array_equal(dequantize(blocked), want)
    experts = QuantizedWeight8bit(np.stack([weight, weight]), np.array([[[1.0] * 4], [[2.0] * 4]], dtype=np.float32))
    np.testing.assert_array_equal(dequantize(experts)[1], weight * 2.0)


def test_every_tensor_matches_release_weights(converted, release):
    _, expected = release
    got = _load_all(converted)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name].dtype == torch.float32
        assert got[name].shape == value.shape, name
        assert torch.equal(got[name], value), name
    assert got["model.layers.0.moe.experts.gate_up_proj"].shape == (8, 2 * 48, 32)
    assert got["model.layers.0.moe.experts.down_proj"].shape == (8, 32, 48)
    assert got["model.layers.0.self_attn.k_proj.weight"].shape == (16, 32)
    assert got["model.layers.0.self_attn.o_proj.weight"].shape == (32, 32)


def test_index_and_config(converted):
    index = json.loads((converted / "model.safetensors.index.json").read_text())
    got = _load_all(converted)
    assert set(index["weight_map"]) == set(got)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in got.values())
    config = json.loads((converted / "config.json").read_text())
    assert config["model_type"] == "grok-1"
    assert config["architectures"] == ["Grok1ForCausalLM"]
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_experts", "head_dim"):
        assert config[key] == TINY[key], key


def test_small_shards_and_bfloat16(release, tmp_path):
    ckpt, expected = release
    overrides = {"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8}
    convert_mod.convert_checkpoint(ckpt, tmp_path, config_overrides=overrides, dtype="bfloat16", shard_size="40KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 3
    assert shards[0].name == f"model-00001-of-{len(shards):05d}.safetensors"
    assert not list(tmp_path.glob("partial-*"))
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    got = _load_all(tmp_path)
    for name, value in expected.items():
        assert torch.equal(got[name], value.to(torch.bfloat16)), name


def test_forbidden_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = tmp_path / "ckpt-0"
    write_release_checkpoint(ckpt)
    (ckpt / tensor_filename(5)).write_bytes(pickle.dumps(Exploit(), protocol=4))
    with pytest.raises(UnsafeCheckpointError) as info:
        read_tensor(ckpt, 5)
    message = str(info.value)
    assert tensor_filename(5) in message and ("posix.system" in message or "os.system" in message)
    assert not marker.exists()
    code = convert_mod.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), "--config", _cfg(tmp_path)])
    assert code == 1 and not marker.exists()


def _cfg(tmp_path: Path, **extra) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, **extra}))
    return str(path)


def test_missing_file_is_named(tmp_path, capsys):
    ckpt = tmp_path / "ckpt-0"
    write_release_checkpoint(ckpt)
    (ckpt / tensor_filename(40)).unlink()
    assert convert_mod.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--config", _cfg(tmp_path)]) == 1
    assert "tensor00040_000" in capsys.readouterr().err


def test_missing_checkpoint_dir_and_unknown_dtype(tmp_path, capsys):
    assert convert_mod.main(["--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert convert_mod.main(["--checkpoint", str(tmp_path), "--out", str(tmp_path / "o"), "--dtype", "int4"]) == 1
    assert "unknown dtype" in capsys.readouterr().err  # int8 is supported: see test_grok1_int8.py


def test_wrong_shapes_and_config_mismatch(release, tmp_path, capsys):
    ckpt, _ = release
    # Heads that do not fit the projection shapes (release defaults: 48 heads of 128).
    assert convert_mod.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "a")]) == 1
    assert "expected" in capsys.readouterr().err
    cfg = _cfg(tmp_path, num_hidden_layers=64)
    assert convert_mod.main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "b"), "--config", cfg]) == 1
    assert "num_hidden_layers=64" in capsys.readouterr().err


def test_hpcai_round_trip(converted):
    ours = _load_all(converted)
    theirs = to_hpcai(ours)
    assert "model.layers.3.attn.q_proj.weight" in theirs
    assert "model.layers.3.moe_block.gate.weight" in theirs
    assert theirs["model.layers.3.moe_block.experts.7.linear.weight"].shape == (48, 32)
    assert theirs["model.layers.3.moe_block.experts.7.linear_1.weight"].shape == (32, 48)
    assert torch.equal(theirs["lm_head.weight"], ours["model.embed_tokens.weight"])
    back = from_hpcai(theirs)
    assert set(back) == set(ours)
    assert all(torch.equal(back[k], ours[k]) for k in ours)
    again = to_hpcai(back)
    assert set(again) == set(theirs) and all(torch.equal(again[k], theirs[k]) for k in theirs)


def test_tokenizer_round_trip(tmp_path):
    pytest.importorskip("sentencepiece")
    import sentencepiece
    from grok1_release_writer import train_sentencepiece
    from transformers import AutoTokenizer

    from model.grok1.tokenizer import DEFAULT_SAMPLES, convert_tokenizer

    spm_file = train_sentencepiece(tmp_path / "spm")
    out = tmp_path / "tok"
    convert_tokenizer(spm_file, out)
    assert (out / "tokenizer.model").is_file()
    loaded = AutoTokenizer.from_pretrained(out)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_file))
    for text in (*DEFAULT_SAMPLES, "the answer of the grok universe"):
        ids = loaded.encode(text, add_special_tokens=False)
        assert ids == sp.encode(text), text
        assert loaded.decode(ids) == sp.decode(ids), text


def test_converted_model_loads_and_runs(converted):
    pytest.importorskip("model.grok1.modeling")
    from transformers import AutoModelForCausalLM

    import model  # noqa: F401  (registers grok-1 with the Auto classes)

    lm = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
    expected = _load_all(converted)
    state = lm.state_dict()
    assert torch.equal(
        state["model.layers.10.moe.experts.gate_up_proj"], expected["model.layers.10.moe.experts.gate_up_proj"]
    )
    assert torch.equal(state["lm_head.weight"], expected["model.embed_tokens.weight"])
    with torch.no_grad():
        logits = lm(torch.tensor([[1, 5, 9, 200]])).logits
    assert logits.shape == (1, 4, TINY["vocab_size"]) and torch.isfinite(logits).all()
