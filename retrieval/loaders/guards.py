"""Limits that keep a hostile or broken file from exhausting memory or time."""

from __future__ import annotations

import zipfile
from pathlib import Path

from .errors import LoadError

# Larger files are almost always exports or archives that should be split before ingestion.
MAX_FILE_BYTES = 256 * 1024 * 1024
# What an Office/EPUB zip may expand to; a zip bomb claims far more than this.
MAX_UNZIPPED_BYTES = 1024 * 1024 * 1024
# Text extracted from library messages is cut here so errors stay one readable line.
MAX_REASON_CHARS = 200

_MB = 1024 * 1024


def check_size(path: Path) -> int:
    """Return the file's size, refusing empty and oversized files."""
    size = path.stat().st_size
    if size == 0:
        raise LoadError("empty file")
    if size > MAX_FILE_BYTES:
        raise LoadError(
            f"file too large ({size // _MB} MB, limit {MAX_FILE_BYTES // _MB} MB): split it into smaller files"
        )
    return size


def check_zip(path: Path, kind: str) -> None:
    """Refuse a zip-based file (DOCX, PPTX, XLSX, ODT, EPUB) that is not a sound zip."""
    if not zipfile.is_zipfile(path):
        raise LoadError(
            f"not a readable {kind}: it is not a zip archive, so it is corrupt or "
            f"another format renamed to .{kind.lower()}; re-save it as {kind}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            unzipped = sum(member.file_size for member in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise LoadError(f"not a readable {kind}: damaged zip archive ({short_reason(exc)})") from exc
    if unzipped > MAX_UNZIPPED_BYTES:
        raise LoadError(
            f"not a readable {kind}: its contents expand to {unzipped // _MB} MB "
            f"(limit {MAX_UNZIPPED_BYTES // _MB} MB); split the document"
        )


def short_reason(exc: BaseException, path: Path | None = None) -> str:
    """First line of a library's message, without the path, at most MAX_REASON_CHARS."""
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str):
        message = exc.args[0].strip()  # str(KeyError) would wrap the message in quotes
    else:
        message = str(exc).strip()
    if path is not None:
        # Library messages often quote the path; the caller adds it, so it must not repeat.
        for spelling in (str(path), str(path.resolve()), path.name):
            message = message.replace(spelling, "the file")
    lines = message.splitlines()
    first = lines[0].strip() if lines else ""
    if not first:
        first = type(exc).__name__
    if len(first) > MAX_REASON_CHARS:
        first = first[: MAX_REASON_CHARS - 3].rstrip() + "..."
    return first
