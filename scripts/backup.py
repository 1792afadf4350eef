#!/usr/bin/env python3
"""Back up and restore the assistant's state: its two Qdrant collections and the data directory's files.

    python scripts/backup.py create DEST              a new backup in the directory DEST (which must not exist)
    python scripts/backup.py verify DEST              check every file of a backup against its manifest
    python scripts/backup.py restore DEST [--replace] put a backup back

What is backed up and where it goes back to come from the assistant's own settings (ASSISTANT_* variables or the
file ASSISTANT_CONFIG names), so the script acts on the installation those settings describe:

- the store: with ASSISTANT_QDRANT_URL, a snapshot of each collection made by the Qdrant server and downloaded
  through its API; with the embedded store, a copy of its two shards made while holding their locks, so no process
  writes them meanwhile (one that has the store open makes the backup refuse, and naming it is all there is to do);
- the audit log, its archives (and any older numbered copies) and its hashing key; the portal's accounts; the API
  keys; the portal's uploads; the kept evaluation runs (`assistant eval`), the baseline of the next upgrade's check.

DEST/manifest.json lists every file with its size and SHA-256. `verify` and `restore` check all of them before
anything is touched, and `restore` never deletes: a file or embedded shard it replaces is moved aside with a
.pre-restore-TIMESTAMP suffix, and a store that already holds collections is replaced only with --replace. The
manifest detects damage, not tampering: whoever can rewrite the backup can rewrite its manifest, so keep backups
where only operators can write (they hold documents, password hashes and the audit log: the directory is 0700).

It connects to the configured Qdrant URL and nowhere else: proxy variables are ignored and redirects are refused,
like the store itself (retrieval/store.py).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit

FORMAT = "onprem-assistant-backup"
VERSION = 1
MANIFEST = "manifest.json"
# A collection's part in the store, which is what a backup records: a restore puts each where the target's settings
# put that part, so a backup can go back into an installation whose ASSISTANT_COLLECTION differs.
CHUNKS, RECORDS = "chunks", "records"
# The store's commit protocol writes a document's chunks before its record; snapshotting the records first means a
# record in the backup never vouches for chunks written after the chunks were snapshotted.
SNAPSHOT_ORDER = (RECORDS, CHUNKS)
# Restored the other way round: chunks first, then the records that vouch for them.
RESTORE_ORDER = (CHUNKS, RECORDS)
_CHUNK = 1 << 20
_AUDIT = "audit.jsonl"
# The audit log's history (assistant/audit.py): gzip archives audit.jsonl.YYYYMMDDTHHMMSSZ-NNNNNN.gz, the same name
# without .gz for a live file a crash left moved aside, and the numbered copies older versions rotated into.
_HISTORY = r"\.(?:[1-9][0-9]{0,2}|[0-9]{8}T[0-9]{6}Z-[0-9]{6,}(?:\.gz)?)"
_ROTATED = re.compile(r"audit\.jsonl" + _HISTORY)
_STATE_ROLES = re.compile(r"audit\.jsonl(" + _HISTORY + r"|\.key)?|users\.yaml|api_keys\.yaml")


class BackupError(RuntimeError):
    """Something the operator must know or fix; the message says which and what to do."""


# --- what the settings name --------------------------------------------------------------------------------------


@dataclass
class Installation:
    """The state one set of the assistant's settings names, and where each part of a backup goes back to."""

    qdrant_url: str | None
    qdrant_api_key: str | None
    qdrant_path: Path | None
    collections: dict[str, str]  # role -> collection name
    data_dir: Path
    audit_log: Path
    state: dict[str, Path]  # role (a default file name) -> the file it is in this installation
    evaluations: Path

    @classmethod
    def from_settings(cls, settings) -> Installation:
        audit = Path(settings.audit_log)
        api_keys = getattr(settings, "api_keys_file", None) or Path(settings.data_dir) / "api_keys.yaml"
        state = _audit_family(audit)
        state["users.yaml"] = Path(settings.users_file)
        state["api_keys.yaml"] = Path(api_keys)
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        path = None if settings.qdrant_url else Path(settings.qdrant_path)
        return cls(
            qdrant_url=settings.qdrant_url,
            qdrant_api_key=key,
            qdrant_path=path,
            collections={CHUNKS: settings.collection, RECORDS: f"{settings.collection}_documents"},
            data_dir=Path(settings.data_dir),
            audit_log=audit,
            state=state,
            evaluations=Path(getattr(settings, "evaluations_dir", None) or Path(settings.data_dir) / "evaluations"),
        )

    @property
    def kind(self) -> str:
        return "server" if self.qdrant_url else "embedded"

    @property
    def uploads(self) -> Path:
        return self.data_dir / "uploads"  # assistant/uploads.py keeps each user's uploads below it

    @property
    def folders(self) -> dict[str, Path]:
        """The folders backed up file by file, by the name their files have in a backup."""
        return {"uploads": self.uploads, "evaluations": self.evaluations}

    def state_path(self, role: str) -> Path:
        if role in self.state:
            return self.state[role]
        # A rotated copy the backup has and this installation does not (yet).
        return self.audit_log.with_name(self.audit_log.name + role[len(_AUDIT) :])

    def audit_family(self) -> dict[str, Path]:
        """The audit log's files as they are now: listed again under its lock, a rotation cannot slip between."""
        return _audit_family(self.audit_log)

    def describe(self) -> str:
        if self.qdrant_url:
            parts = urlsplit(self.qdrant_url)
            return f"Qdrant server {parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}"
        return f"embedded store {self.qdrant_path}"


def _audit_family(audit: Path) -> dict[str, Path]:
    """The log, its hashing key and every file of its history on disk, by role (a default file name)."""
    family = {_AUDIT: audit, f"{_AUDIT}.key": audit.with_name(audit.name + ".key")}
    if audit.parent.is_dir():
        for path in audit.parent.iterdir():
            suffix = path.name[len(audit.name) :]
            if path.name.startswith(audit.name) and _ROTATED.fullmatch(_AUDIT + suffix):
                family[_AUDIT + suffix] = path
    return family


def load_installation() -> Installation:
    from pydantic import ValidationError

    from assistant.settings import Settings

    try:
        settings = Settings()
    except (ValidationError, ValueError, FileNotFoundError) as error:
        raise BackupError(f"the assistant's settings are not valid: {error}") from None
    if not settings.qdrant_url and settings.qdrant_path == ":memory:":
        raise BackupError("ASSISTANT_QDRANT_PATH is :memory:, a store that lives and dies with its process")
    return Installation.from_settings(settings)


# --- files -------------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _copy(source: Path, target: Path) -> tuple[int, str]:
    """Copies a regular file to a new file (0600, synced) and returns its size and SHA-256, read once.

    Runs of zeros are skipped rather than written, so the copy stays sparse: Qdrant preallocates its write-ahead log
    and storage pages (a store of a few documents is 800 KB on disk in 320 MB of mostly-hole files), and a dense copy
    would fill the backup's disk with zeros.
    """
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with source.open("rb") as reader, os.fdopen(descriptor, "wb") as writer:
        while chunk := reader.read(_CHUNK):
            digest.update(chunk)
            if chunk.count(0) == len(chunk):
                writer.seek(len(chunk), os.SEEK_CUR)
            else:
                writer.write(chunk)
            size += len(chunk)
        writer.truncate(size)  # a file that ends in zeros ends where the source does
        writer.flush()
        os.fsync(writer.fileno())
    return size, digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _aside(path: Path, stamp: str) -> Path:
    return path.with_name(f"{path.name}.pre-restore-{stamp}")


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # The lock the assistant's own writers take (assistant/files.py): the audit log does not rotate, and an account
    # or key file is not rewritten, halfway through a copy.
    from assistant.files import exclusive_lock

    with exclusive_lock(path):
        yield


@dataclass
class Manifest:
    store: dict
    files: dict[str, dict] = field(default_factory=dict)  # relative path -> {"size", "sha256"}
    dirs: list[str] = field(default_factory=list)  # embedded shards' directories, empty ones included
    created: str = ""

    def to_json(self) -> str:
        body = {
            "format": FORMAT,
            "version": VERSION,
            "created": self.created,
            "store": self.store,
            "files": dict(sorted(self.files.items())),
            "dirs": sorted(self.dirs),
        }
        return json.dumps(body, indent=2) + "\n"


# --- the embedded store --------------------------------------------------------------------------------------------


@contextmanager
def edge_locks(shards: list[Path]) -> Iterator[None]:
    """Holds the locks that keep every other process out of these embedded shards.

    qdrant-edge takes an exclusive flock on a shard's `wal` directory for as long as the shard is open; taking the
    same lock here (without opening the shard, whose optimizer could rewrite segments while they are copied) means
    no process has the shard open and none can open it until the copy is done.
    """
    with ExitStack() as stack:
        for shard in shards:
            descriptor = os.open(shard / "wal", os.O_RDONLY)
            stack.callback(os.close, descriptor)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise BackupError(
                    f"the embedded store at {shard.parent} is open in another process (the portal, the API or an "
                    "`assistant` command): stop it and run this again"
                ) from None
        yield


def _shards(installation: Installation) -> dict[str, Path]:
    return {role: installation.qdrant_path / name for role, name in installation.collections.items()}


def _existing_shards(installation: Installation) -> dict[str, Path]:
    return {role: path for role, path in _shards(installation).items() if (path / "wal").is_dir()}


def backup_embedded(installation: Installation, partial: Path, manifest: Manifest) -> None:
    shards = _shards(installation)
    missing = [str(path) for path in shards.values() if not (path / "wal").is_dir()]
    if missing:
        raise BackupError(f"no embedded store at {installation.qdrant_path} (missing {', '.join(missing)})")
    with edge_locks(list(shards.values())):
        for role, shard in shards.items():
            for directory, subdirectories, names in os.walk(shard):
                base = Path(directory)
                relative = base.relative_to(shard)
                manifest.dirs.append(str(PurePosixPath("store", role, *relative.parts)))
                for name in sorted(names + [d for d in subdirectories if (base / d).is_symlink()]):
                    source = base / name
                    if source.is_symlink() or not source.is_file():
                        raise BackupError(f"{source} is not a regular file; a shard holds only files and folders")
                    key = str(PurePosixPath("store", role, *relative.parts, name))
                    size, digest = _copy(source, partial / key)
                    manifest.files[key] = {"size": size, "sha256": digest}
    manifest.store = {"kind": "embedded", "collections": dict(installation.collections)}


def restore_embedded(
    installation: Installation, backup: Path, manifest: dict, replace: bool, stamp: str, done: list
) -> None:
    root = installation.qdrant_path
    existing = _existing_shards(installation)
    if existing and not replace:
        raise BackupError(
            f"the embedded store at {root} already holds {', '.join(sorted(p.name for p in existing.values()))}: "
            "back it up first (`create`), then restore with --replace (it is moved aside, not deleted)"
        )
    # Created as the assistant creates them: readable by the service's user alone.
    installation.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    with edge_locks(list(existing.values())):
        staged = {}
        try:
            for role in RESTORE_ORDER:
                staging = root / f".{installation.collections[role]}.restoring-{stamp}"
                staged[role] = staging
                prefix = f"store/{role}"
                for directory in manifest["dirs"]:
                    if directory == prefix or directory.startswith(prefix + "/"):
                        (staging / directory[len(prefix) :].lstrip("/")).mkdir(mode=0o700, parents=True, exist_ok=True)
                for key, entry in manifest["files"].items():
                    if key.startswith(prefix + "/"):
                        _, digest = _copy(backup / key, staging / key[len(prefix) + 1 :])
                        if digest != entry["sha256"]:
                            raise BackupError(f"{backup / key} changed while it was being restored; nothing replaced")
            for role in RESTORE_ORDER:
                shard = root / installation.collections[role]
                if shard.exists():
                    os.rename(shard, _aside(shard, stamp))
                    done.append(f"moved {shard} aside to {_aside(shard, stamp).name}")
                os.rename(staged[role], shard)
                del staged[role]
                done.append(f"restored {shard}")
            _fsync_dir(root)
        finally:
            for staging in staged.values():
                shutil.rmtree(staging, ignore_errors=True)


