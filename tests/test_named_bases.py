"""`finetune` takes the bundled SmolLM2 by name: converted once from its GGUF file under the data directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SAMPLES

from finetune import cli
from model import named_bases
from model.loading import ModelLoadError
from model.named_bases import DONE_MARKER, SMOLLM2, named_base

ROOT = Path(__file__).resolve().parents[1]


def test_a_named_base_is_converted_once_and_a_failed_conversion_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def convert(out: Path) -> str:
        calls.append(out)
        if len(calls) == 1:
            (out / "config.json").write_text("{}")
            raise OSError("disk full")
        (out / "config.json").write_text("{}")
        return "the source"

    monkeypatch.setitem(named_bases.CONVERTERS, "tiny", convert)
    with pytest.raises(OSError, match="disk full"):
        named_base("tiny", tmp_path, announce=lambda _: None)
    assert list(tmp_path.iterdir()) == []

    first = named_base("tiny", tmp_path, announce=lambda _: None)
    again = named_base("tiny", tmp_path, announce=lambda _: None)

    assert first == again == tmp_path / "tiny" and len(calls) == 2
    assert (first / DONE_MARKER).read_text() == "the source\n"
    with pytest.raises(ModelLoadError, match=f"no base model is named 'gpt-5'.*{SMOLLM2}"):
        named_base("gpt-5", tmp_path)


def test_the_readme_first_run_prepares_trains_and_evaluates_smollm2_by_name(tmp_path, monkeypatch, capsys):
    """The README's three commands, shortened to a few steps: the real SmolLM2 converted from its GGUF file."""
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path / "data"))
    data, run = tmp_path / "data" / "finetune" / "samples", tmp_path / "run"

    assert (
        cli.main(["prepare", "--model", SMOLLM2, "--source", str(SAMPLES), "--out", str(data), "--seq-len", "64"]) == 0
    )
    converted = tmp_path / "data" / "models" / SMOLLM2
    assert (converted / DONE_MARKER).read_text().strip().endswith(".gguf")
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["tokenizer"]["path"] == str(converted.resolve())
    assert manifest["counts"]["documents"]["eval"] >= 1

    config = ROOT / "finetune" / "configs" / "smollm2-cpu.yaml"
    overrides = [
        f"data={data}",
        f"output_dir={run}",
        "train.max_steps=2",
        "optim.warmup_steps=0",
        "train.micro_batch=2",
    ]
    assert cli.main(["train", "--config", str(config), "--no-progress", *[f"--set={o}" for o in overrides]]) == 0
    training = json.loads((run / "adapter" / "training.json").read_text())
    assert training["base_model"] == str(converted)

    capsys.readouterr()
    assert cli.main(["eval", "--adapter", str(run / "adapter"), "--data", str(data), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"] > 0 and 1 < result["base_perplexity"] < 1000
