"""The two exceptions every loader raises."""

from __future__ import annotations

from collections.abc import Iterable


class LoadError(Exception):
    """A file could not be turned into text.

    ``str(error)`` is a reason a person can act on. It never contains the file's path:
    the caller knows the path and adds it where it reports the error.
    """


class UnsupportedFileType(LoadError):
    """No loader handles this file's suffix."""

    def __init__(self, suffix: str, supported: Iterable[str]) -> None:
        shown = suffix or "(no suffix)"
        listed = ", ".join(sorted(supported))
        super().__init__(f"unsupported file type {shown}: convert it to one of {listed}, or leave it out")
        self.suffix = suffix
