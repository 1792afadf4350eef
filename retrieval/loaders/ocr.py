"""Text of a page image, for PDF pages that have no text layer (scans, faxes, photographed pages).

The engine is RapidOCR: PaddleOCR's PP-OCRv4 detection and recognition models run by onnxruntime on the CPU. Its
wheel carries the models, so nothing is downloaded, ever; it reads only files in its own package folder.

One ``PageReader`` serves a whole process (``page_reader()``): loading the three models takes about half a
second and some 100 MB, which must not be paid per page.
"""

from __future__ import annotations

import itertools
import os
import statistics
import threading
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from .errors import LoadError
from .guards import short_reason

if TYPE_CHECKING:
    import pypdfium2 as pdfium

__all__ = ["MIN_SCORE", "RENDER_SCALE", "PageReader", "page_reader", "render"]

# PDF points to pixels: 3 is 216 dpi. Measured on the corpus' one scan (NCT06155240, a sideways table in 11 pt
# type, 257 words) and on three text pages of its protocols rendered as images (1,429 words, their text layers as the
# truth): scale 2 (144 dpi) found 89.1% of the scan's words and 98.9% of the text pages'; scale 3 found 92.2% and
# 99.4% for about a third more CPU time; scale 4 found no more (91.1%, 99.4%) for 70% more again. The gain is in
# recognition, which scales every line to 48 px high: a 144 dpi line is 22 px, blurred on the way up, and its narrow
# spaces vanish ("Post-classBP" four times on the scan), which no search then finds.
RENDER_SCALE = 3.0
# Pages larger than this many pixels a side (a poster, an A0 drawing) are rendered at a lower scale: memory and
# detection time grow with the area, and such pages are drawings rather than prose.
MAX_RENDER_SIDE = 4000
# Lines whose recognition confidence is below this are dropped. On the pages measured, every line of real words
# scored 0.87 or more, even misread ones ("Weck4" 0.89); under 0.7 were specks read as "a" (0.17), "ee" (0.36) and
# "g.1" (0.52), and list bullets read as "0" (0.46-0.58). RapidOCR's default, 0.5, keeps some of that noise; 0.7
# drops it and leaves room for the lower scores of worse scans.
MIN_SCORE = 0.7
# How far RapidOCR grows each detected box before reading it (its default is 1.6). With the default's tight margin the
# recogniser drops the spaces of whole lines ("andfollowedfortwelveweeks"): typed 20-36 px lines lost their spaces in
# 1 to 4 of 4 lines at 1.6 and in none at 2.0 or more; on the measured pages, 2.0 found the most words.
UNCLIP_RATIO = 2.0
# A box this much taller than wide holds text that runs down the page. The same ratio at which RapidOCR turns a
# box's crop to read it, so what counts as sideways here is what it read turned.
_UPRIGHT_RATIO = 1.5
# RapidOCR's direction classifier is sure of a line at this score (its own cls_thresh).
_SURE = 0.9
# The direction classifier's input, 192 x 48 px: lines are cut to this length before it sees them.
_CLASSIFIER_RATIO = 4
# Lines sampled to decide which way the page is turned: enough for a clear majority, few enough to cost nothing.
_SAMPLED_LINES = 9
# A row further below the one above than the page's usual gap between rows, by more than this share of a line's
# height, starts a paragraph. Measured on the text pages above and the typed page of the tests: the lines of a
# paragraph stray at most 0.2 line heights from the usual gap, paragraphs 0.4 to 1.8 beyond it. Measured from the
# usual gap, not from zero, so double-spaced pages do not become one paragraph a line.
_PARAGRAPH_GAP = 0.3
# Boxes share a line when their vertical extents overlap by this share of the shorter one: enough to keep a
# slightly skewed scan's words together, not so little that a subscript or the next line joins.
_SAME_LINE = 0.5

INSTALL_ADVICE = (
    "OCR needs the rapidocr-onnxruntime package (pip install 'rapidocr-onnxruntime>=1.4'); "
    "install it, or leave scanned PDFs out"
)


@dataclass(frozen=True)
class _Found:
    """One run of text as RapidOCR found it: its four corners in the image (clockwise from top left), its text."""

    box: np.ndarray
    text: str
    score: float


@dataclass(frozen=True)
class _Box:
    """One recognised run of text, with its bounds in the upright page (pixels)."""

    left: float
    top: float
    right: float
    bottom: float
    text: str

    @property
    def height(self) -> float:
        return self.bottom - self.top


