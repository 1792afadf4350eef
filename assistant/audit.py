"""Who asked what, saw which sources, changed which documents: one JSON line per event, appended and synced.

audit.jsonl grows to max_bytes, then moves to audit.jsonl.1 (and .1 to .2, ...); the oldest beyond `backups` is
dropped. An operator who must keep everything ships the rotated files elsewhere before they age out.

Where policy forbids keeping what people typed, `texts="hash"` records a keyed hash (HMAC-SHA256) of each free-text
field instead of the text: `question` becomes `question_hmac`. A plain hash of a short question would be reversed by
hashing guesses; the key (beside the log, 0600, made on first use) means only someone who holds it can check whether a
given question was asked (`read(question=...)` does that).
"""

import hashlib
import hmac
import json
import os
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from assistant.files import exclusive_lock, read_jsonl


class AuditError(RuntimeError):
    """The audit log could not be written; what was being done is not done unrecorded."""


HASHED_SUFFIX = "_hmac"


class AuditLog:
    def __init__(
        self, path: Path, max_bytes: int = 10_000_000, backups: int = 5, texts: Literal["text", "hash"] = "text"
    ):
        if max_bytes < 1 or backups < 0:
            raise ValueError(f"an audit log needs max_bytes >= 1 and backups >= 0, not {max_bytes} and {backups}")
        if texts not in ("text", "hash"):
            raise ValueError(f"an audit log records free text as 'text' or 'hash', not {texts!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.texts = texts
        self.key_path = self.path.with_name(self.path.name + ".key")
        self._key: bytes | None = None
        self._lock = threading.Lock()

    def record(self, event: str, user: str, *, texts: dict[str, str] | None = None, **fields) -> dict:
        """Appends one event and returns it; raises AuditError when it cannot be written.

        `texts` are what a person typed (a question, a comment): kept as they are, or as keyed hashes where the log
        is set to hash them.
        """
        if "time" in fields:
            raise ValueError("an audit event's time is the time it is recorded: pass no 'time' field")
        if self.texts == "hash":
            texts = {name + HASHED_SUFFIX: self.digest(value) for name, value in (texts or {}).items()}
        entry = {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "event": event,
            "user": user,
            **(texts or {}),
            **fields,
        }
        line = (json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        try:
            with self._lock, self._locked():
                self._append(line)
        except OSError as exc:
            raise self._error(exc) from exc
        return entry

    def _error(self, exc: OSError) -> AuditError:
        return AuditError(
            f"could not write the audit log {self.path}: {exc.strerror or exc}. Free disk space or fix the "
            "permissions of its directory (or set ASSISTANT_AUDIT_LOG); nothing is done unrecorded meanwhile"
        )

    def digest(self, text: str) -> str:
        """The keyed hash a hashing log records for `text`."""
        return hmac.new(self._hash_key(), text.encode("utf-8"), hashlib.sha256).hexdigest()

    def _hash_key(self) -> bytes:
        if self._key is None:
            try:
                with self._lock, self._locked():
                    if not self.key_path.exists():
                        # Written whole before it appears under its name: a reader never sees a short key.
                        partial = self.key_path.with_name(self.key_path.name + ".partial")
                        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                        with os.fdopen(descriptor, "w") as file:
                            file.write(os.urandom(32).hex())
                            file.flush()
                            os.fsync(file.fileno())
                        os.replace(partial, self.key_path)
                    self._key = bytes.fromhex(self.key_path.read_text().strip())
            except (OSError, ValueError) as exc:
                raise AuditError(
                    f"could not read or make the audit log's hashing key {self.key_path}: {exc}. Fix the permissions "
                    "of its directory, or restore the key from backup (without it, recorded hashes cannot be checked)"
                ) from exc
        return self._key

    def check(self) -> None:
        """Raises AuditError now if the log cannot be written, before work that must not go unrecorded starts."""
        try:
            with self._lock:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
        except OSError as exc:
            raise self._error(exc) from exc

    def read(
        self,
        user: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        events: Iterable[str] | None = None,
        question: str | None = None,
    ) -> list[dict]:
        """The events that match every filter given, newest first, across the rotated files.

        `question` finds the events that recorded exactly this question, as text or as its keyed hash.
        """
        since, until = _aware(since), _aware(until)
        wanted = set(events) if events is not None else None
        asked = None
        if question is not None:
            # A log that never hashed has no key, and is not given one by being searched.
            hashed = self.texts == "hash" or self.key_path.exists()
            asked = (question, self.digest(question) if hashed else None)
        found = []
        for path in self.files():
            # A file was last written after every event in it: one older than `since` holds none newer, nor do
            # the files rotated before it.
            try:
                if since is not None and datetime.fromtimestamp(path.stat().st_mtime, UTC) < since:
                    break
            except FileNotFoundError:  # rotated away by a writer meanwhile
                continue
            for entry in reversed(read_jsonl(path)):
                if user is not None and entry.get("user") != user:
                    continue
                if wanted is not None and entry.get("event") not in wanted:
                    continue
                if asked is not None and entry.get("question") != asked[0] and not _hashed_match(entry, asked[1]):
                    continue
                if since is not None or until is not None:
                    try:
                        time = datetime.fromisoformat(entry["time"])
                    except (KeyError, TypeError, ValueError):
                        continue
                    if (since is not None and time < since) or (until is not None and time > until):
                        continue
                found.append(entry)
        return found

    def files(self) -> list[Path]:
        """The log and its rotated copies, newest first."""
        names = [self.path] + [self._backup(number) for number in range(1, self.backups + 1)]
        return [path for path in names if path.is_file()]

    # --- writing ---------------------------------------------------------------------------

    def _backup(self, number: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{number}")

    def _locked(self):
        # The lock is for other processes (the portal and an `assistant` command on a shared Qdrant server); the
        # threading lock orders this process's threads, which would each take their own flock otherwise.
        return exclusive_lock(self.path)

    def _append(self, line: bytes) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(line) > self.max_bytes:
            self._rotate()
            size = 0
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(descriptor, "ab") as file:
            # A writer killed mid-line left it unterminated: end it, so this event does not join the torn one.
            if size and not _ends_with_newline(self.path):
                line = b"\n" + line
            file.write(line)
            file.flush()
            os.fsync(file.fileno())

    def _rotate(self) -> None:
        if self.backups == 0:
            self.path.unlink()
            return
        self._backup(self.backups).unlink(missing_ok=True)
        for number in range(self.backups - 1, 0, -1):
            if self._backup(number).exists():
                os.replace(self._backup(number), self._backup(number + 1))
        os.replace(self.path, self._backup(1))


def _hashed_match(entry: dict, digest: str | None) -> bool:
    return digest is not None and entry.get("question" + HASHED_SUFFIX) == digest


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as file:
        file.seek(-1, os.SEEK_END)
        return file.read(1) == b"\n"


def _aware(moment: datetime | None) -> datetime | None:
    # Events are stamped in UTC; a naive bound is read as UTC too, rather than failing to compare.
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment
