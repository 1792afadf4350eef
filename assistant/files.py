"""Small file primitives the assistant's own files (users, audit log) share: a cross-process lock, a durable rename."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
