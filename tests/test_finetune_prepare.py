"""`finetune prepare`: sample documents, JSONL examples and store-vetted documents -> a packed dataset on disk."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLES
from tiny_models import write_tokenizer

from finetune import dataset
from finetune.curation.pipeline import CurationSettings
from finetune.prepare import PrepareError, add_arguments, prepare, run

SEQ_LEN = 64
# For the tests of reading, splitting and access, whose few short, repeated texts curation would rightly remove.
RAW = CurationSettings(enabled=False)
MAX_POSITIONS = 256
FOLDER_GROUPS = {"public": "staff", "security": "security", "hr": "hr"}
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tokenizer and a config.json: all prepare reads of a model directory."""
    directory = tmp_path_factory.mktemp("model")
    write_tokenizer(directory)
    (directory / "config.json").write_text(json.dumps({"max_position_embeddings": MAX_POSITIONS}))
    return directory


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory, tokenizer):
    directory = tmp_path_factory.mktemp("chat-model")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(directory)
    tokenizer.chat_template = None
    return directory


def sample_folders():
    return [SAMPLES / folder for folder in FOLDER_GROUPS]


def split_paths(manifest, split):
    return {source["path"] for source in manifest["sources"] if source["split"] == split}


def scored_texts(packed, tokenizer) -> list[str]:
    """Each run of scored tokens in the packed stream, decoded: what the model is trained to write."""
    ids, labels = packed.input_ids.flatten().tolist(), packed.labels.flatten().tolist()
    runs, current = [], []
    for token, label in zip(ids, labels, strict=True):
        if label == dataset.IGNORE:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def count(packed, token: int) -> int:
    return int((packed.input_ids == token).sum())


def without_time(manifest: dict) -> dict:
    return {key: value for key, value in manifest.items() if key != "created_at"}


def write_jsonl(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


# --- documents ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def samples_dataset(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("samples") / "data"
    return out, prepare(model_dir, out, sample_folders(), seq_len=SEQ_LEN, eval_fraction=0.3, seed=7)


def test_sample_documents_make_a_loadable_dataset_split_by_document(samples_dataset, tokenizer):
    out, report = samples_dataset
    train, held_out = dataset.load_split(out, "train"), dataset.load_split(out, "eval")
    manifest = dataset.read_manifest(out)

    assert report.ok and not report.skipped and manifest == report.manifest
    assert train.input_ids.shape[1] == held_out.input_ids.shape[1] == SEQ_LEN == manifest["seq_len"]
    assert len(train) > len(held_out) > 0
    every = {str(path) for folder in sample_folders() for path in folder.iterdir()}
    assert split_paths(manifest, "train") | split_paths(manifest, "eval") == every
    assert not split_paths(manifest, "train") & split_paths(manifest, "eval")
    assert manifest["counts"]["documents"] == {"train": 4, "eval": 2}  # round(6 * 0.3)
    assert all(len(source["sha256"]) == 64 and source["format"] == "text" for source in manifest["sources"])
    assert manifest["tokenizer"]["path"] == str(report.manifest["tokenizer"]["path"])
    assert "tokenizer.json" in manifest["tokenizer"]["files"] and len(manifest["tokenizer"]["sha256"]) == 64
    assert manifest["seed"] == 7 and manifest["eval_fraction"] == 0.3 and manifest["groups"] == []
    # Plain text is learned whole: every token is scored but the BOS before each document and the final padding.
    assert train.input_ids[0, 0] == tokenizer.bos_token_id and count(train, tokenizer.bos_token_id) == 4
    pad = tokenizer.pad_token_id
    assert train.scored_tokens == train.input_ids.numel() - count(train, tokenizer.bos_token_id) - count(train, pad)
    assert count(train, tokenizer.eos_token_id) == 4 and train.labels[-1, -1] == dataset.IGNORE
    # Headings come back as Markdown headings above their sections.
    text = tokenizer.decode(train.input_ids.flatten().tolist() + held_out.input_ids.flatten().tolist())
    assert "## 1. Working hours\n\n### Standard week\n\nThe standard working week" in text


def test_the_same_seed_gives_the_same_files(samples_dataset, model_dir, tmp_path):
    out, first = samples_dataset
    again = prepare(model_dir, tmp_path / "again", sample_folders(), seq_len=SEQ_LEN, eval_fraction=0.3, seed=7)

    for name in dataset.SPLITS:
        assert (tmp_path / "again" / f"{name}.safetensors").read_bytes() == (out / f"{name}.safetensors").read_bytes()
    assert without_time(again.manifest) == without_time(first.manifest)


def test_headings_are_written_once_as_markdown(model_dir, tmp_path, tokenizer):
    doc = tmp_path / "docs" / "leave.md"
    doc.parent.mkdir()
    doc.write_text("# Leave\n\n## Annual\n\nTwenty seven days.\n\n## Sick\n\nTell your manager.\n")

    prepare(model_dir, tmp_path / "out", [doc.parent], seq_len=SEQ_LEN, curation=RAW)

    text = tokenizer.decode(dataset.load_split(tmp_path / "out", "train").input_ids.flatten().tolist())
    assert "# Leave\n\n## Annual\n\nTwenty seven days.\n\n## Sick\n\nTell your manager." in text


# --- JSONL ---------------------------------------------------------------------------------------

EXAMPLES = [
    {"text": "Drones are inspected every morning."},
    {"instruction": "Name the drone.", "input": "Product line of Northwind.", "output": "It is the Kestrel X4."},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Battery count?"},
            {"role": "assistant", "content": "Two batteries ship in the box."},
            {"role": "user", "content": "And the charger?"},
            {"role": "assistant", "content": "A four-bay hub."},
        ]
    },
    {"question": "not an example"},
    "{broken json",
]
PROMPTS = ["Name the drone.", "Product line of Northwind.", "Be brief.", "Battery count?", "And the charger?"]
RESPONSES = [
    "Drones are inspected every morning.",
    "It is the Kestrel X4.",
    "Two batteries ship in the box.",
    "A four-bay hub.",
]