def cpu_threads() -> int:
    """CPUs this process may run on: the affinity mask, which containers and taskset narrow, not the host's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class PageReader:
    """Reads the text of page images. Thread-safe; build it once per process (``page_reader()``)."""

    def __init__(self, threads: int | None = None, min_score: float = MIN_SCORE) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as exc:
            raise LoadError(f"{INSTALL_ADVICE} ({short_reason(exc)})") from exc
        try:
            self._engine = RapidOCR(
                # One process, whatever runs beside it, uses at most the CPUs it may: onnxruntime's default is
                # every core of the host, which oversubscribes a container's share.
                intra_op_num_threads=threads or cpu_threads(),
                # The three models are chains of operators: running branches in parallel gains nothing.
                inter_op_num_threads=1,
                # Every line comes back, however unsure: text read upside down scores low, and those lines are
                # what shows that a page is upside down. The unsure ones are dropped after (read).
                text_score=0.0,
                det_unclip_ratio=UNCLIP_RATIO,
                # Lines are found on the page shrunk to 2000 px a side where it is larger (its default, "min", grows
                # small pages instead), then read from the full-size page. Finding needs less detail than reading: on
                # the pages measured for RENDER_SCALE it found the same words (93.0% of the scan's, against 92.2%) in
                # a fifth to a third less CPU time than at the full 216 dpi.
                det_limit_type="max",
                # RapidOCR shrinks larger images to 2000 px before detection, which would undo RENDER_SCALE.
                max_side_len=MAX_RENDER_SIDE,
            )
        except Exception as exc:  # a damaged install: missing model file, onnxruntime that cannot load it
            raise LoadError(
                f"the OCR engine could not start: {short_reason(exc)}; reinstall rapidocr-onnxruntime and onnxruntime"
            ) from exc
        self._min_score = min_score
        # Runs share one engine, whose sessions already use every allowed CPU: running two pages at once would
        # only make both slower.
        self._lock = threading.Lock()

    def read(self, page: pdfium.PdfPage | Image.Image) -> str:
        """The page's text: lines top to bottom, words left to right, a blank line between paragraphs.

        Sideways and upside-down pages are read upright. A page with no text gives "".
        """
        image = render(page) if not isinstance(page, Image.Image) else page
        # RapidOCR takes arrays as OpenCV's BGR; a reversed view would be copied whole by OpenCV for every line.
        pixels = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
        try:
            with self._lock:
                found = self._recognise(pixels)
                sideways = _is_sideways(found)
                if self._upside_down(found, pixels, sideways):
                    # Read again turned: text read upside down is gibberish, not text in another order. Turned a
                    # half, a page whose text faced left now faces right, the way sideways pages are read below.
                    pixels = np.ascontiguousarray(pixels[::-1, ::-1])
                    found = self._recognise(pixels)
        except Exception as exc:  # onnxruntime and OpenCV raise their own errors; callers expect LoadError
            raise LoadError(
                f"OCR could not read the page: {short_reason(exc)} (the page image may be damaged; scan it again, "
                "or export the document as a PDF with text)"
            ) from exc
        sure = [line for line in found if line.score >= self._min_score]
        return _layout(_upright(sure, pixels.shape[1], sideways))

    def _recognise(self, pixels: np.ndarray) -> list[_Found]:
        # Without RapidOCR's per-line direction classifier: it squeezes each line to 192 px wide, so it turns long
        # lines of ordinary upright text upside down (1-2 lines a page of prose) and reads them as gibberish. The
        # page's direction is decided once, from a sample of lines (_upside_down).
        # No keyword options in the call: RapidOCR puts its thresholds back to its defaults whenever a call has any.
        found, _ = self._engine(pixels, use_cls=False)
        return [
            _Found(np.asarray(box, dtype=np.float32), str(text).strip(), float(score))
            for box, text, score in found or []
        ]

    def _upside_down(self, found: list[_Found], pixels: np.ndarray, sideways: bool) -> bool:
        """Whether most sampled lines are upside down, as read: a page turned a half, or a quarter to the left."""
        lines = [line for line in found if len(line.text) >= 3 and _is_tall(line.box) == sideways]
        sample = sorted(lines, key=lambda line: -len(line.text))[:_SAMPLED_LINES]
        votes = 0
        for line in sample:
            # Without detection, RapidOCR classifies the whole image as one line and returns [[label, score]].
            result, _ = self._engine(_line_crop(pixels, line.box, sideways), use_det=False, use_cls=True, use_rec=False)
            label, score = result[0] if result else ("0", 0.0)
            votes += label == "180" and float(score) >= _SURE
        return votes * 2 > len(sample)


@cache
def page_reader() -> PageReader:
    """The process's one reader, made on first use (a failure is not cached, so a later call tries again)."""
    return PageReader()


def render(page: pdfium.PdfPage, scale: float = RENDER_SCALE) -> Image.Image:
    """The page as a greyscale image at ``scale`` pixels a point, smaller where the page is huge."""
    width, height = page.get_size()
    scale = min(scale, MAX_RENDER_SIDE / max(width, height, 1.0))
    # Greyscale: colour adds nothing to recognition and triples the memory of a page.
    return page.render(scale=scale, grayscale=True).to_pil()


def _upright(found: list[_Found], width: int, sideways: bool) -> list[_Box]:
    """Boxes in the page's reading frame. RapidOCR reads tall boxes turned, so their text is right, but on a page
    scanned sideways they stand in columns: their order only makes sense once their corners are turned back too."""
    boxes = []
    for line in found:
        if not line.text:
            continue
        xs, ys = line.box[:, 0], line.box[:, 1]
        if sideways:  # the top of the text faces right: turn the page a quarter to the left
            xs, ys = ys, width - xs
        boxes.append(_Box(float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max()), line.text))
    return boxes


def _is_sideways(found: list[_Found]) -> bool:
    """Whether most of the text (by characters, so a column of one-letter boxes does not decide) runs down."""
    down = sum(len(line.text) for line in found if len(line.text) >= 2 and _is_tall(line.box))
    across = sum(len(line.text) for line in found if len(line.text) >= 2 and not _is_tall(line.box))
    return down > across


def _line_crop(pixels: np.ndarray, box: np.ndarray, sideways: bool) -> np.ndarray:
    """The start of one line, turned as RapidOCR turns tall boxes to read them, cut to the classifier's shape.

    The classifier sees 48 x 192 px: a longer crop would be squeezed, and squeezed lines are what it gets wrong.
    """
    left, top = np.floor(box.min(axis=0)).astype(int)
    right, bottom = np.ceil(box.max(axis=0)).astype(int)
    crop = pixels[max(top, 0) : bottom + 1, max(left, 0) : right + 1]
    if sideways:
        crop = np.rot90(crop)
    return np.ascontiguousarray(crop[:, : _CLASSIFIER_RATIO * crop.shape[0]])


def _is_tall(quad: np.ndarray) -> bool:
    across = float(np.linalg.norm(quad[0] - quad[1]))
    down = float(np.linalg.norm(quad[0] - quad[3]))
    return down >= _UPRIGHT_RATIO * across


def _layout(boxes: list[_Box]) -> str:
    """Boxes to text: one line per row of boxes, a blank line before a row set further apart than usual."""
    if not boxes:
        return ""
    rows = _rows(boxes)
    gaps = [_top(row) - _bottom(above) for above, row in itertools.pairwise(rows)]
    usual = statistics.median(gaps) if gaps else 0.0
    height = statistics.median(box.height for box in boxes)
    parts = [_line(rows[0])]
    for row, gap in zip(rows[1:], gaps, strict=True):
        if gap - usual > _PARAGRAPH_GAP * height:
            parts.append("")
        parts.append(_line(row))
    return "\n".join(parts)


def _line(row: list[_Box]) -> str:
    return " ".join(box.text for box in sorted(row, key=lambda box: box.left))


def _rows(boxes: list[_Box]) -> list[list[_Box]]:
    """Boxes grouped into lines by vertical overlap, the lines top to bottom."""
    rows: list[list[_Box]] = []
    for box in sorted(boxes, key=lambda box: (box.top + box.bottom) / 2):
        row = rows[-1] if rows else None
        if row is not None and _overlap(row, box) >= _SAME_LINE * min(box.height, _span(row)):
            row.append(box)
        else:
            rows.append([box])
    return rows


def _top(row: list[_Box]) -> float:
    return min(box.top for box in row)


def _bottom(row: list[_Box]) -> float:
    return max(box.bottom for box in row)


def _span(row: list[_Box]) -> float:
    return _bottom(row) - _top(row)


def _overlap(row: list[_Box], box: _Box) -> float:
    return min(box.bottom, _bottom(row)) - max(box.top, _top(row))
