"""PDF: one section per page that has text."""

from __future__ import annotations

from pathlib import Path

from llama_index.core import Document
from pypdf import PdfReader
from pypdf.errors import DependencyError, PdfReadError, PyPdfError

from .errors import LoadError
from .guards import HOSTILE_ADVICE, hostile_reason, short_reason
from .sections import Section, to_documents

NO_TEXT_REASON = "no extractable text: the PDF may be scanned images; OCR is not configured"
ENCRYPTED_REASON = "encrypted PDF: decrypt it first"

# A PDF header may follow a little junk; readers accept it within the first kilobyte.
_HEADER_WINDOW = 1024


def load_pdf(path: Path) -> list[Document]:
    _check_header(path)
    try:
        reader = PdfReader(path)
        _unlock(reader)
        sections = [
            Section(text=page.extract_text() or "", page=number) for number, page in enumerate(reader.pages, start=1)
        ]
    except LoadError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:  # pypdf's usual failures
        if hostile := hostile_reason(exc):
            raise LoadError(f"not a readable PDF: {hostile}{HOSTILE_ADVICE}") from exc
        raise LoadError(
            f"not a readable PDF: {short_reason(exc, path)} "
            "(the file may be truncated or damaged; export or download it again)"
        ) from exc
    return to_documents(sections, empty_reason=NO_TEXT_REASON)


def _check_header(path: Path) -> None:
    with path.open("rb") as handle:
        head = handle.read(_HEADER_WINDOW)
    if b"%PDF-" not in head:
        raise LoadError(
            "not a readable PDF: there is no %PDF- header, so it is another format renamed to .pdf or a damaged file"
        )


def _unlock(reader: PdfReader) -> None:
    """Open PDFs encrypted only with an empty user password (common for "protected" exports)."""
    if not reader.is_encrypted:
        return
    try:
        unlocked = reader.decrypt("")
    except (DependencyError, NotImplementedError, PdfReadError) as exc:
        raise LoadError(f"{ENCRYPTED_REASON} ({short_reason(exc)})") from exc
    if not unlocked:
        raise LoadError(ENCRYPTED_REASON)
