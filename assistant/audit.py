"""Who asked what, saw which sources, changed which documents: one JSON line per event, appended and synced.

audit.jsonl grows to max_bytes (10 MB), then becomes a gzip archive beside it, audit.jsonl.YYYYMMDDTHHMMSSZ-NNNNNN.gz
(the UTC time of the rotation and a sequence number that only grows), created 0600. Archives are never deleted or
rewritten by the assistant: whatever anyone types, the trail of what others did stays. The disk therefore grows with
use; an operator who moves archives elsewhere (to write-once storage, say) takes them out of what `read` and the
portal's audit page show. When the disk is full, new events are refused with AuditError (and so is the work they
would record) and everything already written is kept.

Every string an event carries (a question, an answer, a comment, a reason, a path) is kept to MAX_TEXT_CHARS
characters, with a marker saying how long it was: one user's huge comments cannot fill the disk fast, nor make a line
no reader can hold.

Where policy forbids keeping what people typed, `texts="hash"` records a keyed hash (HMAC-SHA256) of each free-text
field instead of the text: `question` becomes `question_hmac`. The hash covers the whole text, however long, so a
question over the cap can still be found. A plain hash of a short question would be reversed by hashing guesses; the
key (beside the log, 0600, made on first use) means only someone who holds it can check whether a given question was
asked (`read(question=...)` does that).
"""

import glob
import gzip
import hashlib
import hmac
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from assistant.files import exclusive_lock, fsync_directory, read_jsonl

log = logging.getLogger(__name__)

# The longest string an event keeps, marker included. A question or a comment longer than this is kept as its
# beginning and the marker (the service refuses over-long questions on its own; this bounds what reaches the log
# whatever the caller).
MAX_TEXT_CHARS = 4_000
DEFAULT_MAX_BYTES = 10_000_000
HASHED_SUFFIX = "_hmac"
_STAMP = "%Y%m%dT%H%M%SZ"
# Compression is done under the lock every writer waits on: a middle level keeps a 10 MB rotation well under a second.
_COMPRESSLEVEL = 6


class AuditError(RuntimeError):
    """The audit log could not be written; what was being done is not done unrecorded."""