# --- a Qdrant server ----------------------------------------------------------------------------------------------


def _server_clients(installation: Installation, timeout: float):
    import httpx
    from qdrant_client import QdrantClient

    # Both clients reach the configured host and nothing else: trust_env=False ignores proxy variables (a proxy is
    # another host that would see every chunk), redirects are refused, and qdrant-client's version check (a request
    # through the environment's proxy, with the API key) is off. REST only.
    client = QdrantClient(
        url=installation.qdrant_url,
        api_key=installation.qdrant_api_key,
        prefer_grpc=False,
        check_compatibility=False,
        trust_env=False,
        follow_redirects=False,
        timeout=int(timeout),
    )
    headers = {"api-key": installation.qdrant_api_key} if installation.qdrant_api_key else {}
    http = httpx.Client(
        base_url=installation.qdrant_url,
        headers=headers,
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(timeout, connect=10.0),
    )
    return client, http


def _qdrant_errors() -> tuple[type[Exception], ...]:
    """What a qdrant-client call raises for an unreachable server, an HTTP error, or an answer it cannot parse."""
    from qdrant_client.http.exceptions import ApiException

    return (ApiException, ValueError)


def _server_error(installation: Installation, doing: str, error: Exception) -> BackupError:
    return BackupError(f"{doing} on the {installation.describe()} failed: {error}")


def _check_response(installation: Installation, response, doing: str) -> None:
    if response.status_code != 200:
        response.read()  # a streamed response has no text until read
        where = f" to {response.headers.get('location')}" if response.is_redirect else ""
        raise BackupError(
            f"{doing} on the {installation.describe()} answered HTTP {response.status_code}{where}: "
            f"{response.text[:300] if not response.is_redirect else 'redirects are not followed'}"
        )


def _snapshot_path(collection: str, snapshot: str | None = None) -> str:
    path = f"collections/{quote(collection, safe='')}/snapshots"
    return path if snapshot is None else f"{path}/{quote(snapshot, safe='')}"


def backup_server(installation: Installation, partial: Path, manifest: Manifest, timeout: float) -> None:
    client, http = _server_clients(installation, timeout)
    try:
        for role in SNAPSHOT_ORDER:
            collection = installation.collections[role]
            try:
                exists = client.collection_exists(collection)
            except _qdrant_errors() as error:
                raise _server_error(installation, f"looking for collection {collection!r}", error) from None
            if not exists:
                raise BackupError(f"the {installation.describe()} has no collection {collection!r}: nothing to back up")
            try:
                snapshot = client.create_snapshot(collection_name=collection, wait=True)
            except _qdrant_errors() as error:
                raise _server_error(installation, f"snapshotting {collection!r}", error) from None
            if snapshot is None or not snapshot.name or "/" in snapshot.name or snapshot.name in (".", ".."):
                raise BackupError(f"the {installation.describe()} named no usable snapshot of {collection!r}")
            try:
                key = f"store/{role}.snapshot"
                size, digest = _download(installation, http, _snapshot_path(collection, snapshot.name), partial / key)
                if snapshot.checksum and snapshot.checksum != digest:
                    raise BackupError(
                        f"the snapshot of {collection!r} downloaded with SHA-256 {digest}, but the server made it with "
                        f"{snapshot.checksum}: the transfer was damaged; run the backup again"
                    )
                manifest.files[key] = {"size": size, "sha256": digest}
            finally:
                # The server's copy has served its purpose; left there, each backup would add a full copy of the
                # collection to the server's disk.
                try:
                    client.delete_snapshot(collection_name=collection, snapshot_name=snapshot.name, wait=True)
                except _qdrant_errors() as error:
                    print(
                        f"backup.py: could not delete snapshot {snapshot.name} from the server: {error}",
                        file=sys.stderr,
                    )
    finally:
        client.close()
        http.close()
    manifest.store = {"kind": "server", "collections": dict(installation.collections)}


