"""What a PDF's pages inflate to, checked before a renderer parses them.

PDFium, which reads the text, inflates a page's content streams whole and has no limit of its own, so a
few hundred kilobytes made to expand to gigabytes would exhaust memory. Here each page's content streams,
and the form objects they draw, are inflated a block at a time and counted, and nothing is kept. pypdf reads
the file's structure for this walk: it resolves objects lazily and hands over a stream's raw bytes.

The limits come from the real files in ../shared/data/corpus and samples/ (61 PDFs, 1,954 pages; measured
2026-12-02, benchmarks/pdf_reading.py --part inflation): the most any page inflates to is 0.25 MB, and no stream over
100 KB inflates more than 11 times its stored bytes. A page may inflate to 64 MB in all (250 times the largest
seen, room for a filing's page of dense tables), and a stream that inflates past 8 MB at more than 200 to 1
(18 times the largest ratio seen) is a bomb.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

from pypdf import PdfReader
from pypdf.errors import DependencyError, PdfReadError, PyPdfError
from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, StreamObject

from .errors import LoadError
from .guards import HOSTILE_ADVICE, short_reason, size_text

_MB = 1024 * 1024
MAX_PAGE_INFLATED_BYTES = 64 * _MB
MAX_STREAM_RATIO = 200
STREAM_RATIO_GRACE_BYTES = 8 * _MB
# Inflated a block at a time, so memory holds one block whatever the stream claims.
_BLOCK = 1 * _MB
ENCRYPTED_REASON = "encrypted PDF: decrypt it first"


def check_inflation(path: Path) -> None:
    """Refuse a PDF whose page content inflates past the limits; leave every other judgement to the reader.

    A structure pypdf cannot walk is not refused here: PDFium repairs more damage than pypdf does, and
    real files pypdf rejects are exactly what this loader must read.
    """
    try:
        reader = PdfReader(path)
        _unlock(reader)
        for number, page in enumerate(reader.pages, start=1):
            total = 0
            for stream in content_streams(page):
                total += inflated_size(stream, number)
                if total > MAX_PAGE_INFLATED_BYTES:
                    raise LoadError(
                        f"not a readable PDF: page {number}'s content inflates past "
                        f"{size_text(MAX_PAGE_INFLATED_BYTES)}, as a decompression bomb does{HOSTILE_ADVICE}"
                    )
    except LoadError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return


def _unlock(reader: PdfReader) -> None:
    """Encrypted PDFs are read only when their user password is empty (common for "protected" exports)."""
    if not reader.is_encrypted:
        return
    try:
        unlocked = reader.decrypt("")
    except (DependencyError, NotImplementedError, PdfReadError) as exc:
        raise LoadError(f"{ENCRYPTED_REASON} ({short_reason(exc)})") from exc
    if not unlocked:
        raise LoadError(ENCRYPTED_REASON)


def content_streams(page: DictionaryObject) -> Iterator[StreamObject]:
    """The page's content streams and those of the form objects it draws, each once."""
    seen: set[int] = set()
    pending: list[tuple[object, DictionaryObject | None]] = [(page.get("/Contents"), page.get("/Resources"))]
    while pending:
        contents, resources = pending.pop()
        yield from _streams(contents, seen)
        for form in _forms(resources, seen):
            yield form
            pending.append((None, form.get("/Resources")))


def _streams(contents: object, seen: set[int]) -> Iterator[StreamObject]:
    items = contents.get_object() if isinstance(contents, IndirectObject) else contents
    for item in items if isinstance(items, ArrayObject) else [contents]:
        if isinstance(item, IndirectObject):
            if item.idnum in seen:
                continue
            seen.add(item.idnum)
        stream = item.get_object() if item is not None else None
        if isinstance(stream, StreamObject):
            yield stream


def _forms(resources: object, seen: set[int]) -> Iterator[StreamObject]:
    resources = resources.get_object() if isinstance(resources, IndirectObject) else resources
    if not isinstance(resources, DictionaryObject):
        return
    objects = resources.get("/XObject")
    objects = objects.get_object() if isinstance(objects, IndirectObject) else objects
    if not isinstance(objects, DictionaryObject):
        return
    for reference in objects.values():
        if not isinstance(reference, IndirectObject) or reference.idnum in seen:
            continue
        seen.add(reference.idnum)
        form = reference.get_object()
        if isinstance(form, StreamObject) and form.get("/Subtype") == "/Form":
            yield form


def inflated_size(stream: StreamObject, page: int) -> int:
    """Bytes the stream inflates to (Flate only: the filter of page content in practice), read in blocks."""
    filters = stream.get("/Filter")
    first = filters[0] if isinstance(filters, ArrayObject) and filters else filters
    raw = stream._data  # pypdf's raw (still compressed) bytes; decoding through pypdf would hold it all
    if first != "/FlateDecode":
        return len(raw)
    inflater = zlib.decompressobj()
    size = 0
    pending = raw
    try:
        while pending and not inflater.eof:
            size += len(inflater.decompress(pending, _BLOCK))
            pending = inflater.unconsumed_tail
            if size > STREAM_RATIO_GRACE_BYTES and size > MAX_STREAM_RATIO * max(len(raw), 1):
                raise LoadError(
                    f"not a readable PDF: a content stream on page {page} expands {size_text(len(raw))} to more "
                    f"than {size_text(size)}, over {MAX_STREAM_RATIO} times, as a decompression bomb does"
                    f"{HOSTILE_ADVICE}"
                )
            if size > MAX_PAGE_INFLATED_BYTES:
                return size
    except zlib.error:
        return size  # damaged data: PDFium decides what is left of the page
    return size
