"""The shipped sample company, ingested as `make run` does, answers its own sample questions."""

import json
import re

import pytest
from conftest import SAMPLES

from assistant import User

QUESTIONS = [json.loads(line) for line in (SAMPLES / "questions.jsonl").read_text().splitlines() if line.strip()]
FOLDER_GROUPS = {"public": "staff", "security": "security", "hr": "hr"}


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def company(embedder, tmp_path_factory):
    from assistant import Settings, build_assistant

    data = tmp_path_factory.mktemp("company")
    assistant = build_assistant(Settings(data_dir=data, qdrant_path=":memory:"), embedder=embedder)
    for folder, group in FOLDER_GROUPS.items():
        report = assistant.ingest([SAMPLES / folder], groups=[group])
        assert report.ok and not report.skipped and len(report.added) >= 1, report
    yield assistant
    assistant.close()


@pytest.mark.parametrize("case", QUESTIONS, ids=[q["question"][:50] for q in QUESTIONS])
def test_each_sample_question_is_answered_from_the_right_document(company, case):
    user = User("ana", tuple(case["groups"]))
    answer = company.ask(case["question"], user, k=5)

    [expected_path] = case["expected"]
    expected = str((SAMPLES / expected_path).resolve())
    cited = [s for s in answer.sources if s.path == expected]
    assert cited, f"{expected_path} not among {[s.path for s in answer.sources]}"
    assert any(squash(case["answer"]) in squash(s.text) for s in cited)
    if "page" in case:
        assert any(s.page == case["page"] and squash(case["answer"]) in squash(s.text) for s in cited)
    assert answer.text.startswith("Extracted from your documents")


def test_staff_never_see_security_or_hr_documents(company):
    staff = User("ana", ("staff",))
    for case in QUESTIONS:
        for source in company.search(case["question"], staff, k=20):
            assert "/samples/public/" in source.path


def test_every_format_of_the_sample_company_is_stored_with_its_location(company):
    admin = User("root", ("admin",))
    suffixes = {d.path.rsplit(".", 1)[1] for d in company.documents(admin)}
    assert {"md", "pdf", "docx", "html"} <= suffixes
    pdf_hit = company.search("mileage rate for private cars", admin, k=1)[0]
    assert pdf_hit.path.endswith("expense-policy.pdf") and pdf_hit.page >= 1
    md_hit = company.search("doctor's note sick leave", admin, k=1)[0]
    assert md_hit.path.endswith("employee-handbook.md") and md_hit.heading


def test_a_figure_from_a_table_is_quoted_with_its_row_and_column_names(company):
    """The salary table is a table in the PDF: the answer quotes the senior engineer's row, each figure named."""
    answer = company.ask("What is the salary band for a senior engineer?", User("hr", ("hr",)), k=5)
    quoted = next(line for line in answer.text.splitlines() if "senior engineer" in line)
    assert "Level: L4 Lead" in quoted
    assert "Band minimum: 68,000" in quoted and "Band maximum: 92,000" in quoted
    table = next(s for s in answer.sources if s.table)
    assert table.page == 1 and table.heading == "2. Job levels and salary bands"
    assert table.location == "p. 1, 2. Job levels and salary bands"