@pytest.mark.parametrize("template", [False, True], ids=["plain", "chat-template"])
def test_jsonl_learns_only_the_responses(model_dir, chat_model_dir, tokenizer, tmp_path, template):
    source = write_jsonl(tmp_path / "examples.jsonl", EXAMPLES)

    model = chat_model_dir if template else model_dir
    report = prepare(model, tmp_path / "out", [source], seq_len=SEQ_LEN, eval_fraction=0)

    train = dataset.load_split(tmp_path / "out", "train")
    scored = scored_texts(train, tokenizer)
    whole = tokenizer.decode(train.input_ids.flatten().tolist())
    for response in RESPONSES:
        assert any(response in text for text in scored), (response, scored)
    for prompt in PROMPTS:
        assert prompt in whole and not any(prompt in text for text in scored), (prompt, scored)
    # Each response ends with EOS, which is learned: the model learns where to stop.
    assert all(text.endswith("</s>") for text in scored) and len(scored) == len(RESPONSES)
    if template:
        assert "<|user|>\nBattery count?</s>\n<|assistant|>\nTwo batteries ship in the box.</s>" in whole
        assert not any("<|assistant|>" in text for text in scored)
    else:
        assert "### Instruction:\nName the drone.\n\nProduct line of Northwind.\n\n### Response:\nIt is" in whole
    # The bad lines are reported by number; the three good ones were used.
    assert [(p.path, p.reason.split(":")[0]) for p in report.failed] == [
        (str(source), "line 4"),
        (str(source), "line 5"),
    ]
    assert "expected" in report.failed[0].reason and "not valid JSON" not in report.failed[0].reason
    counts = report.manifest["counts"]
    assert counts["examples"]["train"] + counts["examples"]["eval"] == 3
    assert all(sum(counts["scored_tokens"][name].values()) > 0 for name in ("text", "alpaca", "chat"))
    (entry,) = report.manifest["sources"]
    assert entry["format"] == "mixed" and sum(entry["examples"].values()) == 3 and entry["sha256"]


