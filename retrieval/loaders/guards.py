"""Limits that keep a hostile or broken file from exhausting memory or time.

The limits a load runs under come from ``Limits``: the ingestion sets them from its settings for the
duration of one ``load`` (a context variable, so an e-mail's attachments, loaded through ``load`` too,
run under the same ones); a caller that sets none gets this module's defaults.
"""

from __future__ import annotations

import errno
import os
import pwd
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import LoadError

_MB = 1024 * 1024

# Larger files are almost always exports or archives that should be split before ingestion, and a text file
# this size is already about 100k chunks: most of an hour of embedding on two cores.
MAX_FILE_BYTES = 100 * _MB
# About 4,000 pages of prose, some 10k chunks: a few minutes of embedding. More is a dump, not a document.
MAX_TEXT_CHARS = 10_000_000
# What an Office/EPUB zip may expand to in all; a zip bomb claims far more than this.
MAX_UNZIPPED_BYTES = 512 * _MB
# Real Office XML compresses about 5 to 20 to 1; a member that expands more than this is a bomb. The ratio is
# Apache POI's (ZipSecureFile's minimum inflate ratio 0.01), but applied only to large members: POI's users
# meet it on real sheets of repeated cells, and below the grace size a member cannot exhaust memory anyway.
MAX_ZIP_RATIO = 100
ZIP_RATIO_GRACE_BYTES = 64 * _MB
# Text extracted from library messages is cut here so errors stay one readable line.
MAX_REASON_CHARS = 200


@dataclass(frozen=True)
class Limits:
    """What one file may cost, and the names of the settings that raise each limit (for the refusals).

    ``ocr``: whether a page without a text layer may cost the seconds it takes to read its image.
    """

    max_file_bytes: int
    max_text_chars: int
    ocr: bool = True
    file_setting: str = "max_file_mb"
    text_setting: str = "max_text_chars"


_limits: ContextVar[Limits | None] = ContextVar("loader_limits", default=None)


def current_limits() -> Limits:
    # Read at call time, not import time, so a test (or a caller) that changes a module default is obeyed.
    return _limits.get() or Limits(MAX_FILE_BYTES, MAX_TEXT_CHARS)


@contextmanager
def using_limits(limits: Limits | None) -> Iterator[None]:
    if limits is None:
        yield
        return
    token = _limits.set(limits)
    try:
        yield
    finally:
        _limits.reset(token)


def size_text(size: int) -> str:
    """A size as a person reads it: 200 MB, 3.5 MB, 812 KB, 40 bytes."""
    if size >= 10 * _MB:
        return f"{size // _MB} MB"
    if size >= _MB:
        return f"{size / _MB:.1f} MB"
    if size >= 1024:
        return f"{size // 1024} KB"
    return f"{size} bytes"


def refuse_size(size: int, limits: Limits | None = None) -> None:
    """Refuse an empty file, or one over the file size limit, from its size alone (before a byte is read)."""
    if size == 0:
        raise LoadError("empty file")
    limits = limits or current_limits()
    if size > limits.max_file_bytes:
        raise LoadError(
            f"file too large: {size_text(size)}, limit {size_text(limits.max_file_bytes)}: split it into smaller "
            f"files or raise {limits.file_setting}"
        )


def refuse_text(chars: int) -> None:
    """Refuse extracted text over the text limit: it would be chunked and embedded for far too long."""
    limits = current_limits()
    if chars > limits.max_text_chars:
        raise LoadError(
            f"too much text: {chars:,} characters, limit {limits.max_text_chars:,}: split the document "
            f"or raise {limits.text_setting}"
        )


def check_zip(path: Path, kind: str) -> None:
    """Refuse a zip-based file (DOCX, PPTX, XLSX, ODT, EPUB) that is not a sound zip, or is a hostile one.

    Python's zipfile never yields more than a member's declared size, so checking the declared sizes here
    bounds what any parser reading the archive later can be handed.
    """
    if not zipfile.is_zipfile(path):
        raise LoadError(
            f"not a readable {kind}: it is not a zip archive, so it is corrupt or "
            f"another format renamed to .{kind.lower()}; re-save it as {kind}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise LoadError(f"not a readable {kind}: damaged zip archive ({short_reason(exc)})") from exc
    for member in members:
        name = PurePosixPath(member.filename.replace("\\", "/"))
        if name.is_absolute() or ".." in name.parts:
            # Office and EPUB readers open members by name and never extract them, but no real document holds
            # such a name: it is made to write outside a folder when some other tool unpacks it.
            raise LoadError(
                f"not a readable {kind}: it holds a member named {member.filename!r}, a path that leads out of "
                f"the archive, which no real {kind} has; re-save the document from the program that made it"
            )
        if member.file_size > ZIP_RATIO_GRACE_BYTES and member.file_size > MAX_ZIP_RATIO * max(member.compress_size, 1):
            raise LoadError(
                f"not a readable {kind}: its member {member.filename} expands {size_text(member.compress_size)} "
                f"to {size_text(member.file_size)}, more than {MAX_ZIP_RATIO} times, as a zip bomb does; "
                f"if it is a real document, save it again from the program that made it"
            )
    unzipped = sum(member.file_size for member in members)
    if unzipped > MAX_UNZIPPED_BYTES:
        raise LoadError(
            f"not a readable {kind}: its contents expand to {unzipped // _MB} MB "
            f"(limit {MAX_UNZIPPED_BYTES // _MB} MB); split the document"
        )


# What to do about a file that looks hostile: it may be a real document a broken tool wrote.
HOSTILE_ADVICE = "; if it comes from someone you trust, open it and save it again, else leave it out"
# Library messages that mean the file is hostile, and what a person should read instead: (fragment, reason).
_HOSTILE_MESSAGES = (
    ("amplification factor", "an XML entity in it expands without bound (a 'billion laughs' attack)"),
    ("entity reference loop", "an XML entity in it expands without bound (a 'billion laughs' attack)"),
    ("Excessive depth", "its XML is nested more than 256 levels deep, which no real document is"),
)


def hostile_reason(exc: BaseException) -> str | None:
    """What a parser's failure means when it is a known attack or parser limit; None for an ordinary failure.

    Libraries re-raise with messages of their own ("could not read worksheets"), so the whole chain of
    causes is searched.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        # By module, not class: defusedxml is optional to the parsers that use it.
        module = type(current).__module__
        if module.startswith("defusedxml"):
            return (
                "it declares XML entities or a DTD, which real documents never do: it is made to expand "
                "without bound or to read other files"
            )
        message = str(current)
        for fragment, reason in _HOSTILE_MESSAGES:
            if fragment in message:
                return reason
        current = current.__cause__ or current.__context__
    return None


def os_reason(exc: OSError) -> str:
    """What an operating-system error on a file means to the person who asked for it, and what to do."""
    if exc.errno == errno.ELOOP:
        return "symlink loop: the link leads round in a circle back to itself; fix the link or remove it"
    if exc.errno == errno.ENOENT:
        return "no such file"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"permission denied: this process runs as {_user()}, who may not read it; grant read access or leave it out"
        )
    if exc.errno == errno.ENAMETOOLONG:
        return "the path is too long for this system: move the file to a shorter path"
    return f"cannot read the file: {exc.strerror or exc}"


def _user() -> str:
    uid = os.geteuid()
    try:
        return f"user {pwd.getpwuid(uid).pw_name!r}"
    except KeyError:  # a container user with no passwd entry
        return f"uid {uid}"


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