def _download(installation: Installation, http, path: str, target: Path) -> tuple[int, str]:
    import httpx

    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        with http.stream("GET", path) as response:
            _check_response(installation, response, f"downloading {path}")
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as writer:
                for chunk in response.iter_bytes(_CHUNK):
                    digest.update(chunk)
                    writer.write(chunk)
                    size += len(chunk)
                writer.flush()
                os.fsync(writer.fileno())
    except httpx.HTTPError as error:
        raise _server_error(installation, f"downloading {path}", error) from None
    return size, digest.hexdigest()


def restore_server(
    installation: Installation, backup: Path, manifest: dict, replace: bool, timeout: float, done: list
) -> None:
    import httpx

    client, http = _server_clients(installation, timeout)
    try:
        existing = []
        for role in RESTORE_ORDER:
            collection = installation.collections[role]
            try:
                if client.collection_exists(collection):
                    existing.append(collection)
            except _qdrant_errors() as error:
                raise _server_error(installation, f"looking for collection {collection!r}", error) from None
        if existing and not replace:
            raise BackupError(
                f"the {installation.describe()} already holds {', '.join(existing)}: back it up first (`create`), "
                "then restore with --replace (the collections are replaced by the backup's)"
            )
        for role in RESTORE_ORDER:
            collection = installation.collections[role]
            key = f"store/{role}.snapshot"
            # priority=snapshot: the snapshot's points replace whatever the collection holds; the checksum lets the
            # server refuse a file damaged on the way.
            params = {"wait": "true", "priority": "snapshot", "checksum": manifest["files"][key]["sha256"]}
            try:
                with (backup / key).open("rb") as snapshot:
                    response = http.post(
                        f"{_snapshot_path(collection)}/upload",
                        params=params,
                        files={"snapshot": (f"{collection}.snapshot", snapshot, "application/octet-stream")},
                    )
            except httpx.HTTPError as error:
                raise _server_error(installation, f"uploading the snapshot of {collection!r}", error) from None
            _check_response(installation, response, f"recovering {collection!r} from its snapshot")
            done.append(f"restored collection {collection} on the {installation.describe()}")
    finally:
        client.close()
        http.close()


# --- the data directory's files ------------------------------------------------------------------------------------


def backup_state(installation: Installation, partial: Path, manifest: Manifest) -> None:
    audit_family = {role: path for role, path in installation.state.items() if role.startswith(_AUDIT)}
    others = {role: path for role, path in installation.state.items() if not role.startswith(_AUDIT)}
    groups = [(installation.audit_log, audit_family)] + [(path, {role: path}) for role, path in others.items()]
    for lock, files in groups:
        if not any(path.is_file() for path in files.values()):
            continue
        with _file_lock(lock):
            if lock == installation.audit_log:
                files = installation.audit_family()  # a rotation before the lock made an archive of the live file
            for role, path in files.items():
                if path.is_file():
                    key = f"state/{role}"
                    size, digest = _copy(path, partial / key)
                    manifest.files[key] = {"size": size, "sha256": digest}
    for top, folder in installation.folders.items():
        for directory, _, names in os.walk(folder):
            for name in sorted(names):
                source = Path(directory) / name
                if source.is_symlink() or not source.is_file():
                    continue  # the assistant writes only regular files here
                key = str(PurePosixPath(top, *source.relative_to(folder).parts))
                size, digest = _copy(source, partial / key)
                manifest.files[key] = {"size": size, "sha256": digest}


def _put(source: Path, target: Path, expected: str, stamp: str, done: list) -> None:
    """Puts `source` at `target`, whole or not at all; a different file already there is moved aside first."""
    if target.is_file() and _sha256(target)[1] == expected:
        return
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.restoring-{stamp}")
    try:
        _, digest = _copy(source, staging)
        if digest != expected:
            raise BackupError(f"{source} changed while it was being restored; {target} left as it was")
        if target.exists():
            os.replace(target, _aside(target, stamp))
            done.append(f"moved {target} aside to {_aside(target, stamp).name}")
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    _fsync_dir(target.parent)
    done.append(f"restored {target}")


