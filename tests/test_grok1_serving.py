"""The Grok-1 serving directory (model/grok1/serving) against what vLLM's Grok-1 loader and transformers expect.

vLLM's side is read from `vllm/model_executor/models/grok1.py` at commit 048a32c74781 (Grok-1 and Grok-2 in one
file): `Grok1Model.load_weights` maps q/k/v_proj into the fused `qkv_proj`, each expert's `linear` / `linear_v` /
`linear_1` into `experts.w13_weight` (gate rows, then up rows) and `experts.w2_weight` through
`FusedMoE.make_expert_params_mapping`, `norm.scale` to `norm.weight`, and skips `lm_head` when embeddings are tied.
`vllm_parameters` below rebuilds that parameter list from the config the way its modules size themselves, and
`vllm_load` replays the name mapping, so a name vLLM would skip or a shape it would refuse fails here.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

pytest.importorskip("ml_dtypes")
from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
from compressed_tensors.quantization import QuantizationConfig
from grok1_reference import tiny_model
from grok1_release_writer import TINY, dequantized, make_release_tensors, write_release_checkpoint
from safetensors.torch import load_file

from model.grok1 import convert as convert_mod
from model.grok1.serving import ServingLayoutError, export, serving_config
from model.grok1.serving.layout import ARCHITECTURE

# vLLM computes attention logits * 1/sqrt(head_dim) and has no key for another factor: the tiny models use that one.
HEAD_DIM = 16
SERVABLE = {"attn_output_multiplier": HEAD_DIM**-0.5}


def vllm_parameters(config: dict) -> dict[str, tuple[int, ...]]:
    """The parameters vLLM's Grok1ForCausalLM has for `config` (tensor parallel 1), with their shapes.

    With a compressed-tensors 8-bit `quantization_config`, each quantised Linear has `weight_packed` (four int8 to
    an int32), `weight_scale` (one per group) and `weight_shape` instead of `weight`
    (CompressedTensorsWNA16.create_weights), and the fused experts `w13_/w2_weight_packed|scale|shape`
    (CompressedTensorsWNA16MoEMethod.create_weights); the router stays a plain weight (built without quantisation).
    """
    hidden, layers, experts = config["hidden_size"], config["num_hidden_layers"], config["num_experts"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = hidden // heads  # Grok1Attention: self.head_dim = hidden_size // total_num_heads
    inter = config.get("moe_intermediate_size", config["intermediate_size"])
    quantized = config.get("quantization_config")
    group = quantized["config_groups"]["group_0"]["weights"]["group_size"] if quantized else None

    def linear(prefix: str, out: int, into: int, lead: tuple[int, ...] = ()) -> dict:
        if not quantized:
            return {f"{prefix}weight": (*lead, out, into)}
        return {
            f"{prefix}weight_packed": (*lead, out, into // 4),
            f"{prefix}weight_scale": (*lead, out, into // group),
            f"{prefix}weight_shape": (*lead, 2),
        }

    params = {"model.embed_tokens.weight": (config["vocab_size"], hidden), "model.norm.weight": (hidden,)}
    for i in range(layers):
        prefix = f"model.layers.{i}"
        params.update(linear(f"{prefix}.attn.qkv_proj.", (heads + 2 * kv_heads) * head_dim, hidden))
        params.update(linear(f"{prefix}.attn.o_proj.", hidden, heads * head_dim))
        params[f"{prefix}.moe_block.gate.weight"] = (experts, hidden)
        params.update(linear(f"{prefix}.moe_block.experts.w13_", 2 * inter, hidden, (experts,)))
        params.update(linear(f"{prefix}.moe_block.experts.w2_", hidden, inter, (experts,)))
        for norm in ("pre_attn_norm", "post_attn_norm", "pre_moe_norm", "post_moe_norm"):
            params[f"{prefix}.{norm}.weight"] = (hidden,)
    if not config.get("tie_word_embeddings", False):
        params["lm_head.weight"] = (config["vocab_size"], hidden)
    return params


def vllm_load(config: dict, tensors: dict[str, torch.Tensor]) -> dict[str, set]:
    """Replay Grok1Model.load_weights' name mapping over `tensors`: which rows of which parameter each fills.

    Returns parameter -> the set of (expert, shard) pieces loaded; raises on a name vLLM would drop or refuse.
    """
    params = vllm_parameters(config)
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config["hidden_size"] // heads
    stacked = [("qkv_proj", "q_proj", "q"), ("qkv_proj", "k_proj", "k"), ("qkv_proj", "v_proj", "v")]
    shard_rows = {"q": heads * head_dim, "k": kv_heads * head_dim, "v": kv_heads * head_dim}
    # FusedMoE.make_expert_params_mapping(ckpt_gate_proj_name="linear", ckpt_down_proj_name="linear_1",
    # ckpt_up_proj_name="linear_v"): (param, weight name, expert, shard id)
    experts = [
        ("experts.w13_" if weight in ("linear", "linear_v") else "experts.w2_", f"experts.{e}.{weight}.", e, shard)
        for e in range(config["num_experts"])
        for shard, weight in (("w1", "linear"), ("w2", "linear_1"), ("w3", "linear_v"))
    ]

    loaded: dict[str, set] = {}
    for name, tensor in tensors.items():
        if config.get("tie_word_embeddings") and name.startswith("lm_head"):
            continue  # AutoWeightsLoader(skip_prefixes=["lm_head"])
        shape = tuple(tensor.shape)
        for param, weight, shard in stacked:
            if weight in name:
                target = name.replace(weight, param)
                assert target in params, f"{name} -> {target}: vLLM has no such parameter"
                fused = params[target]
                want = fused if target.endswith("shape") else (shard_rows[shard], fused[1])
                assert shape == want, f"{name}: shape {shape}, vLLM's loader wants {want}"
                loaded.setdefault(target, set()).add(shard)
                break
        else:
            for param, weight, expert, shard in experts:
                if weight in name:
                    target = name.replace(weight, param)
                    assert target in params, f"{name} -> {target}: vLLM has no such parameter"
                    fused = params[target][1:]  # one expert's slice
                    rows = fused[0] // 2 if shard in ("w1", "w3") else fused[0]
                    want = fused if target.endswith("shape") else (rows, fused[-1])
                    assert shape == want, f"{name}: shape {shape}, the fused MoE loader wants {want}"
                    loaded.setdefault(target, set()).add((expert, shard))
                    break
            else:
                target = name.replace("scale", "weight") if "norm.scale" in name else name
                # The newest loader skips names it has no parameter for: a misnamed tensor would load as nothing.
                assert target in params, f"{name}: vLLM's Grok-1 has no parameter of that name and would skip it"
                assert shape == params[target], f"{name}: shape {shape}, vLLM's parameter is {params[target]}"
                loaded.setdefault(target, set()).add(None)
    return loaded


def _all_tensors(directory: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for shard in sorted(directory.glob("model-*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory):
    """A tiny project-layout Grok-1 with large random weights (the soft-cap saturates, routing is uneven)."""
    directory = tmp_path_factory.mktemp("project")
    tiny_model(head_dim=HEAD_DIM, **SERVABLE).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def serving_dir(project_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("serving") / "grok-1-vllm"
    export(project_dir, out, dtype="float32", shard_size="200KB")
    return out


def test_every_tensor_lands_in_a_vllm_parameter_and_fills_it(serving_dir):
    config = json.loads((serving_dir / "config.json").read_text())
    tensors = _all_tensors(serving_dir)
    loaded = vllm_load(config, tensors)
    params = vllm_parameters(config)
    assert set(loaded) == set(params)  # nothing left to chance initialisation
    for name, pieces in loaded.items():
        if name.endswith("qkv_proj.weight"):
            assert pieces == {"q", "k", "v"}
        elif name.endswith("w13_weight"):
            assert pieces == {(e, s) for e in range(config["num_experts"]) for s in ("w1", "w3")}
        elif name.endswith("w2_weight"):
            assert pieces == {(e, "w2") for e in range(config["num_experts"])}
    index = json.loads((serving_dir / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tensors)
    assert len(set(index["weight_map"].values())) > 1  # sharded as asked


def test_the_config_makes_vllm_compute_grok1(serving_dir):
    config = json.loads((serving_dir / "config.json").read_text())
    assert config["architectures"] == [ARCHITECTURE] == ["Grok1ModelForCausalLM"]
    # vLLM takes a config with either key for Grok-2 (w1/w2/w3 expert names, a residual MLP).
    assert "moe_intermediate_size" not in config and "residual_moe" not in config
    assert config["router_logit_softcapping"] == 0.0  # vLLM's default is a cap of 30 the release does not have
    assert config["moe_router_renormalize"] is False  # vLLM's default renormalises the top-2 gates
    assert config["attn_logit_softcapping"] == 30.0
    assert config["attn_output_multiplier"] == 1.0  # vLLM multiplies the attention *output* by it
    assert config["head_dim"] == config["hidden_size"] // config["num_attention_heads"]
    assert config["tie_word_embeddings"] is True
    assert config["auto_map"]["AutoConfig"].startswith("configuration_grok1.")
    for name in ("configuration_grok1.py", "modeling_grok1.py"):
        assert (serving_dir / name).is_file()


_FRESH = textwrap.dedent(
    """
    import json, sys
    sys.modules["model"] = None  # the project must not be needed: `import model` now fails
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    directory, ids_file, out_file = sys.argv[1:]
    config = AutoConfig.from_pretrained(directory, trust_remote_code=True, local_files_only=True)
    assert type(config).__name__ == "Grok1ServingConfig", type(config)
    model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True, local_files_only=True)
    model.eval()
    ids = torch.tensor(json.loads(open(ids_file).read()))
    with torch.no_grad():
        logits = model(ids).logits
        generated = model.generate(ids[:1, :5], max_new_tokens=4, do_sample=False, pad_token_id=0)
    torch.save({"logits": logits, "generated": generated, "modules": sorted(n for n, m in sys.modules.items() if m is not None)}, out_file)
    """
)


def test_the_directory_loads_without_this_project_and_computes_the_same_logits(project_dir, serving_dir, tmp_path):
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))
    (tmp_path / "ids.json").write_text(json.dumps(ids.tolist()))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    subprocess.run(
        [sys.executable, "-c", _FRESH, str(serving_dir), str(tmp_path / "ids.json"), str(tmp_path / "out.pt")],
        check=True,
        cwd=tmp_path,  # not the repository root, whose folders would be importable
        env=env,
        timeout=300,
    )
    result = torch.load(tmp_path / "out.pt")
    assert not any(name == "model" or name.startswith("model.") for name in result["modules"])

    ours = tiny_model(head_dim=HEAD_DIM, **SERVABLE)
    with torch.no_grad():
        expected = ours(ids).logits
        greedy = ours.generate(ids[:1, :5], max_new_tokens=4, do_sample=False, pad_token_id=0)
    scale = expected.abs().max().item()
    torch.testing.assert_close(result["logits"], expected, rtol=0, atol=1e-5 * max(scale, 1.0))
    assert torch.equal(result["generated"], greedy)


def test_the_release_converted_for_serving_is_the_export_of_its_project_conversion(tmp_path):
    ckpt = tmp_path / "ckpt-0"
    write_release_checkpoint(ckpt, config={"num_hidden_layers": 2})
    # The HF ports' field names have no head_dim: it follows from hidden_size / heads (TINY: 32 / 4), not 128.
    overrides = {"num_attention_heads": 4, "num_key_value_heads": 2, "attn_output_multiplier": 8**-0.5}
    convert_mod.convert_checkpoint(ckpt, tmp_path / "project", config_overrides=overrides, dtype="float32")
    assert json.loads((tmp_path / "project" / "config.json").read_text())["head_dim"] == TINY["head_dim"]
    export(tmp_path / "project", tmp_path / "exported", dtype="float32")
    code = convert_mod.main(
        [
            "--checkpoint", str(ckpt), "--out", str(tmp_path / "direct"), "--dtype", "float32",
            "--layout", "vllm", "--config", _write(tmp_path / "c.json", overrides),
        ]
    )  # fmt: skip
    assert code == 0
    direct, exported = _all_tensors(tmp_path / "direct"), _all_tensors(tmp_path / "exported")
    assert direct.keys() == exported.keys()
    for name in direct:
        assert torch.equal(direct[name], exported[name]), name
    config = json.loads((tmp_path / "direct" / "config.json").read_text())
    assert set(vllm_load(config, direct)) == set(vllm_parameters(config))


# Sizes at which the release's scale blocks are multiples of 128, as Grok-1's are (its attention output's block is
# 6144 / 8 = 768 rows, its experts' down 32768 / 8 = 4096): the 8-bit format's groups are then vLLM's 128.
SERVABLE_RELEASE = {
    "hidden_size": 1024,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "head_dim": 128,
    "intermediate_size": 1024,
    "num_hidden_layers": 1,
    "num_experts": 4,
}


@pytest.fixture(scope="module")
def int8_release(tmp_path_factory):
    """A release checkpoint at those sizes, its conversion to the project's int8 layout, and that exported in the
    8-bit serving format (work / "served")."""
    work = tmp_path_factory.mktemp("int8")
    write_release_checkpoint(work / "ckpt-0", config=SERVABLE_RELEASE)
    overrides = {"num_attention_heads": 8, "num_key_value_heads": 2}
    convert_mod.convert_checkpoint(work / "ckpt-0", work / "project", config_overrides=overrides, dtype="int8")
    export(work / "project", work / "served", dtype="int8")
    return work, make_release_tensors(SERVABLE_RELEASE)  # the same seed: the tensors the checkpoint holds


def test_the_8bit_format_is_the_releases_int8_exactly_and_what_vllm_loads(int8_release):
    work, release = int8_release
    config = json.loads((work / "served" / "config.json").read_text())
    quantization = QuantizationConfig.model_validate(config["quantization_config"])  # compressed-tensors parses it
    weights = quantization.config_groups["group_0"].weights
    assert (weights.num_bits, weights.strategy, weights.group_size, weights.symmetric) == (8, "group", 128, True)
    assert quantization.format == "pack-quantized" and config["torch_dtype"] == "bfloat16"
    served = _all_tensors(work / "served")
    assert set(vllm_load(config, served)) == set(vllm_parameters(config))

    def dequantised(base: str) -> torch.Tensor:
        """What compressed-tensors' own unpacking gives, times the group scales, in float32."""
        shape = served[f"{base}.weight_shape"]
        values = unpack_from_int32(served[f"{base}.weight_packed"], 8, torch.Size(shape.tolist()))
        scales = served[f"{base}.weight_scale"].float().repeat_interleave(128, dim=-1)
        return values.float() * scales

    def released(path: str) -> torch.Tensor:
        return torch.from_numpy(dequantized(release[path]))  # [in, out] or [experts, in, out], float32

    layer = "transformer/decoder_layer_0"
    assert torch.equal(dequantised("model.layers.0.attn.q_proj"), released(f"{layer}/multi_head_attention/query/w").T)
    assert torch.equal(dequantised("model.layers.0.attn.o_proj"), released(f"{layer}/multi_head_attention/linear/w").T)
    for expert in range(SERVABLE_RELEASE["num_experts"]):
        prefix = f"model.layers.0.moe_block.experts.{expert}"
        for name, path in (("linear", "moe/linear/w"), ("linear_v", "moe/linear_v/w"), ("linear_1", "moe/linear_1/w")):
            assert torch.equal(dequantised(f"{prefix}.{name}"), released(f"{layer}/{path}")[expert].T), (expert, name)
    # The router, norms and embeddings are not the release's int8: they stay float, in bf16.
    assert served["model.layers.0.moe_block.gate.weight"].dtype == torch.bfloat16


