"""From documents to an adapter the assistant answers with, through the `finetune` CLI; and LoRA on an int8 Grok-1
converted from a checkpoint in the release's format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_models import write_model

from assistant.policy import AdapterNotPermitted
from assistant.types import User
from finetune import cli
from finetune.config import ConfigError, load_config
from finetune.train import train
from model import load, load_adapter

ROOT = Path(__file__).resolve().parent.parent


def test_documents_to_an_adapter_the_assistant_answers_with(tmp_path, make_assistant, capsys):
    base = write_model(tmp_path / "base", kind="grok-1")
    store = tmp_path / "store"
    with make_assistant(qdrant_path=str(store)) as assistant:
        for folder, group in (("public", "staff"), ("hr", "hr"), ("security", "security")):
            assert assistant.ingest([ROOT / "samples" / folder], groups=[group]).ok
    data = tmp_path / "data"
    argv = ["prepare", "--model", str(base), "--group", "staff", "--store", str(store), "--out", str(data)]
    assert cli.main([*argv, "--seq-len", "64"]) == 0
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["splits"]["eval"]["sequences"] > 0 and manifest["serves"] == ["staff"]
    assert all("/public/" in source["path"] for source in manifest["sources"])

    config = tmp_path / "run.yaml"
    settings = {
        "model": {"path": "base", "dtype": "float32"},  # relative to the config file
        "data": "data",
        "output_dir": "run",
        "train": {"max_steps": 12, "micro_batch": 4, "checkpoint_every": 6},
        "optim": {"lr": 1e-2},
    }
    config.write_text(yaml.safe_dump(settings))
    assert cli.main(["train", "--config", str(config), "--no-progress"]) == 0
    adapter = tmp_path / "run" / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == list(range(1, 13))
    assert all(line["lr"] > 0 and line["tokens_per_s"] > 0 for line in lines if "loss" in line)
    capsys.readouterr()

    assert cli.main(["eval", "--adapter", str(adapter), "--data", str(data)]) == 0
    report = capsys.readouterr().out
    assert "base" in report and "adapted" in report and "perplexity change" in report

    assert json.loads((adapter / "training.json").read_text())["serves"] == ["staff"]

    assistant = make_assistant(
        generator="local", model_path=base, adapter=adapter, max_new_tokens=8, qdrant_path=str(store)
    )
    answer = assistant.ask("How many days do I have to file an expense claim?", User("ana", ("staff",)))
    assert answer.adapter == adapter.parent.name and answer.sources  # the run's name, not the adapter's path
    assert hasattr(assistant.generator.model, "peft_config"), "the in-process model carries the adapter"
    # Someone outside staff may not be answered by what the adapter learned from staff's documents.
    with pytest.raises(AdapterNotPermitted) as refused:
        assistant.ask("How many days do I have to file an expense claim?", User("bo", ("hr",)))
    assert "only staff may read" in refused.value.detail
    assert assistant.audit.read(user="bo", events=["refused"])


@pytest.fixture(scope="module")
def int8_grok(tmp_path_factory):
    """A Grok-1 checkpoint in the release's format, converted twice: int8 (+ bf16 scales) and float32."""
    pytest.importorskip("ml_dtypes")
    from grok1_release_writer import TINY, train_sentencepiece, write_release_checkpoint

    from model.grok1 import convert

    root = tmp_path_factory.mktemp("release")
    write_release_checkpoint(root / "ckpt-0", config={"vocab_size": 512})
    tokenizer = train_sentencepiece(root / "sp", vocab_size=200)
    overrides = root / "overrides.json"
    fields = {k: TINY[k] for k in ("num_attention_heads", "num_key_value_heads", "head_dim")}
    # Grok-1's attention factor is 1/sqrt(head_dim), which vLLM computes: the merged model is served too.
    overrides.write_text(json.dumps({**fields, "attn_output_multiplier": TINY["head_dim"] ** -0.5}))
    out = {}
    for dtype in ("int8", "float32"):
        out[dtype] = root / dtype
        argv = ["--checkpoint", str(root / "ckpt-0"), "--tokenizer", str(tokenizer), "--out", str(out[dtype])]
        assert convert.main([*argv, "--config", str(overrides), "--dtype", dtype]) == 0
    return out