def restore_state(installation: Installation, backup: Path, manifest: dict, stamp: str, done: list) -> None:
    installation.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = manifest["files"]
    roles = {key.split("/", 1)[1] for key in files if key.startswith("state/")}
    audit_roles = {role for role in roles if role.startswith(_AUDIT)}
    if audit_roles:
        # The log and its archives are one history: a current file that the backup's would not replace (an archive
        # made after the backup) would splice two histories together, so it is moved aside too, not deleted.
        with _file_lock(installation.audit_log):
            for role, path in installation.audit_family().items():
                if role not in audit_roles and path.is_file():
                    os.replace(path, _aside(path, stamp))
                    done.append(f"moved {path} aside to {_aside(path, stamp).name}")
            for role in sorted(audit_roles):
                key = f"state/{role}"
                _put(backup / key, installation.state_path(role), files[key]["sha256"], stamp, done)
    for role in sorted(roles - audit_roles):
        key = f"state/{role}"
        target = installation.state_path(role)
        with _file_lock(target):
            _put(backup / key, target, files[key]["sha256"], stamp, done)
    for top, folder in installation.folders.items():
        for key in sorted(key for key in files if key.startswith(f"{top}/")):
            _put(backup / key, folder.joinpath(*PurePosixPath(key).parts[1:]), files[key]["sha256"], stamp, done)


# --- the backup directory ------------------------------------------------------------------------------------------


def _safe_key(key: str) -> bool:
    path = PurePosixPath(key)
    return (
        bool(key)
        and not path.is_absolute()
        and "\\" not in key
        and "\x00" not in key
        and all(part not in ("", ".", "..") for part in key.split("/"))
    )


