"""One settings loader for the installation: `finetune prepare` reads the store and the redaction setting exactly as
the assistant does, from the environment and the YAML file ASSISTANT_CONFIG names (security finding 1)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT
from tiny_models import write_tokenizer

from finetune import dataset
from finetune.prepare import PrepareError, prepare

EMAIL = "jane.doe@example.com"
IBAN = "GB82 WEST 1234 5698 7654 32"
LETTER = (
    "# Supplier payments\n\n"
    f"Payments to Northwind go to the account IBAN {IBAN}. Questions about invoices go to {EMAIL}, who "
    "answers within two working days. Every payment above ten thousand euros needs a second approval.\n"
)


@pytest.fixture
def installation(tmp_path, monkeypatch, embedder):
    """An installation configured only through its YAML file, with redaction on, and one staff letter ingested.

    The working directory is elsewhere, so a loader that ignored the file would look in ./.assistant and find
    nothing, or another store."""
    from assistant import Settings, build_assistant

    data = tmp_path / "srv" / "assistant"
    config = tmp_path / "assistant.yaml"
    config.write_text(f"data_dir: {data}\nredact_pii: true\n")
    for variable in ("ASSISTANT_DATA_DIR", "ASSISTANT_QDRANT_PATH", "ASSISTANT_QDRANT_URL", "ASSISTANT_REDACT_PII"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("ASSISTANT_CONFIG", str(config))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "payments.md").write_text(LETTER)
    with build_assistant(Settings(), embedder=embedder) as assistant:
        report = assistant.ingest([docs], groups=["staff"])
    assert report.ok and report.redacted["email"] == 1 and report.redacted["iban"] == 1
    model = tmp_path / "model"
    model.mkdir()
    write_tokenizer(model)
    return data, model


def trained_text(out: Path, tokenizer_dir: Path) -> str:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    packed = [dataset.load_split(out, split) for split in dataset.SPLITS]
    return "".join(tokenizer.decode(split.input_ids.flatten().tolist()) for split in packed)


def test_prepare_reads_the_configured_store_and_redacts_as_it_says(installation, tmp_path):
    data, model = installation

    report = prepare(model, tmp_path / "out", groups=["staff"], seq_len=64, eval_fraction=0)

    assert report.manifest["store"] == str(data / "qdrant")
    assert report.manifest["redacted"]["email"] == 1 and report.manifest["redacted"]["iban"] == 1
    text = trained_text(tmp_path / "out", model)
    assert "Northwind" in text and "second approval" in text
    assert EMAIL not in text and "jane.doe" not in text and "5698" not in text


def test_a_document_stored_redacted_is_refused_when_this_run_does_not_redact(installation, tmp_path):
    _, model = installation

    with pytest.raises(PrepareError, match="redacted") as refused:
        prepare(model, tmp_path / "out", groups=["staff"], seq_len=64, redact_pii=False)

    assert "--redact-pii" in str(refused.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_broken_settings_file_stops_prepare_with_its_name(tmp_path, monkeypatch):
    config = tmp_path / "assistant.yaml"
    config.write_text("redact_pii: perhaps\n")
    monkeypatch.setenv("ASSISTANT_CONFIG", str(config))
    model = tmp_path / "model"
    model.mkdir()
    write_tokenizer(model)
    (tmp_path / "doc.md").write_text(LETTER)

    with pytest.raises(PrepareError, match="ASSISTANT_REDACT_PII='perhaps'"):
        prepare(model, tmp_path / "out", [tmp_path / "doc.md"], seq_len=64)


def test_no_module_reads_assistant_variables_by_hand():
    """By construction: the installation's settings have one loader (retrieval/installation.py). A module that reads
    the environment and names an ASSISTANT_ variable could disagree with it, as finetune prepare once did."""
    readers = []
    for package in ("assistant", "retrieval", "model", "finetune", "ui"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "retrieval" / "installation.py":
                continue
            tree = ast.parse(path.read_text(), str(path))
            reads_environment = any(
                isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") for node in ast.walk(tree)
            )
            names_a_setting = any(
                isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("ASSISTANT_")
                for node in ast.walk(tree)
            )
            if reads_environment and names_a_setting:
                readers.append(str(path.relative_to(ROOT)))
    assert readers == []
