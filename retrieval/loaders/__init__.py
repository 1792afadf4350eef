"""Files to sections of text.

A loader turns one file into a list of llama-index ``Document`` objects, one per natural
section of the file (a PDF page, a Markdown/HTML/DOCX heading's section, a slide, a sheet,
an e-mail body or attachment, an EPUB chapter). Each section's ``metadata`` carries only
where it sits in the file: ``page`` (1-based int, PDF pages and slides) and/or ``heading``
(the heading path, e.g. ``"Leave > Sick leave"``). Document-level metadata (id, path,
hash, groups) is added by the ingestion pipeline, not here.

Loaders raise ``LoadError`` with a reason a person can act on; they never return an
empty list silently.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

from llama_index.core import Document

from .epub import load_epub
from .errors import LoadError, UnsupportedFileType
from .guards import (
    HOSTILE_ADVICE,
    Limits,
    hostile_reason,
    os_reason,
    refuse_size,
    refuse_text,
    short_reason,
    using_limits,
)
from .mail import load_eml, load_msg
from .markdown import load_markdown
from .odt import load_odt
from .pdf import load_pdf
from .sheets import load_csv, load_xlsx
from .slides import load_pptx
from .text import load_rtf, load_text
from .web import load_html
from .word import load_docx

__all__ = ["SUPPORTED_SUFFIXES", "Limits", "LoadError", "UnsupportedFileType", "load"]

Loader = Callable[[Path], list[Document]]

# suffix -> (name of the format in error messages, loader)
_LOADERS: dict[str, tuple[str, Loader]] = {
    ".pdf": ("PDF", load_pdf),
    ".docx": ("DOCX", load_docx),
    ".pptx": ("PPTX", load_pptx),
    ".xlsx": ("XLSX", load_xlsx),
    ".odt": ("ODT", load_odt),
    ".html": ("HTML", load_html),
    ".htm": ("HTML", load_html),
    ".md": ("Markdown", load_markdown),
    ".markdown": ("Markdown", load_markdown),
    ".txt": ("text", load_text),
    ".csv": ("CSV", load_csv),
    ".rtf": ("RTF", load_rtf),
    ".eml": ("EML", load_eml),
    ".msg": ("MSG", load_msg),
    ".epub": ("EPUB", load_epub),
}

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(_LOADERS)


def load(path: Path, limits: Limits | None = None) -> list[Document]:
    """Read one file into sections; raise ``LoadError`` (never another error) on bad input.

    ``limits`` bounds the file's size and its text; without it, the defaults in ``guards`` (or the
    limits of a ``load`` this one runs inside, as for an e-mail's attachments) apply.
    """
    with using_limits(limits):
        documents = _load(Path(path))
        refuse_text(sum(len(document.text) for document in documents))
        return documents


def _load(path: Path) -> list[Document]:
    try:
        info = path.stat()
    except OSError as exc:
        raise LoadError(os_reason(exc)) from exc
    if stat.S_ISDIR(info.st_mode):
        raise LoadError("is a directory")
    if not stat.S_ISREG(info.st_mode):
        # Pipes and devices never end or block; only regular files are documents.
        raise LoadError("not a regular file (a pipe, socket or device): copy the content to a file")
    suffix = path.suffix.lower()
    if suffix not in _LOADERS:
        raise UnsupportedFileType(suffix, SUPPORTED_SUFFIXES)
    kind, loader = _LOADERS[suffix]
    try:
        refuse_size(info.st_size)
        return loader(path)
    except LoadError:
        raise
    except FileNotFoundError as exc:
        raise LoadError("no such file") from exc
    except IsADirectoryError as exc:
        raise LoadError("is a directory") from exc
    except PermissionError as exc:
        raise LoadError(os_reason(exc)) from exc
    except RecursionError as exc:
        raise LoadError(f"not a readable {kind}: it is nested too deeply to process{HOSTILE_ADVICE}") from exc
    except Exception as exc:  # third-party parsers raise anything; callers need LoadError
        if hostile := hostile_reason(exc):
            raise LoadError(f"not a readable {kind}: {hostile}{HOSTILE_ADVICE}") from exc
        raise LoadError(
            f"not a readable {kind}: {short_reason(exc, path)} "
            f"(the file is damaged or not really {kind}; open it and save it again)"
        ) from exc