def test_lines_sharing_a_doc_field_stay_in_one_split(model_dir, tmp_path):
    lines = [{"text": f"Fact {n} about the handbook.", "doc": "handbook"} for n in range(20)]
    lines += [{"text": f"Fact {n} about the FAQ.", "source": "faq"} for n in range(20)]
    source = write_jsonl(tmp_path / "facts.jsonl", lines)

    report = prepare(model_dir, tmp_path / "out", [source], seq_len=SEQ_LEN, eval_fraction=0.5)

    assert report.manifest["counts"]["documents"] == {"train": 1, "eval": 1}
    assert report.manifest["counts"]["examples"] == {"train": 20, "eval": 20}
    assert report.manifest["sources"][0]["split"] == "train+eval"


def test_a_format_that_does_not_match_a_line_names_the_line(model_dir, tmp_path):
    source = write_jsonl(tmp_path / "mixed.jsonl", [EXAMPLES[1], EXAMPLES[0], EXAMPLES[1]])

    report = prepare(model_dir, tmp_path / "out", [source], seq_len=SEQ_LEN, jsonl_format="alpaca", curation=RAW)

    assert [p.reason for p in report.failed] == ['line 2: "instruction" must be a non-empty string']
    assert report.manifest["counts"]["examples"]["train"] + report.manifest["counts"]["examples"]["eval"] == 2


def test_one_document_goes_to_train_with_a_warning(model_dir, tmp_path):
    source = write_jsonl(tmp_path / "one.jsonl", [EXAMPLES[0]])

    report = prepare(model_dir, tmp_path / "out", [source], seq_len=SEQ_LEN)

    assert report.manifest["counts"]["documents"] == {"train": 1, "eval": 0}
    assert report.warnings and "only one document" in report.warnings[0]
    assert len(dataset.load_split(tmp_path / "out", "eval")) == 0


# --- the store ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def company(embedder, tmp_path_factory):
    """Copies of the samples ingested into an embedded store on disk, each folder for its group; then closed."""
    from assistant import Settings, build_assistant

    root = tmp_path_factory.mktemp("company")
    docs = root / "docs"
    for folder in FOLDER_GROUPS:
        shutil.copytree(SAMPLES / folder, docs / folder)
    store = root / "qdrant"
    with build_assistant(Settings(data_dir=root / "data", qdrant_path=str(store)), embedder=embedder) as assistant:
        for folder, group in FOLDER_GROUPS.items():
            assert assistant.ingest([docs / folder], groups=[group]).ok
    return docs, store


def test_a_group_gets_exactly_the_documents_it_may_read(company, model_dir, tmp_path):
    docs, store = company

    report = prepare(model_dir, tmp_path / "out", groups=["staff"], store=store, seq_len=SEQ_LEN)

    public = {str(path.resolve()) for path in (docs / "public").iterdir()}
    assert {source["path"] for source in report.manifest["sources"]} == public
    assert all(source["groups"] == ["staff"] for source in report.manifest["sources"])
    assert report.manifest["groups"] == ["staff"] and report.manifest["store"] == str(store)
    assert report.ok and dataset.load_split(tmp_path / "out", "train").scored_tokens > 0


def test_sources_the_groups_may_not_read_are_refused_and_listed(company, model_dir, tmp_path):
    docs, store = company
    stray = tmp_path / "stray" / "notes.md"
    stray.parent.mkdir()
    stray.write_text("# Notes\n\nNever ingested, so nobody vetted who may read it.\n")

    report = prepare(model_dir, tmp_path / "out", [docs, stray], groups=["staff"], store=store, seq_len=SEQ_LEN)

    used = {source["path"] for source in report.manifest["sources"]}
    assert used == {str(path.resolve()) for path in (docs / "public").iterdir()}
    refused = {p.path: p.reason for p in report.refused}
    assert set(refused) == {str(p) for folder in ("security", "hr") for p in (docs / folder).iterdir()} | {str(stray)}
    assert refused[str(docs / "hr" / "salary-bands-and-reviews.pdf")] == "not readable by staff (stored for hr)"
    assert "not in the store" in refused[str(stray)]
    assert not report.ok


