"""`finetune prepare`'s curation: copies, boilerplate and text that is not prose are left out, counted and shown."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLES
from markdown_it import MarkdownIt
from tiny_models import write_tokenizer

from finetune import dataset
from finetune.curation import near_duplicates, quality
from finetune.curation.pipeline import CurationSettings, curate
from finetune.prepare import CURATION_REPORT, add_arguments, prepare, run
from finetune.sources import SourceError, read_document

SEQ_LEN = 64
CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus"
HANDBOOK = SAMPLES / "public" / "employee-handbook.md"
INCIDENT = SAMPLES / "security" / "incident-report-2026-03.md"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("model")
    write_tokenizer(directory)
    return directory


def words_of(text: str) -> int:
    return len(text.split())


def versions_of_the_handbook(folder: Path) -> list[Path]:
    """The sample handbook as an office's shared drive holds it: the current version, last year's (another date, a
    paragraph it did not have yet), and the same page exported to HTML."""
    folder.mkdir(parents=True, exist_ok=True)
    text = HANDBOOK.read_text()
    current = folder / "handbook.md"
    current.write_text(text)
    older = folder / "handbook-2025.md"
    paragraphs = text.split("\n\n")
    older.write_text(
        "\n\n".join(p for i, p in enumerate(paragraphs) if i != 5)
        .replace("Version 4.2", "Version 4.1")
        .replace("1 February 2026", "1 March 2025")
    )
    exported = folder / "handbook-export.html"
    exported.write_text(f"<html><body>{MarkdownIt().render(text)}</body></html>")
    return [current, older, exported]


# --- copies ------------------------------------------------------------------------------------


def test_versions_and_exports_of_one_document_are_one_document(tmp_path):
    paths = versions_of_the_handbook(tmp_path / "drive")
    sources = [read_document(path) for path in [*paths, INCIDENT]]

    report = curate(sources, CurationSettings(), lambda texts: sum(map(words_of, texts)))

    # The fullest copy stays (the export, whose headings and lists read as a few more words); never the older one.
    assert [Path(source.path).name for source in sources] == ["handbook-export.html", INCIDENT.name]
    # The export reads as the same words as its Markdown (an exact copy); last year's version is a near one.
    assert report.steps["exact_duplicates"].documents == 1 and report.steps["near_duplicates"].documents == 1
    reasons = [sample["reason"] for sample in report.steps["near_duplicates"].samples]
    assert all(re.fullmatch(r"0\.\d\d alike to .*handbook-export\.html, kept", r) for r in reasons), reasons


def test_near_duplicate_clusters_match_their_jaccard_on_real_text():
    handbook, incident = HANDBOOK.read_text(), INCIDENT.read_text()
    edited = handbook.replace("37.5 hours", "38 hours").replace("Core hours", "Our core hours")

    groups, signatures = near_duplicates.clusters([handbook, incident, edited], threshold=0.8)

    assert groups == [[0, 2]]
    grams = [
        {tuple(words[i : i + 5]) for i in range(len(words) - 4)}
        for words in (re.findall(r"\w+", text.lower()) for text in (handbook, edited))
    ]
    exact = len(grams[0] & grams[1]) / len(grams[0] | grams[1])
    assert abs(signatures[0].jaccard(signatures[2]) - exact) < 0.1


def test_a_passage_in_two_documents_is_learned_once(tmp_path):
    shared = (
        "Visitors must sign in at reception, wear the visitor badge at all times and be escorted by the employee "
        "they are visiting until they leave the building."
    )
    sources = []
    for name, path in (("handbook.md", HANDBOOK), ("incident.md", INCIDENT)):
        (tmp_path / name).write_text(path.read_text() + "\n\n" + shared + "\n")
        sources.append(read_document(tmp_path / name))

    report = curate(sources, CurationSettings(), lambda texts: sum(map(words_of, texts)))

    texts = [source.documents[0].examples[0].text for source in sources]
    assert sum(text.count("Visitors must sign in at reception") for text in texts) == 1
    assert report.steps["repeated_passages"].passages == 1


# --- boilerplate and quality --------------------------------------------------------------------


def test_boilerplate_contents_and_symbols_go_and_the_prose_and_headings_stay(tmp_path):
    footer = "Northwind Aerial Robotics confidential: do not forward outside the company."
    bodies = {
        "handbook.md": HANDBOOK.read_text(),
        "incident.md": INCIDENT.read_text(),
        "faq.md": read_document(SAMPLES / "public" / "product-faq.html").documents[0].examples[0].text,
    }
    for number, (name, body) in enumerate(bodies.items()):
        # Each document's own contents, menu and figures (repeated ones would go as boilerplate lines first).
        contents = f"Contents\n1. Scope of {name} ........ {number}\n2. Rules ........ {number + 4}\n3. Forms .... {number + 9}"
        navigation = "\n".join(f"- [{page} {number}](/{page}/{number})" for page in ("Home", "Leave", "Expenses"))
        # A table of figures is content; a run of symbols from a bad extraction is not.
        figures = f"| 20{number}1 | 2022 |\n|---|---|\n| 4.1{number} | 5.22 |\n| 0.3{number} | 0.42 |"
        garbage = f"\u25a0\u25a0 \u00a6\u00a6 ~~~ {number} ^^ \u2022\u2022\u2022\u2022 \u00a6 \u25a0 ~~ ** ++ == \u25a0\u25a0 }}{{ //"
        (tmp_path / name).write_text(f"{contents}\n\n{navigation}\n\n{body}\n\n{figures}\n\n{garbage}\n\n{footer}\n")
    sources = [read_document(tmp_path / name) for name in bodies]

    report = curate(sources, CurationSettings(), lambda texts: sum(map(words_of, texts)))

    for source in sources:
        text = source.documents[0].examples[0].text
        assert footer not in text
        assert "........" not in text and "Home" not in text
        assert "| 0.42 |" in text and "~~~" not in text
    handbook = sources[0].documents[0].examples[0].text
    assert "## 1. Working hours" in handbook and "Overtime must be approved in advance" in handbook
    assert report.steps["boilerplate_lines"].lines == 3  # the footer, once per document
    assert report.steps["contents"].passages == 3
    assert report.steps["navigation"].passages == 3
    assert report.steps["symbols"].passages == 3
    assert report.steps["boilerplate_lines"].samples[0]["reason"] == "on 3 documents"


def test_versions_of_a_page_do_not_vote_their_own_lines_boilerplate(tmp_path):
    # Three versions of a short policy, each too different from the others to be a copy (one paragraph
    # in six differs), share most of their lines: counted as one family, those lines stay.
    paragraphs = HANDBOOK.read_text().split("\n\n")[:12]
    for version in range(3):
        kept = [p for i, p in enumerate(paragraphs) if i % 6 != version]
        (tmp_path / f"policy-v{version}.md").write_text("\n\n".join(kept))
    sources = [read_document(tmp_path / f"policy-v{version}.md") for version in range(3)]
    sources.append(read_document(INCIDENT))

    report = curate(sources, CurationSettings(), lambda texts: sum(map(words_of, texts)))

    assert report.steps["near_duplicates"].documents == 0
    assert report.steps["boilerplate_lines"].lines == 0


def test_links_keep_their_words_and_lose_their_targets():
    block = 'Ask [People & Culture](/people) or see {% page "/leave" %} the [leave policy](https://x.example/leave).'

    assert quality.strip_markup(block) == "Ask People & Culture or see  the leave policy."
    assert "(/people)" in quality.markup(block) and '{% page "/leave" %}' in quality.markup(block)


def test_documents_too_short_repetitive_or_in_another_language_are_left_out(tmp_path):
    (tmp_path / "stub.md").write_text("# Smartsheet\n\nAsk IT for an account.\n")
    (tmp_path / "loop.md").write_text("# Export\n\n" + "Page content could not be extracted from this page. " * 40)
    (tmp_path / "fr.md").write_text(
        "# Congés\n\nChaque salarié a droit à vingt-sept jours de congés payés par an. Les demandes sont faites au "
        "moins deux semaines à l'avance auprès du responsable, qui les valide dans l'outil de planification. Les "
        "jours non pris au 31 décembre peuvent être reportés jusqu'à la fin du mois de mars suivant, dans la limite "
        "de cinq jours. Un congé exceptionnel est accordé pour un mariage, une naissance ou le décès d'un proche.\n"
    )
    sources = [read_document(path) for path in [tmp_path / "stub.md", tmp_path / "loop.md", tmp_path / "fr.md"]]
    sources.append(read_document(HANDBOOK))

    report = curate(sources, CurationSettings(languages=("en",)), lambda texts: sum(map(words_of, texts)))

    assert [Path(source.path).name for source in sources] == [HANDBOOK.name]
    assert [report.steps[step].documents for step in ("short", "repetitive", "language")] == [1, 1, 1]
    assert report.steps["language"].samples[0]["reason"] == "in fr, not en"
    assert report.languages == {"en": 1}


def test_jsonl_examples_are_only_deduplicated(model_dir, tmp_path):
    lines = [{"text": "The VPN is vpn.northwind.example."}] * 2 + [{"text": "Badges are grey."}]
    source = tmp_path / "facts.jsonl"
    source.write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    report = prepare(model_dir, tmp_path / "out", [source], seq_len=SEQ_LEN, eval_fraction=0)

    assert report.manifest["counts"]["examples"]["train"] == 2
    assert report.manifest["curation"]["removed"]["exact_duplicates"]["documents"] == 1
    assert report.manifest["curation"]["removed"]["short"]["documents"] == 0


# --- prepare: the split after deduplication, the manifest and the report -----------------------


def test_prepare_splits_after_deduplication_and_writes_the_report(model_dir, tmp_path):
    versions_of_the_handbook(tmp_path / "drive")
    for path in SAMPLES.rglob("*"):
        if path.parent != SAMPLES and path.suffix in {".md", ".pdf", ".docx", ".html"} and path != HANDBOOK:
            (tmp_path / "drive" / path.name).write_bytes(path.read_bytes())

    report = prepare(model_dir, tmp_path / "out", [tmp_path / "drive"], seq_len=SEQ_LEN, eval_fraction=0.3, seed=3)

    kept = [Path(source["path"]).name for source in report.manifest["sources"]]
    assert sum(name.startswith("handbook") for name in kept) == 1
    assert report.manifest["counts"]["documents"]["train"] + report.manifest["counts"]["documents"]["eval"] == 6
    removed = report.manifest["curation"]["removed"]
    assert removed["exact_duplicates"]["documents"] == 1 and removed["near_duplicates"]["documents"] == 1
    assert removed["near_duplicates"]["tokens"] > 1000
    written = json.loads((tmp_path / "out" / CURATION_REPORT).read_text())
    assert written["removed"]["near_duplicates"]["samples"][0]["reason"].endswith("handbook-export.html, kept")
    assert "curation removed" in report.summary() and CURATION_REPORT in report.summary()
    # Without curation all three copies are trained on, and may sit on both sides of the split.
    raw = prepare(
        model_dir, tmp_path / "raw", [tmp_path / "drive"], seq_len=SEQ_LEN, curation=CurationSettings(enabled=False)
    )
    assert len(raw.manifest["sources"]) == 8
    assert sum(s.tokens for s in raw.curation.steps.values()) == 0
    assert (
        dataset.load_split(tmp_path / "raw", "train").scored_tokens
        > dataset.load_split(tmp_path / "out", "train").scored_tokens
    )


def test_versions_of_a_page_land_in_one_split(model_dir, tmp_path):
    paragraphs = HANDBOOK.read_text().split("\n\n")[:24]
    for version in range(3):  # 0.64 to 0.73 alike: not copies, but versions of one page
        kept = [p for i, p in enumerate(paragraphs) if i % 8 != version]
        (tmp_path / "drive" / f"policy-v{version}.md").parent.mkdir(exist_ok=True)
        (tmp_path / "drive" / f"policy-v{version}.md").write_text("\n\n".join(kept))
    shutil.copyfile(INCIDENT, tmp_path / "drive" / INCIDENT.name)

    # Their shared paragraphs are kept once by default (the later versions keep only what they add); kept whole
    # here, so that each version is a document of its own that could land on either side.
    whole = CurationSettings(repeated_passage_words=10_000)

    sides = set()
    for seed in range(6):
        out = tmp_path / f"out{seed}"
        report = prepare(
            model_dir, out, [tmp_path / "drive"], seq_len=SEQ_LEN, eval_fraction=0.5, seed=seed, curation=whole
        )
        splits = {Path(source["path"]).name: source["split"] for source in report.manifest["sources"]}
        assert len({splits[f"policy-v{version}.md"] for version in range(3)}) == 1, splits
        sides.add(splits["policy-v0.md"])
    assert sides == {"train", "eval"}  # the family is held out for some seeds, trained on for others


def test_the_command_takes_curation_flags_and_names_a_bad_one(model_dir, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--model", str(model_dir), "--source", str(HANDBOOK), "--out", str(tmp_path / "out")]

    assert run(parser.parse_args([*base, "--near-duplicate-threshold", "1.5"])) == 2
    assert "--near-duplicate-threshold 1.5" in capsys.readouterr().err
    assert run(parser.parse_args([*base, "--no-curation", "--json"])) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["curation"]["settings"]["enabled"] is False
    assert run(parser.parse_args([*base, "--language", "fr", "--json"])) == 2
    assert "curation removed every text" in capsys.readouterr().err


# --- real documents ----------------------------------------------------------------------------


@pytest.mark.skipif(not CORPUS.is_dir(), reason="needs ../shared/data/corpus (the real handbook and policies)")
def test_on_real_pages_curation_keeps_the_prose():
    paths = sorted((CORPUS / "github_site_policy" / "Policies").rglob("*.md"))
    paths += sorted((CORPUS / "tts_18f_handbook" / "pages" / "travel-and-leave").rglob("*.md"))
    sources = []
    for path in paths:
        try:
            sources.append(read_document(path))
        except SourceError:  # front-matter-only pages are refused by the loader, as in prepare
            continue
    before = {source.path: source.documents[0].examples[0].text for source in sources}

    report = curate(sources, CurationSettings(), lambda texts: sum(map(words_of, texts)))

    removed = sum(step.tokens for step in report.steps.values())
    assert 0 < removed < 0.15 * sum(map(words_of, before.values()))
    after = {source.path: source.documents[0].examples[0].text for source in sources}
    dropped = set(before) - set(after)
    # Only pages with little prose of their own may go as a whole.
    assert all(words_of(quality.strip_markup(before[path])) < 400 for path in dropped), dropped
    terms = after[str(CORPUS / "github_site_policy" / "Policies" / "github-terms" / "github-terms-of-service.md")]
    assert "Definitions" in terms and "](/" not in terms