@pytest.fixture(scope="module")
def int8_data(int8_grok, tmp_path_factory):
    from finetune.prepare import prepare

    out = tmp_path_factory.mktemp("int8-data")
    prepare(int8_grok["int8"], out, [ROOT / "samples" / "public"], seq_len=32, eval_fraction=0.34)
    return out


def test_lora_on_int8_grok1_adapts_attention_and_experts_and_fits_the_float_conversion(int8_grok, int8_data, tmp_path):
    config = load_config(
        None,
        [
            f"model.path={int8_grok['int8']}",
            "model.dtype=float32",
            f"data={int8_data}",
            f"output_dir={tmp_path / 'run'}",
            "train.max_steps=20",
            "train.micro_batch=4",
            "train.checkpoint_every=20",
            "optim.lr=1e-2",
        ],
    )
    result = train(config, progress=False)
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4, losses

    trainable = {name for name, p in result.model.named_parameters() if p.requires_grad}
    assert any(".q_proj.lora_A" in n for n in trainable)
    # Both fused expert parameters, as on a bf16 base: the LoRA runs beside the int8 experts, never into them.
    assert sum(".experts." in n and ".lora_A" in n for n in trainable) == 2 * result.model.config.num_hidden_layers
    int8_weights = [p for n, p in result.model.named_parameters() if p.dtype == torch.int8]
    assert int8_weights, "the base stayed int8 in memory"

    adapter = tmp_path / "run" / "adapter"
    ids = torch.randint(3, 400, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        int8_base, _ = load(int8_grok["int8"], dtype=torch.float32)
        float_base, _ = load(int8_grok["float32"], dtype=torch.float32)
        # The int8 conversion rounds norms, router and embeddings to bf16; with the float ones copied in, the two
        # bases compute the same function, so the same adapter must give the same logits on both.
        float_state = float_base.state_dict()
        for name, parameter in int8_base.named_parameters():
            if parameter.is_floating_point() and not name.endswith("_scale"):
                parameter.copy_(float_state[name])
        on_int8, on_float = load_adapter(int8_base, adapter), load_adapter(float_base, adapter)
        torch.testing.assert_close(on_int8(input_ids=ids).logits, on_float(input_ids=ids).logits, rtol=1e-3, atol=1e-4)

    with pytest.raises(ConfigError, match="int8"):
        from finetune.merge import merge

        merge(adapter, tmp_path / "merged")
    merged = tmp_path / "merged-float"
    assert (
        cli.main(["merge", "--adapter", str(adapter), "--base", str(int8_grok["float32"]), "--out", str(merged)]) == 0
    )
    merged_model, _ = load(merged, dtype=torch.float32)
    with torch.no_grad():
        want = on_float(input_ids=ids).logits
        torch.testing.assert_close(merged_model(input_ids=ids).logits, want, rtol=1e-3, atol=1e-4)
    merged_tensors = load_file(next(merged.glob("*.safetensors")))
    assert "model.layers.0.self_attn.q_proj.weight" in merged_tensors

    served = tmp_path / "merged-vllm"
    argv = ["merge", "--adapter", str(adapter), "--base", str(int8_grok["float32"]), "--out", str(served)]
    assert cli.main([*argv, "--layout", "vllm"]) == 0
    assert json.loads((served / "config.json").read_text())["architectures"] == ["Grok1ModelForCausalLM"]
    served_tensors = {k: v for shard in served.glob("*.safetensors") for k, v in load_file(shard).items()}
    q_proj = merged_tensors["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(served_tensors["model.layers.0.attn.q_proj.weight"], q_proj)  # the adapter merged in
    gate_up = merged_tensors["model.layers.1.moe.experts.gate_up_proj"]
    assert torch.equal(served_tensors["model.layers.1.moe_block.experts.5.linear_v.weight"], gate_up[5].chunk(2)[1])
    assert not (tmp_path / "merged-vllm.partial").exists()
