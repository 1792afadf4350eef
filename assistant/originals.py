"""A source's original: the file itself, and a PDF page drawn as an image with the cited passage marked on it.

A page is rendered by PDFium (pypdfium2, already the PDF reader) and marked with Pillow, so the portal shows an
image it made itself: nothing of the PDF (scripts, links, fonts) reaches the browser.
"""

from __future__ import annotations

import io
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path

import pypdfium2 as pdfium
from PIL import Image, ImageDraw

# 1.5 x 72 dpi: a letter page is 918 x 1188 pixels, legible on a laptop screen without zooming.
SCALE = 1.5
MARK = (255, 213, 0, 90)  # translucent yellow over the cited text
# A passage is found on its page phrase by phrase, runs of a few words of its lines or a table's cells: the page
# breaks lines where the extracted text does not, so a whole line rarely matches as one string, and a run that
# spans a break is missed while the runs beside it are found. Shorter phrases than MIN_PHRASE_CHARS match too much.
PHRASE_WORDS = 5
MIN_PHRASE_CHARS = 12


@dataclass(frozen=True)
class Original:
    name: str
    media_type: str
    data: bytes


class OriginalMissing(Exception):
    """The file is no longer where it was ingested from."""


def read_original(path: Path) -> Original:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise OriginalMissing(str(error)) from error
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Original(path.name, media_type, data)


def render_page(pdf: Path, page: int, passage: str | None = None) -> bytes:
    """Page `page` (1-based) of `pdf` as a PNG, with the phrases of `passage` marked where the page has them."""
    try:
        document = pdfium.PdfDocument(pdf)
    except (OSError, pdfium.PdfiumError) as error:
        raise OriginalMissing(str(error)) from error
    try:
        if not 1 <= page <= len(document):
            raise ValueError(f"the document has {len(document)} pages, not a page {page}")
        pdf_page = document[page - 1]
        image = pdf_page.render(scale=SCALE).to_pil().convert("RGBA")
        if passage:
            image = _marked(image, _boxes(pdf_page, passage), pdf_page.get_height())
        out = io.BytesIO()
        image.convert("RGB").save(out, format="PNG")
        return out.getvalue()
    finally:
        document.close()


def phrases(passage: str) -> list[str]:
    """The pieces of a passage looked for on its page: runs of a few words of each line, or of each table cell."""
    pieces = []
    for line in passage.splitlines():
        cells = line.split("|") if line.lstrip().startswith("|") else [line]
        for cell in cells:
            words = cell.split()
            runs = (" ".join(words[i : i + PHRASE_WORDS]) for i in range(0, len(words), PHRASE_WORDS))
            pieces += [run for run in runs if len(run) >= MIN_PHRASE_CHARS and not re.fullmatch(r"[-: ]+", run)]
    return pieces


def _boxes(page, passage: str) -> list[tuple[float, float, float, float]]:
    text_page = page.get_textpage()
    boxes = []
    try:
        for phrase in phrases(passage):
            searcher = text_page.search(phrase, match_case=False, match_whole_word=False)
            found = searcher.get_next()
            if found is None:
                continue
            start, count = found
            boxes += [text_page.get_rect(i) for i in range(text_page.count_rects(start, count))]
    finally:
        text_page.close()
    return boxes


def _marked(image: Image.Image, boxes, page_height: float) -> Image.Image:
    layer = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for left, bottom, right, top in boxes:  # PDF points, from the page's bottom left
        draw.rectangle(
            [left * SCALE, (page_height - top) * SCALE, right * SCALE, (page_height - bottom) * SCALE], fill=MARK
        )
    return Image.alpha_composite(image, layer)
