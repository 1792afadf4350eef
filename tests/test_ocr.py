"""Tests for retrieval.loaders.ocr: text of page images, offline, with RapidOCR's bundled models."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from conftest import SHARED_DATA
from PIL import Image, ImageDraw, ImageFont

from retrieval.loaders import LoadError, ocr

SCAN = SHARED_DATA / "corpus" / "nih_clinical_trial_protocols" / "NCT06155240_Prot_SAP_000.pdf"
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

# Two paragraphs; words OCR reads reliably (no ambiguous l/1, O/0), as a typed page would have.
PARAGRAPHS = [
    ["Patients were randomised into two groups", "and followed for twelve weeks after the start"],
    ["Blood pressure was measured before each class", "Results are reported in the next section"],
]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def typed_page() -> Image.Image:
    """A white page with PARAGRAPHS typed in 30 px DejaVu Sans, a blank line's gap between the paragraphs."""
    font = ImageFont.truetype(str(FONT), 30) if FONT.is_file() else ImageFont.load_default(size=30)
    image = Image.new("L", (900, 420), 255)
    draw = ImageDraw.Draw(image)
    y = 40
    for paragraph in PARAGRAPHS:
        for line in paragraph:
            draw.text((50, y), line, fill=0, font=font)
            y += 45
        y += 60
    return image


def assert_reads_typed_page(text: str) -> None:
    lines = [line for line in text.split("\n") if line.strip()]
    expected = [line for paragraph in PARAGRAPHS for line in paragraph]
    found = set(words(text))
    wanted = [word for line in expected for word in words(line)]
    assert sum(word in found for word in wanted) >= 0.9 * len(wanted), text
    # Each typed line is best matched by a later output line than the one before it: the lines are in order.
    best = [max(range(len(lines)), key=lambda i: len(set(words(line)) & set(words(lines[i])))) for line in expected]
    assert best == sorted(best) and len(set(best)) == len(best), text
    assert text.count("\n\n") == 1 and text.index("\n\n") < text.index("Blood"), text


def test_reads_typed_lines_in_order_with_a_paragraph_break():
    assert_reads_typed_page(ocr.page_reader().read(typed_page()))


@pytest.mark.parametrize("turn", [90, 180, 270])
def test_reads_a_page_scanned_sideways_or_upside_down_in_reading_order(turn):
    assert_reads_typed_page(ocr.page_reader().read(typed_page().rotate(turn, expand=True)))


def test_blank_page_gives_no_text():
    assert ocr.page_reader().read(Image.new("L", (600, 800), 255)) == ""


def test_reader_is_made_once_per_process():
    assert ocr.page_reader() is ocr.page_reader()


def test_models_use_no_more_threads_than_the_process_may():
    engine = ocr.page_reader()._engine
    sessions = [engine.text_det.infer.session, engine.text_cls.infer.session, engine.text_rec.session.session]
    for session in sessions:
        options = session.get_session_options()
        assert 1 <= options.intra_op_num_threads <= ocr.cpu_threads()
        assert options.inter_op_num_threads == 1


def test_render_keeps_huge_pages_within_bounds():
    document = pdfium.PdfDocument.new()
    poster = document.new_page(72 * 60, 72 * 40)  # 60 x 40 inches
    image = ocr.render(poster)
    assert max(image.size) <= ocr.MAX_RENDER_SIDE
    letter = document.new_page(612, 792)
    assert ocr.render(letter).size == (round(612 * ocr.RENDER_SCALE), round(792 * ocr.RENDER_SCALE))


def test_missing_engine_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "rapidocr_onnxruntime", None)  # makes the import fail as if not installed
    with pytest.raises(LoadError, match=r"pip install 'rapidocr-onnxruntime>=1.4'"):
        ocr.PageReader()


def test_engine_failure_is_a_load_error(monkeypatch):
    reader = ocr.page_reader()

    def broken(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : bad allocation")

    monkeypatch.setattr(reader, "_engine", broken)
    with pytest.raises(LoadError, match="OCR could not read the page: .*bad allocation.*scan it again"):
        reader.read(typed_page())


@pytest.mark.skipif(not SCAN.is_file(), reason=f"{SCAN.name} is absent: the real-scan test needs ../shared/data")
def test_reads_the_real_scanned_protocol():
    document = pdfium.PdfDocument(SCAN)
    page = document[0]
    assert not page.get_textpage().get_text_bounded().strip(), "the test needs a page with no text layer"
    text = ocr.page_reader().read(page)
    # Words checked by eye on the rendered page: a table of yoga classes, week by week, scanned sideways.
    for phrase in [
        "APPENDIX D Study Protocol Class Procedures",
        "Yoga for a Healthy Heart Protocol",
        "Chair-based yoga",
        "Yoga Nidra",
        "Post-class BP",
        "diaphragmatic",
        "Joint protection",
        "Self-discipline",
    ]:
        assert phrase in text, f"{phrase!r} not in:\n{text}"
    # Read upright: title, then the table's header, its first week's row, its last week's row.
    order = [text.index(phrase) for phrase in ["APPENDIX D", "Yoga Meditation", "Joint protection", "Self-discipline"]]
    assert order == sorted(order), text
