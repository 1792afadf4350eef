"""Long real PDFs: tables kept as tables, running lines gone, every chunk knowing its document and period.

The real reports, protocols and accident reports come from ../shared/data/corpus (skipped without it); the
product's own samples are in samples/.
"""

from pathlib import Path

import pytest
from llama_index.core.schema import NodeWithScore, TextNode
from reportlab.lib.pagesizes import letter
from reportlab.pdfgen import canvas

from retrieval.document_info import describe
from retrieval.editions import prefer_period
from retrieval.ingest import embedding_text
from retrieval.loaders import load
from retrieval.loaders.pdf_guard import check_inflation
from retrieval.periods import asked_period, find_period
from retrieval.tables import records, split_rows, to_markdown

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "corpus"
needs_corpus = pytest.mark.skipif(not CORPUS.is_dir(), reason=f"the real corpora are not at {CORPUS}")
SALARY = ROOT / "samples" / "hr" / "salary-bands-and-reviews.pdf"


def test_a_table_is_searched_as_column_value_records_and_split_with_its_header():
    rows = [["Level", "Title", "Band"]] + [[f"L{n}", f"Role {n}", f"{n}0,000"] for n in range(1, 41)]
    grid = to_markdown(rows)
    assert records(grid)[3] == "Level: L4; Title: Role 4; Band: 40,000"
    pieces = split_rows(grid, 60, str.split)
    assert len(pieces) > 2
    for piece in pieces:
        assert piece.splitlines()[0] == "| Level | Title | Band |"
    assert sum(len(records(piece)) for piece in pieces) == 40


def test_a_pdf_table_comes_out_as_rows_under_its_section():
    sections = load(SALARY)
    tables = [s for s in sections if s.metadata.get("table")]
    bands = next(s for s in tables if "Band minimum" in s.text)
    assert bands.metadata["heading"] == "2. Job levels and salary bands"
    assert bands.metadata["page"] == 1
    lead = next(r for r in records(bands.text) if r.startswith("Level: L4 Lead"))
    assert "Typical roles: Lead pilot, senior engineer, project manager" in lead
    assert "Band midpoint: 80,000" in lead


@needs_corpus
def test_running_headers_and_page_numbers_are_removed_and_pages_kept():
    sections = load(CORPUS / "ntsb_aviation_reports_pdf" / "20071229X02007.pdf")
    assert {s.metadata["page"] for s in sections} == {1, 2, 3, 4}
    assert not any("Page 2 of 4" in s.text or "Page 3 of 4" in s.text for s in sections)


@needs_corpus
def test_every_chunk_of_a_report_names_whose_report_it_is_and_its_date():
    path = CORPUS / "ntsb_aviation_reports_pdf" / "20071231X02009.pdf"
    info = describe(load(path), path)
    assert info.context.startswith("National Transportation Safety Board Aviation Accident Final Report")
    assert "Death Valley, CA" in info.context
    assert info.period is not None and info.period.dated == "2007-11-29"
    line = embedding_text("| Measure | Result |\n| --- | --- |\n| Hiring | 73.5 |", info.payload())
    assert line.splitlines()[0] == info.context
    assert line.splitlines()[-1] == "Measure: Hiring; Result: 73.5"


def test_what_the_running_lines_say_of_the_document_goes_into_its_line(tmp_path):
    # A filing whose cover opens on the regulator's name and a long line of prose: only its running footer says
    # whose report it is and which quarter, and a page from its middle says neither.
    path = tmp_path / "filing.pdf"
    pdf = canvas.Canvas(str(path), pagesize=letter, invariant=True)
    cover = [
        "UNITED STATES",
        "SECURITIES AND EXCHANGE COMMISSION",
        "QUARTERLY REPORT PURSUANT TO SECTION 13 OR 15(d) OF THE SECURITIES EXCHANGE ACT OF 1934 FOR THE QUARTER",
    ]
    body = ["Net sales rose", "Operating costs fell", "Cash held steady", "Debt was repaid", "Staff grew"]
    for number in range(1, 7):
        lines = cover if number == 1 else [f"{body[number - 2]} by {number} percent against last year."]
        for row, line in enumerate(lines):
            pdf.drawString(72, 700 - 20 * row, line)
        if number > 1:
            pdf.drawString(72, 40, f"Northwind Traders Inc. | Q3 2023 Form 10-Q | {number}")
        pdf.showPage()
    pdf.save()

    sections = load(path)
    assert not any("Northwind" in section.text for section in sections)  # gone from every page
    info = describe(sections, path)
    assert info.context.endswith("| Northwind Traders Inc. Q3 2023 Form 10-Q")  # once, without a page number
    assert info.period is not None and info.period.years == (2023,)


@needs_corpus
def test_the_real_pdfs_pass_the_inflation_guard():
    for path in sorted(CORPUS.glob("*/*.pdf"))[::12]:
        check_inflation(path)


@pytest.mark.parametrize(
    ("text", "label", "years"),
    [
        ("Annual Performance Report Fiscal Year 2019 OPM.GOV FEBRUARY 2020", "FY 2019", (2019,)),
        ("U.S. DEPARTMENT OF LABOR FY 2022 – 2026 Strategic Plan", "FY 2022-2026", (2022, 2023, 2024, 2025, 2026)),
        ("Results for the third quarter of 2023", "Q3 2023", (2023,)),
        ("Version 1, 26/10/2023 Study protocol", "2023-10-26", (2023,)),
        ("Date & Time: 12/08/2007, 1630 CST", "2007-12-08", (2007,)),
    ],
)
def test_periods_are_read_as_documents_write_them(text, label, years):
    period = find_period(text)
    assert period is not None and (period.label, period.years) == (label, years)


def test_a_question_names_years_or_asks_for_the_latest():
    assert asked_period("What was the hiring target in FY 2016?").years == {2016}
    assert asked_period("How did it change from 2013 to 2014?").years == {2013, 2014}
    assert asked_period("What does the most recent report say?").latest
    assert not asked_period("How many days of leave do I get?").named


def _hit(doc_id: str, title: str, years: list[int], score: float) -> NodeWithScore:
    node = TextNode(text="", metadata={"doc_id": doc_id, "title": title, "years": years, "dated": None})
    return NodeWithScore(node=node, score=score)


def test_the_edition_of_the_asked_year_wins_and_otherwise_the_newest():
    found = [
        _hit("2017", "Annual Performance Report Fiscal Year 2017", [2017], 0.9),
        _hit("2016", "Annual Performance Report Fiscal Year 2016", [2016], 0.85),
        _hit("other", "Strategic Plan of another agency", [2022], 0.1),
    ]
    assert prefer_period(found, asked_period("the FY 2016 target"))[0].node.metadata["doc_id"] == "2016"
    older_first = [found[1], found[0], found[2]]
    older_first[0].score, older_first[1].score = 0.9, 0.85
    assert prefer_period(older_first, asked_period("the target"))[0].node.metadata["doc_id"] == "2017"
