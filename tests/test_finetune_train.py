"""`finetune train / eval / merge / export` on tiny random Grok-1 and Mixtral checkpoints with a real tokenizer."""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
import yaml
from safetensors.torch import load_file
from tiny_models import write_model
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
from training_runs import config_for

from finetune import checkpoint as checkpoint_mod
from finetune import cli
from finetune import train as train_mod
from finetune.checkpoint import CheckpointError
from finetune.config import ConfigError, load_config
from finetune.dataset import Packed, load_split, pack, write_dataset
from finetune.train import train
from model import load
from model.named_bases import is_named

ROOT = Path(__file__).resolve().parent.parent
SEQ_LEN = 64


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {kind: write_model(root / kind, kind=kind) for kind in ("grok-1", "mixtral")}


@pytest.fixture(scope="module")
def data(models, tmp_path_factory):
    """The sample Markdown documents, one held out, tokenised and packed as `finetune prepare` writes them."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models["grok-1"])
    docs = sorted((ROOT / "samples").rglob("*.md"))
    examples = []
    for doc in docs:
        ids = tokenizer(doc.read_text()).input_ids + [tokenizer.eos_token_id]
        examples.append((ids, ids))
    out = tmp_path_factory.mktemp("data")
    splits = {"train": pack(examples[:-1], SEQ_LEN, 0), "eval": pack(examples[-1:], SEQ_LEN, 0)}
    write_dataset(out, splits, {"seq_len": SEQ_LEN})
    return out


def adapter_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "adapter" / "adapter_model.safetensors")


def assert_same_adapter(a: dict, b: dict, atol: float = 1e-5):
    assert a.keys() == b.keys()
    for key, value in a.items():
        torch.testing.assert_close(value, b[key], rtol=0, atol=atol, msg=key)


def log_lines(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["grok-1", "mixtral"])
def test_loss_falls_and_only_lora_weights_change(kind, models, data, tmp_path):
    config = config_for(models[kind], data, tmp_path / "run", "train.max_steps=30", "train.checkpoint_every=30")
    result = train(config, progress=False)

    losses = [line["loss"] for line in log_lines(tmp_path / "run") if "loss" in line]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.05, losses

    base = load_file(models[kind] / "model.safetensors")
    trained = dict(result.model.named_parameters())
    lora = {name for name in trained if "lora_" in name}
    experts = {name for name in lora if ".experts." in name}
    assert experts, "the fused experts must carry LoRA too"
    assert all(trained[name].requires_grad for name in lora)
    for name, parameter in trained.items():
        if name in lora:
            continue
        assert not parameter.requires_grad, name
        original = name.replace("base_model.model.", "", 1).replace(".base_layer", "")
        original = original.replace(".parametrizations.", ".").replace(".original", "")
        if original in base:
            torch.testing.assert_close(parameter.detach(), base[original], rtol=0, atol=0, msg=name)
    moved = [n for n in lora if "lora_B" in n and trained[n].abs().max() > 0]
    assert len(moved) == len([n for n in lora if "lora_B" in n])

    info = json.loads((result.adapter_dir / "training.json").read_text())
    assert info["base_model"] == str(models[kind]) and info["steps"] == 30 and info["eval_loss"] > 0


@pytest.fixture(scope="module")
def trained(models, data, tmp_path_factory):
    """One Grok-1 adapter, reused by the save/merge/export/eval tests."""
    run = tmp_path_factory.mktemp("trained") / "run"
    result = train(config_for(models["grok-1"], data, run, "train.max_steps=12"), progress=False)
    return run, result


def test_adapter_saves_reloads_and_merges_to_the_same_outputs(trained, models, tmp_path):
    run, result = trained
    ids = torch.randint(4, 500, (2, 24), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = result.model(input_ids=ids).logits
        base, _ = load(models["grok-1"])
        base_logits = base(input_ids=ids).logits
        reloaded, _ = load(models["grok-1"], adapter=run / "adapter")
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, rtol=0, atol=1e-5)

    assert cli.main(["merge", "--adapter", str(run / "adapter"), "--out", str(tmp_path / "merged")]) == 0
    merged, _ = load(tmp_path / "merged")
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=0, atol=1e-4)
    assert (expected - base_logits).abs().max() > 1e-3, "the adapter must change the model's outputs"
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_export_unfuses_expert_lora_under_hpcai_names(trained, models, tmp_path):
    run, _ = trained
    assert cli.main(["export", "--adapter", str(run / "adapter"), "--out", str(tmp_path / "vllm")]) == 0
    exported = load_file(tmp_path / "vllm" / "adapter_model.safetensors")
    config = json.loads((tmp_path / "vllm" / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "linear", "linear_v", "linear_1"}
    assert not any(".self_attn." in k or "lora_A.default" in k for k in exported)
    scaling = config["lora_alpha"] / config["r"]

    # Each expert's exported pair gives exactly the update the fused adapter makes to that expert's matrices.
    merged_dir = tmp_path / "merged"
    assert cli.main(["merge", "--adapter", str(run / "adapter"), "--out", str(merged_dir)]) == 0
    base, merged = load_file(models["grok-1"] / "model.safetensors"), load_file(merged_dir / "model.safetensors")
    prefix = "base_model.model.model.layers.1.moe_block.experts.3"
    for name, rows in (("linear", slice(0, 48)), ("linear_v", slice(48, 96))):
        delta = exported[f"{prefix}.{name}.lora_B.weight"] @ exported[f"{prefix}.{name}.lora_A.weight"] * scaling
        fused = merged["model.layers.1.moe.experts.gate_up_proj"] - base["model.layers.1.moe.experts.gate_up_proj"]
        torch.testing.assert_close(delta, fused[3, rows], rtol=0, atol=1e-5)
    delta = exported[f"{prefix}.linear_1.lora_B.weight"] @ exported[f"{prefix}.linear_1.lora_A.weight"] * scaling
    fused = merged["model.layers.1.moe.experts.down_proj"] - base["model.layers.1.moe.experts.down_proj"]
    torch.testing.assert_close(delta, fused[3], rtol=0, atol=1e-5)
    q = "base_model.model.model.layers.0.attn.q_proj.lora_A.weight"
    assert q in exported

    # vLLM finds an adapter's modules by the served checkpoint's names: each exported pair sits on a matrix the
    # serving layout (checked against vLLM's Grok-1 loader in test_grok1_serving.py) writes.
    from model.grok1.serving.layout import serving_tensors

    served = {name for ours, tensor in base.items() for name, _ in serving_tensors(ours, tensor)}
    for key in exported:
        module = key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]
        assert f"{module}.weight" in served, key


def test_eval_reports_base_and_adapted_perplexity(trained, data, capsys):
    run, result = trained
    assert cli.main(["eval", "--adapter", str(run / "adapter"), "--data", str(data), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert json.loads((run / "eval.json").read_text()) == report, "kept with the run, where the portal reads it"
    assert report["tokens"] > 0
    assert report["adapted_loss"] == pytest.approx(result.eval_loss, rel=1e-6)
    assert report["adapted_perplexity"] < report["base_perplexity"]


def test_a_killed_run_resumes_to_the_same_adapter(models, data, tmp_path, monkeypatch):
    full = tmp_path / "full"
    train(config_for(models["grok-1"], data, full), progress=False)

    killed = tmp_path / "killed"
    real = train_mod.token_loss_sum
    calls = {"n": 0}

    def dies_in_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:  # one micro-batch per step: steps 1-4 run, the checkpoint of step 3 is the last
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "token_loss_sum", dies_in_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(config_for(models["grok-1"], data, killed), progress=False)
    monkeypatch.setattr(train_mod, "token_loss_sum", real)
    assert [p.name for p in (killed / "checkpoints").iterdir()] == ["step-00000003"]

    with pytest.raises(ConfigError, match="--resume"):
        train(config_for(models["grok-1"], data, killed), progress=False)
    train(config_for(models["grok-1"], data, killed), resume=True, progress=False)

    assert_same_adapter(adapter_weights(full), adapter_weights(killed), atol=1e-6)
    steps = [line["step"] for line in log_lines(killed) if "loss" in line]
    assert steps == list(range(1, 9)), "each step is logged once, the killed run's step 4 replaced"
    losses = {line["step"]: line["loss"] for line in log_lines(full) if "loss" in line}
    assert all(abs(losses[line["step"]] - line["loss"]) < 1e-6 for line in log_lines(killed) if "loss" in line)


def test_resume_refuses_a_changed_config(models, data, tmp_path):
    run = tmp_path / "run"
    train(config_for(models["grok-1"], data, run, "train.max_steps=3"), progress=False)
    with pytest.raises(ConfigError, match="lora.rank"):
        train(config_for(models["grok-1"], data, run, "train.max_steps=6", "lora.rank=4"), resume=True)
    train(config_for(models["grok-1"], data, run, "train.max_steps=6"), resume=True, progress=False)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000003", "step-00000006"]


def test_resume_refuses_a_dataset_prepared_again(models, data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    run = tmp_path / "run"
    train(config_for(models["grok-1"], copy, run, "train.max_steps=3"), progress=False)
    packed = load_split(copy, "train")
    write_dataset(
        copy,
        {"train": Packed(packed.input_ids[1:], packed.labels[1:]), "eval": load_split(copy, "eval")},
        {"seq_len": SEQ_LEN},
    )
    with pytest.raises(ConfigError, match="dataset .* changed"):
        train(config_for(models["grok-1"], copy, run, "train.max_steps=6"), resume=True)


def test_a_disk_that_fills_mid_checkpoint_keeps_the_last_good_one(models, data, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real_save = checkpoint_mod.dcp.save
    saves = {"n": 0}

    def fills_the_disk(state, checkpoint_id):
        saves["n"] += 1
        if saves["n"] == 2:
            real_save(state, checkpoint_id=checkpoint_id)  # a partial write, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(state, checkpoint_id=checkpoint_id)

    monkeypatch.setattr(checkpoint_mod.dcp, "save", fills_the_disk)
    with pytest.raises(CheckpointError, match="disk is full.*step-00000003"):
        train(config_for(models["grok-1"], data, run), progress=False)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000003"]
    monkeypatch.setattr(checkpoint_mod.dcp, "save", real_save)
    train(config_for(models["grok-1"], data, run), resume=True, progress=False)
    assert (run / "adapter" / "adapter_model.safetensors").is_file()


class _RunsCode:
    """Unpickled, it writes `marker`: what a checkpoint planted by someone else could do as the training user."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


