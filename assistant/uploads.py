"""Uploaded files onto disk, where the ingestor reads them, and the outcome of each file in one table.

The portal and the HTTP API both save uploads here, so a file uploaded through either lands in the same place (one
folder per user under the data directory) and a re-upload through the other replaces it.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from retrieval import IngestReport

_UNSAFE = re.compile(r"[^A-Za-z0-9_.@ -]")
_COPY_BLOCK = 1 << 20


@dataclass(frozen=True)
class Upload:
    name: str  # as the client sent it: possibly a path, possibly hostile
    size: int  # as the client or framework counted it; the copy counts again
    stream: BinaryIO


@dataclass
class Saved:
    paths: list[Path] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)


def user_folder(data_dir: Path, user_name: str) -> Path:
    # An OIDC name is an e-mail address or an opaque id: kept readable, but never able to name another folder. Two
    # names that differ only in replaced characters ("ana+x@corp", "ana_x@corp") must not share a folder either (one
    # could replace the other's files, and with them who may read them), so a replaced name gets its hash appended.
    safe = _UNSAFE.sub("_", user_name).strip(". ") or "_"
    if safe != user_name:
        safe = f"{safe}-{hashlib.sha256(user_name.encode()).hexdigest()[:12]}"
    return Path(data_dir) / "uploads" / safe


def save_uploads(files: list[Upload], folder: Path, max_mb: int) -> Saved:
    """Writes each file under `folder` (by its base name: a re-upload replaces it); refuses those over `max_mb`."""
    saved = Saved()
    limit = max_mb * 1024 * 1024
    too_large = f"larger than the upload limit of {max_mb} MB"
    for upload in files:
        name = Path(upload.name.replace("\\", "/")).name  # a browser may send a path; only the name is kept
        if not name or name.startswith(".") or "\x00" in name or len(name.encode("utf-8", "replace")) > 255:
            saved.refused.append((upload.name, "not a usable file name"))
            continue
        if upload.size > limit:
            saved.refused.append((name, too_large))
            continue
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = folder / name
        if _copy_at_most(upload.stream, path, limit):
            saved.paths.append(path.resolve())
        else:
            saved.refused.append((name, too_large))
    return saved


def _copy_at_most(stream: BinaryIO, path: Path, limit: int) -> bool:
    """Copies the stream to `path` unless it holds more than `limit` bytes; False (and nothing written) if it does.

    Through a temporary file renamed over `path`: the ingestor never reads half a file, and a refused or failed
    upload leaves the previous version in place.
    """
    if stream.seekable():
        stream.seek(0)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".upload")
    try:
        with os.fdopen(descriptor, "wb") as out:
            written = 0
            while block := stream.read(_COPY_BLOCK):
                written += len(block)
                if written > limit:
                    Path(temporary).unlink()
                    return False
                out.write(block)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return True


def outcome_rows(saved: Saved, report: IngestReport | None) -> list[dict]:
    """One row per file: its name, what happened to it, and why when it failed."""
    outcomes: dict[str, tuple[str, str]] = {}
    if report is not None:
        for label, paths in (("added", report.added), ("updated", report.updated), ("unchanged", report.unchanged)):
            for path in paths:
                outcomes[str(Path(path).resolve())] = (label, "")
        for failure in [*report.failed, *report.skipped]:
            outcomes[str(Path(failure.path).resolve())] = ("failed", failure.reason)
    rows = []
    for path in saved.paths:
        outcome, reason = outcomes.get(str(path), ("not indexed", ""))
        rows.append({"file": path.name, "outcome": outcome, "reason": reason})
    rows += [{"file": name, "outcome": "refused", "reason": reason} for name, reason in saved.refused]
    return rows