def test_several_groups_get_only_what_every_one_of_them_may_read(make_assistant, model_dir, tmp_path):
    docs, store = tmp_path / "docs", tmp_path / "qdrant"
    docs.mkdir()
    stored_for = {"shared.md": ["hr", "staff"], "hr-only.md": ["hr"], "staff-only.md": ["staff"], "secret.md": []}
    with make_assistant(qdrant_path=str(store)) as assistant:
        for name, groups in stored_for.items():
            (docs / name).write_text(f"# {name}\n\nThis page is stored for {groups or 'administrators'}.\n" * 20)
            assert assistant.ingest([docs / name], groups=groups).ok

    report = prepare(
        model_dir, tmp_path / "out", [docs], groups=["hr", "staff"], store=store, seq_len=SEQ_LEN, curation=RAW
    )

    # The adapter will answer members of hr and of staff: each must be allowed to read all it learns.
    assert [Path(source["path"]).name for source in report.manifest["sources"]] == ["shared.md"]
    assert report.manifest["serves"] == ["hr", "staff"]
    refused = {Path(p.path).name: p.reason for p in report.refused}
    assert refused == {
        "hr-only.md": "not readable by staff (stored for hr)",
        "staff-only.md": "not readable by hr (stored for staff)",
        "secret.md": "not readable by hr, staff (stored for admins only)",
    }
    # Admins read everything, so naming admin narrows nothing; and files no store vouched for serve admins only.
    everything = prepare(model_dir, tmp_path / "admin", groups=["admin"], store=store, seq_len=SEQ_LEN, curation=RAW)
    assert len(everything.manifest["sources"]) == 4 and everything.manifest["serves"] == ["admin"]
    unvouched = prepare(model_dir, tmp_path / "files", [docs], seq_len=SEQ_LEN, curation=RAW)
    assert unvouched.manifest["serves"] == ["admin"]


def test_a_document_changed_or_gone_since_ingestion_is_not_used(company, model_dir, tmp_path):
    docs, store = company
    handbook, faq = docs / "public" / "employee-handbook.md", docs / "public" / "product-faq.html"
    original = handbook.read_bytes()
    handbook.write_bytes(original + b"\n\nEveryone may read the salary bands.\n")
    faq.rename(tmp_path / "faq.html")
    try:
        report = prepare(model_dir, tmp_path / "out", groups=["staff"], store=store, seq_len=SEQ_LEN)
    finally:
        handbook.write_bytes(original)
        (tmp_path / "faq.html").rename(faq)

    assert [source["path"] for source in report.manifest["sources"]] == [str(docs / "public" / "expense-policy.pdf")]
    refused = {p.path: p.reason for p in report.refused}
    assert refused[str(handbook)].startswith("changed since ingestion: re-ingest it")
    assert "re-ingest" in refused[str(faq)]


def test_a_locked_store_says_how_to_get_at_it(company, model_dir, tmp_path):
    from retrieval import ChunkStore, RetrievalSettings

    _, store = company
    holder = ChunkStore(RetrievalSettings(qdrant_path=str(store)), None)  # as the running portal would
    try:
        with pytest.raises(PrepareError, match="stop the assistant.*--qdrant-url"):
            prepare(model_dir, tmp_path / "out", groups=["staff"], store=store, seq_len=SEQ_LEN)
    finally:
        holder.close()
    assert not (tmp_path / "out").exists()


def test_a_missing_store_is_an_error_and_is_not_created(model_dir, tmp_path):
    with pytest.raises(PrepareError, match=f"no documents ingested at {tmp_path / 'nowhere'}"):
        prepare(model_dir, tmp_path / "out", groups=["staff"], store=tmp_path / "nowhere", seq_len=SEQ_LEN)
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "out").exists()


def test_jsonl_with_groups_is_refused_up_front(model_dir, tmp_path):
    source = write_jsonl(tmp_path / "examples.jsonl", EXAMPLES[:1])
    with pytest.raises(PrepareError, match="JSONL, which the store cannot vouch for"):
        prepare(model_dir, tmp_path / "out", [source], groups=["staff"], store=tmp_path, seq_len=SEQ_LEN)


