"""Checks every question set here against the real files: keys, files, and the answer on the stated page.

    .venv/bin/python -m benchmarks.questions.check

An answer must appear on its page in PDFium's text, case and spacing ignored; an "ocr" question's page must have no
text layer (its answer was read off the page image by a person).
"""

import json
from pathlib import Path

import pypdfium2 as pdfium

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parents[1].parent / "shared" / "data" / "corpus"
KEYS = {"question", "expected", "page", "answer", "kind"}


def page_text(path: Path, page: int) -> str:
    document = pdfium.PdfDocument(path)
    try:
        return " ".join(document[page - 1].get_textpage().get_text_bounded().split()).lower()
    finally:
        document.close()


def problems(question: dict, files: dict[str, Path]) -> list[str]:
    found = []
    if missing := KEYS - set(question):
        found.append(f"missing {sorted(missing)}")
    for name in question.get("expected", []):
        if name not in files:
            found.append(f"no file {name}")
    if found:
        return found
    path, page = files[question["expected"][0]], question["page"]
    text = page_text(path, page)
    if "ocr" in question["kind"]:
        if text:
            found.append(f"page {page} of {path.name} has a text layer, so it is no OCR question")
    elif " ".join(question["answer"].split()).lower() not in text:
        found.append(f"{question['answer']!r} is not on page {page} of {path.name}")
    return found


def main() -> None:
    files = {path.name: path for path in CORPUS.glob("*/*.pdf")}
    if not files:
        raise SystemExit(f"the real corpora are missing: {CORPUS} (see ../shared/data/README.md)")
    failed = 0
    for question_file in sorted(HERE.glob("*.jsonl")):
        lines = [json.loads(line) for line in question_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        for number, question in enumerate(lines, 1):
            for problem in problems(question, files):
                failed += 1
                print(f"{question_file.name}:{number}: {problem}")
        print(f"{question_file.name}: {len(lines)} questions checked")
    if failed:
        raise SystemExit(f"{failed} problem(s)")


if __name__ == "__main__":
    main()