def test_the_release_converted_straight_to_8bit_serving_is_the_same(int8_release, tmp_path):
    work, _ = int8_release
    code = convert_mod.main(
        [
            "--checkpoint", str(work / "ckpt-0"), "--out", str(tmp_path / "direct"), "--dtype", "int8",
            "--layout", "vllm", "--config", _write(tmp_path / "c.json", {"num_attention_heads": 8,
                                                                          "num_key_value_heads": 2}),
        ]
    )  # fmt: skip
    assert code == 0
    direct, exported = _all_tensors(tmp_path / "direct"), _all_tensors(work / "served")
    assert direct.keys() == exported.keys()
    assert all(torch.equal(direct[name], exported[name]) for name in direct)


def test_an_int8_directory_served_in_float_is_dequantised_exactly(int8_release, tmp_path):
    work, release = int8_release
    export(work / "project", tmp_path / "float", dtype="float32")
    served = _all_tensors(tmp_path / "float")
    linear_1 = torch.from_numpy(dequantized(release["transformer/decoder_layer_0/moe/linear_1/w"]))
    assert torch.equal(served["model.layers.0.moe_block.experts.2.linear_1.weight"], linear_1[2].T)


def test_float_weights_are_not_requantised_into_the_8bit_format(project_dir, tmp_path):
    with pytest.raises(ServingLayoutError, match="not int8: the 8-bit format holds the release's own int8"):
        export(project_dir, tmp_path / "out", dtype="int8")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_a_model_vllm_cannot_compute_is_refused_with_the_reason(project_dir, tmp_path):
    config = json.loads((project_dir / "config.json").read_text())
    with pytest.raises(ServingLayoutError, match="1/sqrt"):
        serving_config(dict(config, attn_output_multiplier=0.0884))
    with pytest.raises(ServingLayoutError, match="hidden_size / num_attention_heads"):
        serving_config(dict(config, head_dim=32))
    with pytest.raises(ServingLayoutError, match="not 'grok-1'"):
        serving_config(dict(config, model_type="llama"))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(ServingLayoutError, match="not empty"):
        export(project_dir, tmp_path / "busy")
    assert (tmp_path / "busy" / "keep.txt").read_text() == "x"
    assert math.isclose(serving_config(config)["rope_parameters"]["rope_theta"], config["rope_theta"])


