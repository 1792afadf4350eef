"""Retrieval over long real documents: the project's own questions over the real PDFs in ../shared/data/corpus.

    .venv/bin/python -m benchmarks.documents [--mode dense|sparse|hybrid|hybrid+rerank ...] [--k 5]
        [--questions benchmarks/questions/FILE.jsonl ...] [--work DIR] [--json OUT] [--embedding-model NAME_OR_DIR]

The folders the question sets ask about (the OPM performance reports and ten agencies' plans, the clinical-trial
protocols, the NTSB reports) are ingested through ``Assistant.ingest`` into a fresh embedded store, as an
organisation's files are, and every question goes through ``Assistant.search`` as a member of the group they were
shared with. Per mode, over the top k passages:

- document hit@k: a passage from an expected document;
- share@k: the share of the k passages that come from an expected document;
- figure@k: the expected figure or phrase appears in a passage's text (case and spacing ignored);
- page@k: a passage from the first expected document on the expected page;
(scored by the assistant's own evaluation, assistant/evaluation/, as `assistant eval` scores them);
- ingestion pages/s (end to end: reading, OCR where a page needs it, chunking, embedding, writing) and search p50.

Each also by question kind (table, edition, multi, prose, ocr). The question sets and how they were written are in
benchmarks/questions/README.md; none was written from, or tuned to, what the search returns.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pypdfium2 as pdfium

from assistant import Assistant, User, build_assistant
from assistant.evaluation.records import EvaluationRun
from benchmarks.beir import MODES, mode_settings
from retrieval.embedding import LocalEmbedding

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
FOLDERS = ("us_fed_agency_reports", "nih_clinical_trial_protocols", "ntsb_aviation_reports_pdf")
QUESTIONS = sorted((ROOT / "benchmarks" / "questions").glob("*.jsonl"))
GROUP = "benchmark"


def read_questions(files: list[Path]) -> str:
    """The question files as one file, in the format `assistant eval` reads."""
    return "".join(file.read_text(encoding="utf-8").rstrip("\n") + "\n" for file in files)


def pages_in(folders: list[Path]) -> int:
    total = 0
    for pdf in (file for folder in folders for file in sorted(folder.glob("*.pdf"))):
        document = pdfium.PdfDocument(pdf)
        total += len(document)
        document.close()
    return total


def run(assistant: Assistant, questions: str, k: int) -> EvaluationRun:
    """The questions scored by the assistant's own evaluation (assistant/evaluation/), as a member of the group."""
    reader = User("benchmark", (GROUP,))
    assistant.search("warm-up", reader, k=k)
    return assistant.evaluate(questions, "benchmark", User("benchmark", ("admin",)), reader=reader, k=k, answers=False)


def rows(run: EvaluationRun) -> dict[str, dict[str, float]]:
    """Per kind (and "all"): n and each figure."""
    figures = {"all": run.metrics, **run.by_kind}
    return {
        name: {"n": measured["hit"].n, **{m: measured[m].value or 0.0 for m in ("hit", "share", "answer", "page")}}
        for name, measured in figures.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", action="append", choices=MODES, help="search mode(s); default: hybrid")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--questions", type=Path, action="append", help="question files (default: all in questions/)")
    parser.add_argument("--work", type=Path, default=None, help="where the store goes (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="per-question results, for reading what was missed")
    parser.add_argument("--embedding-model", default=None, help="a bundled model's name or a local directory")
    args = parser.parse_args()
    modes = args.mode or ["hybrid"]
    folders = [CORPUS / name for name in FOLDERS]
    if missing := [str(folder) for folder in folders if not folder.is_dir()]:
        raise SystemExit(f"the real corpora are missing: {', '.join(missing)} (see ../shared/data/README.md)")
    questions = read_questions(args.questions or QUESTIONS)
    count = sum(1 for line in questions.splitlines() if line.strip())
    pages = pages_in(folders)
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        store = Path(work) / "store"
        embedder = LocalEmbedding(args.embedding_model)
        with build_assistant(mode_settings(modes[0], store), embedder=embedder) as assistant:
            started = time.perf_counter()
            report = assistant.ingest(folders, groups=[GROUP], progress=True)
            seconds = time.perf_counter() - started
        for failure in report.failed:
            print(f"refused: {failure}")
        print(
            f"ingested {len(report.added)} files, {pages} pages, {report.chunks} chunks in {seconds:.1f} s: "
            f"{pages / seconds:.2f} pages/s; {len(report.failed)} refused; {count} questions"
        )
        everything = {}
        for mode in modes:
            with build_assistant(mode_settings(mode, store), embedder=embedder) as assistant:
                scored = run(assistant, questions, args.k)
            everything[mode] = scored.model_dump(mode="json")["results"]
            print(f"{mode}: search p50 {scored.latency_ms['p50']:.1f} ms")
            print(f"| kind | n | hit@{args.k} | share@{args.k} | figure@{args.k} | page@{args.k} |")
            for name, row in sorted(rows(scored).items(), key=lambda item: (item[0] != "all", item[0])):
                print(
                    f"| {name} | {row['n']} | {row['hit']:.2f} | {row['share']:.2f} | {row['answer']:.2f} | "
                    f"{row['page']:.2f} |"
                )
        if args.json:
            args.json.write_text(json.dumps(everything, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
