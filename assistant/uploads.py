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

UPLOADS_DIR = "uploads"  # under the data directory: one folder per user
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


def user_folder(data_dir: Path, user_id: str) -> Path:
    # A user's id is a local name, an API key's name or an OIDC issuer and subject: kept readable, but never able to
    # name another folder. Two ids that differ only in replaced characters ("ana+x@corp", "ana_x@corp") must not share
    # a folder either (one could replace the other's files, and with them who may read them), so a replaced id gets
    # its hash appended.
    safe = _UNSAFE.sub("_", user_id).strip(". ") or "_"
    if safe != user_id:
        safe = f"{safe}-{hashlib.sha256(user_id.encode()).hexdigest()[:12]}"
    return Path(data_dir) / UPLOADS_DIR / safe


def folder_size(folder: Path) -> int:
    """Bytes of the files a user's upload folder holds (0 when it does not exist yet)."""
    if not folder.is_dir():
        return 0
    return sum(entry.stat().st_size for entry in folder.iterdir() if entry.is_file() and not entry.name.startswith("."))


def save_uploads(files: list[Upload], folder: Path, max_mb: int, room: int | None = None) -> Saved:
    """Writes each file under `folder` (by its base name: a re-upload replaces it); refuses those over `max_mb`, and
    those that would take the folder past `room` more bytes (the user's quota left; None: no quota)."""
    saved = Saved()
    limit = max_mb * 1024 * 1024
    too_large = f"larger than the upload limit of {max_mb} MB"
    over_quota = "over your upload quota: ask an administrator to remove documents you no longer need"
    for upload in files:
        name = Path(upload.name.replace("\\", "/")).name  # a browser may send a path; only the name is kept
        if not name or name.startswith(".") or "\x00" in name or len(name.encode("utf-8", "replace")) > 255:
            saved.refused.append((upload.name, "not a usable file name"))
            continue
        if upload.size > limit:
            saved.refused.append((name, too_large))
            continue
        path = folder / name
        replaced = path.stat().st_size if path.is_file() else 0  # a re-upload frees what it replaces
        allowed = limit if room is None else min(limit, room + replaced)
        if room is not None and upload.size > allowed:
            saved.refused.append((name, over_quota))
            continue
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        written = _copy_at_most(upload.stream, path, allowed)
        if written is None:
            saved.refused.append((name, too_large if allowed == limit else over_quota))
            continue
        saved.paths.append(path.resolve())
        if room is not None:
            room -= written - replaced
    return saved


def _copy_at_most(stream: BinaryIO, path: Path, limit: int) -> int | None:
    """Copies the stream to `path` unless it holds more than `limit` bytes: the bytes written, or None (and nothing
    written) if it holds more.

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
                    return None
                out.write(block)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return written


def outcome_rows(saved: Saved, report: IngestReport | None) -> list[dict]:
    """One row per file: its name, what happened to it, and why when it failed."""
    outcomes: dict[str, tuple[str, str]] = {}
    if report is not None:
        for label, paths in (("added", report.added), ("updated", report.updated), ("unchanged", report.unchanged)):
            for path in paths:
                outcomes[str(Path(path).resolve())] = (label, "")
        for failure in [*report.failed, *report.skipped]:
            # A reason may quote the file's place on the server; the uploader knows it by its name only.
            reason = failure.reason.replace(str(Path(failure.path).resolve()), Path(failure.path).name)
            outcomes[str(Path(failure.path).resolve())] = (
                "failed",
                reason.replace(failure.path, Path(failure.path).name),
            )
    rows = []
    for path in saved.paths:
        outcome, reason = outcomes.get(str(path), ("not indexed", ""))
        rows.append({"file": path.name, "outcome": outcome, "reason": reason})
    rows += [{"file": name, "outcome": "refused", "reason": reason} for name, reason in saved.refused]
    return rows