def read_manifest(backup: Path) -> dict:
    """The backup's manifest, after checking that it describes exactly the files present, each intact."""
    if not backup.is_dir():
        raise BackupError(f"no backup at {backup}")
    try:
        manifest = json.loads((backup / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackupError(f"{backup} has no {MANIFEST}: not a backup, or one that did not finish") from None
    except ValueError as error:
        raise BackupError(f"{backup / MANIFEST} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{backup / MANIFEST} is not a manifest of this assistant's backups")
    if manifest.get("version") != VERSION:
        raise BackupError(
            f"{backup} is a version {manifest.get('version')} backup; this script reads version {VERSION}"
        )
    store, files, dirs = manifest.get("store"), manifest.get("files"), manifest.get("dirs", [])
    if not isinstance(store, dict) or store.get("kind") not in ("server", "embedded") or not isinstance(files, dict):
        raise BackupError(f"{backup / MANIFEST} is malformed (store, files)")
    if set(store.get("collections", {})) != {CHUNKS, RECORDS}:
        raise BackupError(f"{backup / MANIFEST} does not name the store's two collections")

    problems = []
    for key in list(files) + list(dirs):
        if not isinstance(key, str) or not _safe_key(key):
            problems.append(f"{key!r} is not a plain relative path")
            continue
        top, _, rest = key.partition("/")
        snapshots = (f"store/{CHUNKS}.snapshot", f"store/{RECORDS}.snapshot")
        allowed = (
            (top == "store" and store["kind"] == "server" and key in snapshots)
            or (top == "store" and store["kind"] == "embedded" and rest.split("/")[0] in (CHUNKS, RECORDS))
            or (top == "state" and _STATE_ROLES.fullmatch(rest) is not None and key in files)
            or (top in ("uploads", "evaluations") and bool(rest) and key in files)
        )
        if not allowed:
            problems.append(f"{key} is not part of a backup")
    for role in (CHUNKS, RECORDS):
        if store["kind"] == "server" and f"store/{role}.snapshot" not in files:
            problems.append(f"store/{role}.snapshot is missing")
        if store["kind"] == "embedded" and f"store/{role}/wal" not in dirs:
            problems.append(f"store/{role} is not a whole shard (no wal)")
    if problems:
        raise BackupError(f"{backup / MANIFEST} cannot be restored: " + "; ".join(problems))

    present, odd = set(), []
    for directory, subdirectories, names in os.walk(backup):
        base = Path(directory)
        for name in names + [d for d in subdirectories if (base / d).is_symlink()]:
            path = base / name
            key = str(PurePosixPath(*path.relative_to(backup).parts))
            if key == MANIFEST:
                continue
            if path.is_symlink() or not path.is_file():
                odd.append(key)
            else:
                present.add(key)
    missing, extra = sorted(set(files) - present), sorted(present - set(files))
    damaged = []
    for key in sorted(set(files) & present):
        entry = files[key]
        size, digest = _sha256(backup / key)
        if not isinstance(entry, dict) or entry.get("size") != size or entry.get("sha256") != digest:
            damaged.append(key)
    faults = [f"missing: {', '.join(missing)}"] if missing else []
    faults += [f"not in the manifest: {', '.join(extra)}"] if extra else []
    faults += [f"not regular files: {', '.join(sorted(odd))}"] if odd else []
    faults += [f"damaged (size or SHA-256 differs): {', '.join(damaged)}"] if damaged else []
    if faults:
        raise BackupError(f"the backup at {backup} does not match its manifest: " + "; ".join(faults))
    return manifest


def create(destination: Path, timeout: float) -> str:
    installation = load_installation()
    destination = destination.absolute()
    partial = destination.with_name(destination.name + ".partial")
    if destination.exists():
        raise BackupError(f"{destination} exists: a backup goes into a new directory")
    if partial.exists():
        raise BackupError(f"{partial} is left from a backup that did not finish: remove it, then run this again")
    if not destination.parent.is_dir():
        raise BackupError(f"{destination.parent} does not exist")
    partial.mkdir(mode=0o700)
    manifest = Manifest(store={}, created=datetime.now(UTC).isoformat(timespec="seconds"))
    try:
        if installation.kind == "server":
            backup_server(installation, partial, manifest, timeout)
        else:
            backup_embedded(installation, partial, manifest)
        backup_state(installation, partial, manifest)
        descriptor = os.open(partial / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(manifest.to_json())
            file.flush()
            os.fsync(file.fileno())
        _fsync_dir(partial)
        # Only a finished backup appears under its name.
        os.rename(partial, destination)
        _fsync_dir(destination.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    total = sum(entry["size"] for entry in manifest.files.values())
    return (
        f"backed up the {installation.describe()} and {installation.data_dir}'s state to {destination}: "
        f"{len(manifest.files)} files, {total / 1e6:.1f} MB"
    )


def verify(backup: Path) -> str:
    manifest = read_manifest(backup)
    total = sum(entry["size"] for entry in manifest["files"].values())
    return (
        f"{backup}: intact, {len(manifest['files'])} files, {total / 1e6:.1f} MB, a {manifest['store']['kind']} store "
        f"backed up {manifest.get('created', '')}"
    )


def restore(backup: Path, replace: bool, timeout: float) -> str:
    manifest = read_manifest(backup)  # every file checked before anything is touched
    installation = load_installation()
    if manifest["store"]["kind"] != installation.kind:
        held = "an embedded store" if manifest["store"]["kind"] == "embedded" else "a Qdrant server"
        raise BackupError(
            f"the backup is of {held}, but the settings name the {installation.describe()}: restore it into an "
            "installation of the same kind (to move to another kind, ingest the documents there again)"
        )
    stamp, done = _stamp(), []
    try:
        if installation.kind == "server":
            restore_server(installation, backup, manifest, replace, timeout, done)
        else:
            restore_embedded(installation, backup, manifest, replace, stamp, done)
        restore_state(installation, backup, manifest, stamp, done)
    except BackupError as error:
        # Say what had been done before it stopped: the operator resumes from there.
        raise BackupError("\n".join([str(error), *(["done before it stopped:"] + done if done else [])])) from None
    return "\n".join(done + [f"restored {backup} into the {installation.describe()} and {installation.data_dir}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="backup.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one Qdrant request may take")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("create", help="a new backup").add_argument("destination", type=Path)
    commands.add_parser("verify", help="check a backup against its manifest").add_argument("backup", type=Path)
    restore_parser = commands.add_parser("restore", help="put a backup back")
    restore_parser.add_argument("backup", type=Path)
    restore_parser.add_argument(
        "--replace", action="store_true", help="replace a store that holds collections (embedded: moved aside)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "create":
            print(create(args.destination, args.timeout))
        elif args.command == "verify":
            print(verify(args.backup))
        else:
            print(restore(args.backup, args.replace, args.timeout))
    except BackupError as error:
        print(f"backup.py {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