def _write(path: Path, data: dict) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_the_projects_own_loader_names_a_serving_directory_for_what_it_is(serving_dir):
    from model.grok1.serving import MODEL_TYPE
    from model.loading import SERVING_MODEL_TYPE, ModelLoadError, load

    assert SERVING_MODEL_TYPE == MODEL_TYPE
    with pytest.raises(ModelLoadError, match="serving directory, written for vLLM"):
        load(serving_dir)


def test_the_serving_plan_puts_grok1_in_8bit_on_8_x_80gb_and_bf16_only_on_8_x_141gb(capsys):
    from model.grok1.serving.plan import main, serving_plan

    h100, h200 = 81559 / 1024, 143771 / 1024  # GiB, as nvidia-smi shows the cards
    int8 = serving_plan({}, gpus=8, gpu_memory_gib=h100, weights="int8")
    bf16 = serving_plan({}, gpus=8, gpu_memory_gib=h100, weights="bf16")
    # 5.64B attention + 309.2B expert parameters at 2 B, the 0.8B-parameter embedding at 2 B: about 632 GB in all.
    params = 64 * 6144 * (2 * 48 + 2 * 8) * 128 + 64 * 8 * 3 * 6144 * 32768
    assert bf16.weights_gib * 8 == pytest.approx((params * 2 + 131072 * 6144 * 2) / 2**30, rel=1e-3)
    assert 0.5 < int8.weights_gib / bf16.weights_gib < 0.52  # 1 B a parameter plus a bf16 scale per 128
    assert not bf16.fits and int8.fits and int8.sequences_at_context >= 100
    assert int8.kv_per_token_kib == 32  # 64 layers x K and V x one of 8 key/value heads x 128 x 2 B
    assert serving_plan({}, gpus=8, gpu_memory_gib=h200, weights="bf16").fits
    assert main(["--weights", "bf16"]) == 2 and "does not fit" in capsys.readouterr().out
    assert main(["--weights", "int8", "--json"]) == 0 and json.loads(capsys.readouterr().out)["fits"] is True
