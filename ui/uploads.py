"""Uploaded files onto disk, where the ingestor reads them, and the outcome of each file in one table."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from assistant import IngestReport

_UNSAFE = re.compile(r"[^A-Za-z0-9_.@ -]")


class Upload(Protocol):
    """What the handler needs of Streamlit's UploadedFile (so tests can pass anything with these)."""

    name: str
    size: int

    def getvalue(self) -> bytes: ...


@dataclass
class Saved:
    paths: list[Path] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (file name, reason)


def user_folder(data_dir: Path, user_name: str) -> Path:
    # An OIDC name is an e-mail address or an opaque id: keep it readable, but never let it name another folder.
    return Path(data_dir) / "uploads" / (_UNSAFE.sub("_", user_name).strip(". ") or "_")


def save_uploads(files: list[Upload], folder: Path, max_mb: int) -> Saved:
    """Writes each file under `folder` (by its base name: a re-upload replaces it); refuses those over `max_mb`."""
    saved = Saved()
    limit = max_mb * 1024 * 1024
    for upload in files:
        name = Path(upload.name.replace("\\", "/")).name  # a browser may send a path; only the name is kept
        if not name or name.startswith("."):
            saved.refused.append((upload.name, "not a usable file name"))
            continue
        if upload.size > limit:
            saved.refused.append((name, f"larger than the upload limit of {max_mb} MB"))
            continue
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        path.write_bytes(upload.getvalue())
        saved.paths.append(path.resolve())
    return saved


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
