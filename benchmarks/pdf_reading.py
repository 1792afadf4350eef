"""Reading the real PDFs, before any embedding: speed, what their pages inflate to, and the table finder.

    .venv/bin/python -m benchmarks.pdf_reading [--part speed|inflation|tables ...]

- speed: ``retrieval.loaders.load`` over every PDF of ../shared/data/corpus and samples/ (OCR included where a page
  has no text layer), pages/s and tables found;
- inflation: the most any page's content streams inflate to, and the largest inflation ratio of a stream over
  100 KB, the figures the limits of ``retrieval/loaders/pdf_guard.py`` are set from;
- tables: the product's table finder (PDFium's paths and text, pdfplumber's finder) against pdfplumber reading the
  same pages itself, on the first 25 pages of four files: whether they find the same tables, and the time of each.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pdfplumber
import pypdfium2 as pdfium
from pypdf import PdfReader

from retrieval.loaders import LoadError, load
from retrieval.loaders.pdf_guard import content_streams, inflated_size
from retrieval.loaders.pdf_tables import MIN_FILLED_CELLS, page_tables

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
TABLE_FILES = (
    "us_fed_agency_reports/2019-annual-performance-report.pdf",
    "us_fed_agency_reports/EPA2022.pdf",
    "nih_clinical_trial_protocols/NCT06155006_Prot_SAP_000.pdf",
    "ntsb_aviation_reports_pdf/20080102X00002.pdf",
)
_LARGE_STREAM = 100_000


def pdfs() -> list[Path]:
    return sorted(CORPUS.glob("*/*.pdf")) + sorted((ROOT / "samples").rglob("*.pdf"))


def speed() -> None:
    pages = tables = 0
    seconds = 0.0
    for path in pdfs():
        started = time.perf_counter()
        try:
            sections = load(path)
        except LoadError as error:
            print(f"refused {path.name}: {error}")
            continue
        seconds += time.perf_counter() - started
        pages += len(pdfium.PdfDocument(path))
        tables += sum(1 for section in sections if section.metadata.get("table"))
    print(
        f"speed: {len(pdfs())} PDFs, {pages} pages, {tables} tables in {seconds:.1f} s: {pages / seconds:.1f} pages/s"
    )


def inflation() -> None:
    largest_page, largest_ratio = (0, ""), (0.0, "")
    pages = 0
    for path in pdfs():
        for number, page in enumerate(PdfReader(path).pages, 1):
            pages += 1
            total = 0
            for stream in content_streams(page):
                size = inflated_size(stream, number)
                total += size
                ratio = size / max(len(stream._data), 1)
                if size > _LARGE_STREAM and ratio > largest_ratio[0]:
                    largest_ratio = (ratio, f"{path.name} p. {number}")
            largest_page = max(largest_page, (total, f"{path.name} p. {number}"))
    print(
        f"inflation: {pages} pages; largest page {largest_page[0] / 1024:.0f} KB ({largest_page[1]}); largest ratio "
        f"of a stream over 100 KB {largest_ratio[0]:.1f} ({largest_ratio[1]})"
    )


def tables() -> None:
    same = differ = 0
    ours = theirs = 0.0
    for name in TABLE_FILES:
        document = pdfium.PdfDocument(CORPUS / name)
        with pdfplumber.open(CORPUS / name) as pdf:
            for index, plumber_page in enumerate(pdf.pages[:25]):
                started = time.perf_counter()
                page = document[index]
                found = page_tables(page, page.get_textpage())
                ours += time.perf_counter() - started
                started = time.perf_counter()
                reference = []
                for table in sorted(plumber_page.find_tables(), key=lambda table: table.bbox[1]):
                    rows = [[" ".join((cell or "").split()) for cell in row] for row in table.extract()]
                    rows = [row for row in rows if any(row)]
                    if sum(1 for row in rows for cell in row if cell) >= MIN_FILLED_CELLS and len(rows) >= 2:
                        reference.append(rows)
                theirs += time.perf_counter() - started
                if [len(rows) for rows in found] == [len(rows) for rows in reference]:
                    same += 1
                else:
                    differ += 1
                    print(f"  {name} p. {index + 1}: {len(found)} tables against pdfplumber's {len(reference)}")
    print(
        f"tables: {same} pages with the same tables and row counts, {differ} differ; "
        f"ours {ours:.1f} s, pdfplumber's own {theirs:.1f} s ({theirs / ours:.0f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", action="append", choices=("speed", "inflation", "tables"))
    args = parser.parse_args()
    if not CORPUS.is_dir():
        raise SystemExit(f"the real corpora are missing: {CORPUS} (see ../shared/data/README.md)")
    for part in args.part or ["speed", "inflation", "tables"]:
        {"speed": speed, "inflation": inflation, "tables": tables}[part]()


if __name__ == "__main__":
    main()