# --- bad input ------------------------------------------------------------------------------------


def test_an_empty_folder_is_an_empty_dataset_and_writes_nothing(model_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PrepareError, match=r"empty dataset: .*empty: no documents in this folder"):
        prepare(model_dir, tmp_path / "out", [tmp_path / "empty"], seq_len=SEQ_LEN)
    assert not (tmp_path / "out").exists()


def test_a_sequence_longer_than_the_model_reads_is_refused(model_dir, tmp_path):
    with pytest.raises(PrepareError, match=f"--seq-len 512 is over the model's limit of {MAX_POSITIONS}"):
        prepare(model_dir, tmp_path / "out", sample_folders(), seq_len=512)
    assert not (tmp_path / "out").exists()


def test_an_unknown_format_is_refused(model_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--model", str(model_dir), "--out", str(tmp_path / "out"), "--format", "csv"])
    assert exit_info.value.code == 2 and "invalid choice: 'csv'" in capsys.readouterr().err
    with pytest.raises(PrepareError, match="unknown --format 'csv'"):
        prepare(model_dir, tmp_path / "out", sample_folders(), seq_len=SEQ_LEN, jsonl_format="csv")
    assert not (tmp_path / "out").exists()


def test_out_never_clobbers_a_directory_that_is_not_a_dataset(model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.txt").write_text("not yours")
    source = write_jsonl(tmp_path / "examples.jsonl", EXAMPLES[:3])

    with pytest.raises(PrepareError, match="non-empty directory that holds no dataset"):
        prepare(model_dir, out, [source], seq_len=SEQ_LEN)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.txt"]

    # An earlier dataset is rebuilt in place.
    prepare(model_dir, tmp_path / "data", [source], seq_len=SEQ_LEN)
    prepare(model_dir, tmp_path / "data", [source], seq_len=SEQ_LEN * 2)
    assert dataset.read_manifest(tmp_path / "data")["seq_len"] == SEQ_LEN * 2


def test_nothing_to_prepare_is_an_error(model_dir, tmp_path):
    with pytest.raises(PrepareError, match="nothing to prepare"):
        prepare(model_dir, tmp_path / "out", seq_len=SEQ_LEN)


# --- the command ----------------------------------------------------------------------------------


def invoke(*argv) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return run(parser.parse_args([str(arg) for arg in argv]))


def test_the_command_reports_failures_and_exits_by_strictness(model_dir, tmp_path, capsys):
    source = write_jsonl(tmp_path / "examples.jsonl", EXAMPLES)
    common = ["--model", model_dir, "--source", source, "--seq-len", SEQ_LEN]

    assert invoke(*common, "--out", tmp_path / "a") == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"wrote {tmp_path / 'a'}: ") and f"failed: {source}: line 4:" in err

    assert invoke(*common, "--out", tmp_path / "b", "--strict", "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["manifest"]["seq_len"] == SEQ_LEN and report["failed"][0]["reason"].startswith("line 4:")

    assert invoke(*common, "--out", tmp_path / "c", "--seq-len", "4096") == 2
    assert capsys.readouterr().err.startswith("finetune prepare: --seq-len 4096 is over")


def test_a_link_out_of_a_source_folder_is_not_followed(model_dir, tmp_path):
    # The same walk as ingestion's: a folder prepared for training yields what it holds, not what it points at.
    folder, outside = tmp_path / "docs", tmp_path / "private"
    folder.mkdir()
    outside.mkdir()
    (folder / "handbook.md").write_text("# Handbook\n\nThe office opens at eight every weekday morning.\n" * 5)
    (outside / "salaries.md").write_text("# Salaries\n\nBand ZEBRA-7731 pays 91,400 a year.\n" * 5)
    (folder / "salaries.md").symlink_to(outside / "salaries.md")

    report = prepare(model_dir, tmp_path / "out", [folder], seq_len=SEQ_LEN, curation=RAW)

    assert [Path(source["path"]).name for source in report.manifest["sources"]] == ["handbook.md"]
    (skipped,) = report.skipped
    assert skipped.path == str(folder / "salaries.md") and "outside the folder" in skipped.reason