def _plant_in_rng(step: Path, marker: Path) -> None:
    torch.save({"cpu": torch.get_rng_state(), "seed": _RunsCode(marker)}, step / "rng-0.pt")


def _plant_in_metadata(step: Path, marker: Path) -> None:
    (step / ".metadata").write_bytes(pickle.dumps(_RunsCode(marker)))


def _plant_in_optimizer_state(step: Path, marker: Path) -> None:
    # The checkpoint rewritten with one of the optimizer's plain values (its learning rate) replaced.
    plain = step.with_name("plain.pt")
    dcp_to_torch_save(step, plain)
    state = torch.load(plain, weights_only=False)  # the test's own checkpoint, trusted
    state["optim"]["param_groups"][0]["lr"] = _RunsCode(marker)
    for shard in step.glob("*.distcp"):
        shard.unlink()
    dcp.save(state, checkpoint_id=step)


@pytest.mark.parametrize("plant", [_plant_in_rng, _plant_in_metadata, _plant_in_optimizer_state])
def test_resume_refuses_a_checkpoint_that_would_run_code(models, data, tmp_path, plant):
    run, marker = tmp_path / "run", tmp_path / "marker"
    train(config_for(models["grok-1"], data, run, "train.max_steps=3"), progress=False)
    plant(run / "checkpoints" / "step-00000003", marker)

    with pytest.raises(CheckpointError, match="not loaded.*resume from an earlier checkpoint"):
        train(config_for(models["grok-1"], data, run, "train.max_steps=6"), resume=True, progress=False)
    assert not marker.exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_the_same_adapter_as_one(models, data, tmp_path):
    def config_file(name: str, micro_batch: int) -> Path:
        path = tmp_path / f"{name}.yaml"
        settings = {
            "model": {"path": str(models["mixtral"]), "dtype": "float32"},
            "data": str(data),
            "output_dir": str(tmp_path / name),
            "train": {"max_steps": 4, "micro_batch": micro_batch, "grad_accum": 2, "checkpoint_every": 2},
            "optim": {"lr": 1e-2},
        }
        path.write_text(yaml.safe_dump(settings))
        return path

    # One process: 2 micro-batches of 4 per step. Two processes: 2 micro-batches of 2 each. Same global batch of 8.
    assert cli.main(["train", "--config", str(config_file("one", 4)), "--no-progress"]) == 0
    # On CPU the processes are started by PyTorch's own launcher (accelerate's CPU launch is mpirun-based);
    # the Accelerator inside sees the torchrun environment and trains as gloo DDP.
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "finetune.cli",
        "train",
        "--config",
        str(config_file("two", 2)),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    tokens = [line["tokens"] for line in log_lines(tmp_path / "two") if "tokens" in line]
    assert tokens[:2] == [512, 1024], "8 sequences of 64 per step"
    # Same sequences, same token-weighted loss: only the order of float sums differs (Adam's first steps, which
    # divide by tiny second moments, magnify that to ~1e-5 on weights of ~0.2).
    losses = [[line.get("loss") for line in log_lines(tmp_path / run)] for run in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert_same_adapter(adapter_weights(tmp_path / "one"), adapter_weights(tmp_path / "two"), atol=1e-4)


# --- bad input: each a clear error before a weight is loaded ---------------------------------------------------


def test_config_errors_name_the_key(tmp_path, models, data):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model": {"path": str(models["grok-1"])}, "data": str(data), "output_dir": "x"}))
    with pytest.raises(ConfigError, match=r"lora.rnak: unknown key"):
        load_config(path, ["lora.rnak=8"])
    with pytest.raises(ConfigError, match=r"lora.rank: .*greater than or equal to 1"):
        load_config(path, ["lora.rank=0"])
    with pytest.raises(ConfigError, match=r"warmup_steps .* must be below"):
        load_config(path, ["optim.warmup_steps=500", "train.max_steps=100"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["lora.rank"])
    config = load_config(path, ["train.seed=3"])
    assert config.output_dir == tmp_path / "x", "relative paths are relative to the config file"


def test_bad_runs_fail_before_training(models, data, tmp_path, capsys):
    def fails(match: str, *overrides: str, base: Path | None = None):
        with pytest.raises(ConfigError, match=match):
            train(config_for(base or models["grok-1"], data, tmp_path / "run", *overrides), progress=False)
        assert not (tmp_path / "run" / "checkpoints").exists()

    fails("does not exist", base=tmp_path / "nowhere")
    fails("train.seq_len=128 but the dataset .* is packed to 64", "train.seq_len=128")
    fails("dropout", "lora.dropout=0.1")
    fails("adapts nothing", "lora.modules=[]", "lora.expert_parameters=[]")
    short = write_model(tmp_path / "short", max_position_embeddings=32)
    fails("over the model's limit of 32", base=short)

    empty = tmp_path / "empty"
    write_dataset(empty, {"train": pack([], SEQ_LEN, 0), "eval": pack([], SEQ_LEN, 0)}, {"seq_len": SEQ_LEN})
    with pytest.raises(ConfigError, match="empty"):
        train(config_for(models["grok-1"], empty, tmp_path / "run"), progress=False)

    argv = ["train", "--set", f"model.path={models['grok-1']}", "--set", f"data={data}", "--set", "output_dir=o"]
    assert cli.main([*argv, "--set", "train.nope=1"]) == 2
    assert "train.nope: unknown key" in capsys.readouterr().err
    assert cli.main([*argv, "--check"]) == 0


def test_an_adapter_for_another_base_is_refused(trained, models, data, capsys):
    run, _ = trained
    argv = ["eval", "--adapter", str(run / "adapter"), "--data", str(data), "--base", str(models["mixtral"])]
    assert cli.main(argv) == 2
    assert "does not belong to" in capsys.readouterr().err


def test_shipped_configs_are_valid():
    configs = sorted((ROOT / "finetune" / "configs").glob("*.yaml"))
    assert len(configs) >= 3
    for path in configs:
        named = is_named(yaml.safe_load(path.read_text())["model"]["path"])
        # A named base would be converted on loading: test_named_bases.py covers that, here only the config counts.
        config = load_config(path, ["model.path=/models/base"] if named else [])
        assert config.train.max_steps > config.optim.warmup_steps, path
    # The README's example of phases is a valid config too.
    readme = (ROOT / "README.md").read_text()
    example = next(block for block in readme.split("```yaml\n")[1:] if "phases:" in block).split("```")[0]
    config = load_config(
        None,
        [f"{key}={value}" for key, value in yaml.safe_load(example).items()]
        + ["model.path=/models/base", "output_dir=/runs/example"],
    )
    assert [phase.order for phase, _ in config.phase_steps()] == ["random", "loss_ascending"]
    fsdp = yaml.safe_load((ROOT / "finetune" / "configs" / "accelerate" / "fsdp-8gpu.yaml").read_text())
    assert fsdp["num_processes"] == 8 and fsdp["distributed_type"] == "FSDP"
    assert fsdp["fsdp_config"]["fsdp_reshard_after_forward"] is True, "full shard"
    assert fsdp["fsdp_config"]["fsdp_activation_checkpointing"] is True
    assert "Grok1DecoderLayer" in fsdp["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"]


def test_dbrx_adapts_attention_and_router_and_says_why_not_its_experts(caplog):
    from tiny_models import dbrx_config
    from transformers import DbrxForCausalLM

    from finetune.config import LoraSection
    from finetune.lora_model import attach_lora

    config = dbrx_config()
    with caplog.at_level("WARNING"):
        peft_model, targets = attach_lora(DbrxForCausalLM(config), LoraSection(rank=4), {"model_type": "dbrx"})
    assert "cannot wrap" in caplog.text and not targets.expert_parameters
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    for module in ("Wqkv", "out_proj", "router.layer"):
        assert any(f".{module}.lora_A" in name for name in trainable), module
    assert not any("experts" in name for name in trainable)
    with pytest.raises(ConfigError, match="set lora.expert_parameters to \\[\\] for DBRX"):
        attach_lora(DbrxForCausalLM(config), LoraSection(expert_parameters=["w1"]), {"model_type": "dbrx"})


def test_qlora_needs_a_gpu_and_says_so(models, data, tmp_path):
    config = config_for(models["grok-1"], data, tmp_path / "run", "model.quantization=nf4")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the refusal is for machines without one")
    with pytest.raises(ConfigError, match="nf4.*needs a CUDA GPU"):
        train(config, progress=False)
