"""A source's original: the file and a PDF page with the passage marked, for readers of the document only."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from assistant import InvalidRequest, NotFound, NotPermitted, User
from assistant.api.app import create_app
from assistant.api.keys import ApiKeyStore
from assistant.originals import MARK

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ANA, HANNA, OUTSIDER = User("ana", ("staff",)), User("hanna", ("staff", "hr")), User("olaf", ("sales",))
PER_DIEM = "What is the domestic per diem for business travel?"


@pytest.fixture
def assistant(make_assistant, tmp_path):
    docs = tmp_path / "docs"
    shutil.copytree(SAMPLES / "public", docs / "public")
    shutil.copytree(SAMPLES / "hr", docs / "hr")
    assistant = make_assistant()
    assistant.ingest([docs / "public"], groups=["staff"])
    assistant.ingest([docs / "hr"], groups=["hr"])
    return assistant


def _events(assistant) -> list[dict]:
    return [json.loads(line) for line in assistant.audit.path.read_text().splitlines()]


def _marked_rows(png: bytes) -> list[int]:
    """The pixel rows of each pixel in the marker's colour over white paper: where the cited passage is."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    alpha = MARK[3] / 255
    want = tuple(round(255 * (1 - alpha) + channel * alpha) for channel in MARK[:3])
    width = image.size[0]
    pixels = image.tobytes()
    return [
        index // width
        for index in range(len(pixels) // 3)
        if all(abs(pixels[3 * index + c] - want[c]) <= 2 for c in range(3))
    ]


def _marked_pixels(png: bytes) -> int:
    return len(_marked_rows(png))


def test_a_pdf_source_opens_at_its_page_with_the_passage_marked(assistant):
    (source,) = [s for s in assistant.search(PER_DIEM, ANA, k=1)]
    assert source.path.endswith("expense-policy.pdf") and source.page == 2
    marked = assistant.page_image(source.doc_id, source.page, ANA, chunk=source.chunk)
    plain = assistant.page_image(source.doc_id, source.page, ANA)
    image = Image.open(io.BytesIO(marked))
    assert image.format == "PNG" and image.size[0] > 800
    assert _marked_pixels(marked) > 20_000 and _marked_pixels(plain) == 0
    # The marks sit where the passage is: under "4. Per diems", below the hotel paragraph and above section 5.
    rows = _marked_rows(marked)
    assert image.size[1] * 0.15 < min(rows) and max(rows) < image.size[1] / 2
    opened = [e for e in _events(assistant) if e["event"] == "open"]
    assert opened[-1]["doc_id"] == source.doc_id and opened[-1]["page"] == 2 and opened[-1]["user"] == "ana"


def test_the_original_is_the_file_itself_and_its_download_is_audited(assistant, tmp_path):
    (source,) = assistant.search(PER_DIEM, ANA, k=1)
    original = assistant.original(source.doc_id, ANA)
    assert original.data == (tmp_path / "docs" / "public" / "expense-policy.pdf").read_bytes()
    assert (original.name, original.media_type) == ("expense-policy.pdf", "application/pdf")
    assert _events(assistant)[-1] | {"time": None} == {
        "time": None,
        "event": "download",
        "user": "ana",
        "groups": ["staff"],
        "doc_id": source.doc_id,
        "path": source.path,
    }


def test_a_reader_outside_the_documents_groups_learns_nothing_of_it(assistant):
    (salary,) = assistant.search("salary band senior engineer", HANNA, k=1)
    assert salary.path.endswith("salary-bands-and-reviews.pdf")
    refusals = []
    for user in (ANA, OUTSIDER):
        for attempt in (
            lambda u: assistant.original(salary.doc_id, u),
            lambda u: assistant.page_image(salary.doc_id, 1, u, chunk=salary.chunk),
            lambda u: assistant.passage_in_context(salary.doc_id, salary.chunk, u),
        ):
            with pytest.raises(NotFound) as refused:
                attempt(user)
            refusals.append(str(refused.value))
    with pytest.raises(NotFound) as unknown:
        assistant.original("0" * 32, ANA)
    assert set(refusals) == {str(unknown.value)}  # the same words as for a document that does not exist
    assert not any(e["event"] in ("open", "download") for e in _events(assistant))


def test_other_formats_open_as_the_passage_in_its_section(assistant):
    (source,) = assistant.search("How many days of paid annual leave does a full-time employee get?", ANA, k=1)
    assert source.path.endswith("employee-handbook.md") and source.page is None
    context = assistant.passage_in_context(source.doc_id, source.chunk, ANA)
    assert source.chunk in [s.chunk for s in context] and all(s.heading == source.heading for s in context)
    with pytest.raises(InvalidRequest, match="only a PDF has pages"):
        assistant.page_image(source.doc_id, 1, ANA)


def test_a_moved_file_a_missing_page_and_a_redacted_document_are_refused_with_the_reason(
    assistant, make_assistant, tmp_path
):
    (source,) = assistant.search(PER_DIEM, ANA, k=1)
    with pytest.raises(InvalidRequest, match="has 3 pages, not a page 9"):
        assistant.page_image(source.doc_id, 9, ANA)
    Path(source.path).unlink()
    with pytest.raises(NotFound, match="no longer where it was indexed from"):
        assistant.original(source.doc_id, ANA)

    redacting = make_assistant(redact_pii=True, data_dir=tmp_path / "redacting")
    redacting.ingest([SAMPLES / "security"], groups=["security"])
    reader = User("sec", ("security",))
    (incident,) = redacting.search("compromised contractor account root cause", reader, k=1)
    with pytest.raises(NotPermitted, match="personal data removed"):
        redacting.original(incident.doc_id, reader)


def test_the_api_serves_the_original_and_the_page_to_readers_and_404_to_others(assistant):
    keys = ApiKeyStore(assistant.settings.api_keys_file)
    staff, outsider = keys.add("ana-laptop", ["staff"], user="ana"), keys.add("olaf-laptop", ["sales"], user="olaf")
    client = TestClient(create_app(assistant, keys, assistant.settings))
    (source,) = assistant.search(PER_DIEM, ANA, k=1)

    def get(path: str, key: str):
        return client.get(path, headers={"Authorization": f"Bearer {key}"})

    file = get(f"/v1/documents/{source.doc_id}/original", staff)
    assert file.status_code == 200 and file.content == Path(source.path).read_bytes()
    assert file.headers["content-disposition"] == "attachment; filename*=UTF-8''expense-policy.pdf"
    assert file.headers["cache-control"] == "no-store" and file.headers["content-type"] == "application/pdf"
    page = get(f"/v1/documents/{source.doc_id}/pages/2?chunk={source.chunk}", staff)
    assert page.status_code == 200 and page.headers["content-type"] == "image/png" and _marked_pixels(page.content)
    for path in (f"/v1/documents/{source.doc_id}/original", f"/v1/documents/{source.doc_id}/pages/2"):
        refused = get(path, outsider)
        assert refused.status_code == 404 and "expense" not in refused.text
    assert get(f"/v1/documents/{source.doc_id}/pages/0", staff).status_code == 422