def truncated(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """`text` as the log keeps it: whole when it fits in `limit` characters, else its beginning and a marker."""
    if len(text) <= limit:
        return text
    marker = f"… [truncated, {len(text)} characters in all]"
    return text[: limit - len(marker)] + marker


class AuditLog:
    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, texts: Literal["text", "hash"] = "text"):
        if max_bytes < 1:
            raise ValueError(f"an audit log needs max_bytes >= 1, not {max_bytes}")
        if texts not in ("text", "hash"):
            raise ValueError(f"an audit log records free text as 'text' or 'hash', not {texts!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.texts = texts
        self.key_path = self.path.with_name(self.path.name + ".key")
        self._key: bytes | None = None
        self._lock = threading.Lock()
        self._recovered = False
        # audit.jsonl.20250101T101010Z-000007.gz is an archive; without .gz, the live file moved aside for it
        # (left only by a crash mid-rotation; finished by the next write).
        self._history_name = re.compile(re.escape(self.path.name) + r"\.(\d{8}T\d{6}Z)-(\d{6,})(\.gz)?")
        self._legacy_name = re.compile(re.escape(self.path.name) + r"\.([1-9][0-9]{0,2})")

    def record(self, event: str, user: str, *, texts: dict[str, str] | None = None, **fields) -> dict:
        """Appends one event and returns it as written; raises AuditError when it cannot be written.

        `texts` are what a person typed (a question, a comment): kept as they are, or as keyed hashes (of the whole
        text) where the log is set to hash them. Every string, in `texts` and `fields`, is kept to MAX_TEXT_CHARS.
        """
        if "time" in fields:
            raise ValueError("an audit event's time is the time it is recorded: pass no 'time' field")
        if self.texts == "hash":
            texts = {name + HASHED_SUFFIX: self.digest(value) for name, value in (texts or {}).items()}
        entry = _capped(
            {
                "time": datetime.now(UTC).isoformat(timespec="seconds"),
                "event": event,
                "user": user,
                **(texts or {}),
                **fields,
            }
        )
        try:
            line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800" decodes to one): escaped, as JSON can
            line = (json.dumps(entry) + "\n").encode("ascii")
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
        return hmac.new(self._hash_key(), text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

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

    # --- reading ---------------------------------------------------------------------------

    def read(
        self,
        user: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        events: Iterable[str] | None = None,
        question: str | None = None,
    ) -> list[dict]:
        """The events that match every filter given, newest first, across the live file and every archive.

        `question` finds the events that recorded exactly this question, as text (as the log keeps it, so a
        question over the cap matches its truncated form) or as its keyed hash.
        """
        since, until = _aware(since), _aware(until)
        wanted = set(events) if events is not None else None
        asked = None
        if question is not None:
            # A log that never hashed has no key, and is not given one by being searched.
            hashed = self.texts == "hash" or self.key_path.exists()
            asked = (truncated(question), self.digest(question) if hashed else None)

        def matches(entry: dict) -> bool:
            if user is not None and entry.get("user") != user:
                return False
            if wanted is not None and entry.get("event") not in wanted:
                return False
            if asked is not None and entry.get("question") != asked[0] and not _hashed_match(entry, asked[1]):
                return False
            if since is not None or until is not None:
                try:
                    time = datetime.fromisoformat(entry["time"])
                except (KeyError, TypeError, ValueError):
                    return False
                if (since is not None and time < since) or (until is not None and time > until):
                    return False
            return True

        # A rotation by another writer between listing the files and reading them would hide the file it moved:
        # read again when the newest archive changed meanwhile.
        for _ in range(3):
            newest = self._newest_sequence()
            found = [entry for entry in self._entries(since) if matches(entry)]
            if self._newest_sequence() == newest:
                break
        return found

    def _entries(self, since: datetime | None) -> Iterable[dict]:
        for path in self.files():
            if path != self.path and path.suffix != ".gz" and not path.exists():
                path = path.with_name(path.name + ".gz")  # a moved-aside live file finished meanwhile
            # A file was last written after every event in it: one older than `since` holds none newer, nor do
            # the files rotated before it.
            try:
                if since is not None and datetime.fromtimestamp(path.stat().st_mtime, UTC) < since:
                    return
            except FileNotFoundError:  # the live file, moved aside this moment: the reread finds it
                continue
            yield from reversed(_read_archive(path) if path.suffix == ".gz" else read_jsonl(path))

    def files(self) -> list[Path]:
        """The live log and every older file of its history, newest first: gzip archives (and a live file moved
        aside by a rotation a crash interrupted), then the numbered copies an older version rotated into."""
        return [path for path in [self.path, *reversed(self._history())] if path.is_file()]

    def _history(self) -> list[Path]:
        """The rotated files, oldest first."""
        try:
            names = os.listdir(self.path.parent)
        except FileNotFoundError:
            return []
        legacy, rotated = [], {}
        for name in names:
            if match := self._legacy_name.fullmatch(name):
                legacy.append((-int(match[1]), name))  # .5 is older than .1
            elif match := self._history_name.fullmatch(name):
                sequence = int(match[2])
                # A moved-aside file whose archive was finished is the same events twice: the archive wins.
                if match[3] or sequence not in rotated:
                    rotated[sequence] = name
        return [self.path.with_name(name) for _, name in sorted(legacy)] + [
            self.path.with_name(rotated[sequence]) for sequence in sorted(rotated)
        ]

    def _newest_sequence(self) -> int:
        sequences = [int(m[2]) for p in self._history() if (m := self._history_name.fullmatch(p.name))]
        return max(sequences, default=0)

    # --- writing ---------------------------------------------------------------------------

    def _locked(self):
        # The lock is for other processes (the portal and an `assistant` command on a shared Qdrant server); the
        # threading lock orders this process's threads, which would each take their own flock otherwise.
        return exclusive_lock(self.path)

    def _append(self, line: bytes) -> None:
        if not self._recovered:
            self._finish_rotations()
            self._recovered = True
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(line) > self.max_bytes:
            self._rotate()
            size = 0
        # A writer killed mid-line left it unterminated: end it, so this event does not join the torn one.
        if size and not _ends_with_newline(self.path):
            line = b"\n" + line
        # Unbuffered: after a failed write, no buffer is left to be flushed behind the truncation below.
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            _write_all(descriptor, line)
            os.fsync(descriptor)
        except OSError:
            # A full disk may have taken part of the line: take it back, so the log ends where it ended (we hold
            # the lock; nobody else appended meanwhile). The caller refuses the event.
            _truncate_quietly(descriptor, size)
            raise
        finally:
            os.close(descriptor)

    def _rotate(self) -> None:
        """Moves the live file aside under its archive's name, then compresses it into that archive.

        Moving first makes the archive's name a record of which live file it holds: a crash at any point leaves
        either the moved-aside file (compressed again later) or the finished archive, never the same events twice
        under different names nor a half archive under the final one.
        """
        self._finish_rotations()
        sequence = self._newest_sequence() + 1
        moved = self.path.with_name(f"{self.path.name}.{datetime.now(UTC).strftime(_STAMP)}-{sequence:06d}")
        os.replace(self.path, moved)
        fsync_directory(self.path.parent)
        self._archive(moved)

    def _finish_rotations(self) -> None:
        """Completes what a crash mid-rotation left: moved-aside files become archives, stray temporaries go."""
        for name in os.listdir(self.path.parent):
            if (match := self._history_name.fullmatch(name)) and not match[3]:
                path = self.path.with_name(name)
                if path.with_name(name + ".gz").exists():
                    path.unlink()  # its archive was finished and synced before the crash
                    fsync_directory(path.parent)
                else:
                    self._archive(path)
        for stray in self.path.parent.glob(f".{glob.escape(self.path.name)}.*.gz.tmp"):
            stray.unlink(missing_ok=True)  # a compression the crash cut short; its source is still there

    def _archive(self, moved: Path) -> None:
        final = moved.with_name(moved.name + ".gz")
        # mkstemp creates the file 0600; the archive keeps that mode through the rename.
        descriptor, temporary = tempfile.mkstemp(dir=moved.parent, prefix=f".{moved.name}.", suffix=".gz.tmp")
        try:
            with os.fdopen(descriptor, "wb") as raw, moved.open("rb") as source:
                with gzip.GzipFile(filename=moved.name, mode="wb", fileobj=raw, compresslevel=_COMPRESSLEVEL) as gz:
                    shutil.copyfileobj(source, gz, 1 << 20)
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(temporary, final)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        fsync_directory(final.parent)
        moved.unlink()
        fsync_directory(final.parent)


def _capped(value):
    """`value` with every string in it (at any depth) kept to MAX_TEXT_CHARS; what JSON cannot hold as it is
    becomes its str(), capped too, rather than an error that would refuse the event."""
    if isinstance(value, str):
        return truncated(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {str(key): _capped(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_capped(item) for item in value]
    return truncated(str(value))


def _read_archive(path: Path) -> list[dict]:
    """The events of a gzip archive; a damaged one gives what it holds up to the damage, with a warning."""
    lines = []
    try:
        with gzip.open(path, "rb") as file:
            for line in file:  # line by line: a damaged archive still gives the lines before the damage
                lines.append(line)  # noqa: PERF402
    except FileNotFoundError:
        return []
    except (OSError, EOFError, zlib.error) as exc:
        log.warning("%s is damaged after %d lines (%s): the rest of it is not read", path, len(lines), exc)
    entries = []
    for number, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except ValueError:
            if number != len(lines):  # the last line of a rotated file may be one a writer died writing
                log.warning("%s line %d is not a JSON object; skipped", path, number)
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


def _truncate_quietly(descriptor: int, size: int) -> None:
    try:
        os.ftruncate(descriptor, size)
    except OSError:
        pass  # the torn line is skipped by readers and ended by the next writer


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
