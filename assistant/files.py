"""Small file primitives the assistant's files share: a cross-process lock, a durable rename, reading JSON lines."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Holds an exclusive flock on `path` + ".lock" (created 0600 beside it) for the duration of the block.

    For other processes: the portal and an `assistant` command may write the same file at once.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def fsync_directory(directory: Path) -> None:
    """A rename survives a power cut only once its directory is synced."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_private(path: Path, text: str) -> None:
    """Replaces `path` with `text`, readable by its owner only (0600), whole or not at all.

    A temporary file beside it is renamed over it: a crash or a full disk leaves the old file, never half of one.
    """
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a JSON-lines file that another process may be appending to; a missing file holds none.

    The last line is torn when its writer died (or is still writing): it is left out quietly. A bad line anywhere
    else is damage, left out with a warning.
    """
    try:
        lines = Path(path).read_bytes().splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            if number != len(lines):
                log.warning("%s line %d is not a JSON object; skipped", path, number)
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries
