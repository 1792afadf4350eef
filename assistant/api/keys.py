"""API keys: a name, the user and groups the key acts as, and a SHA-256 hash of the key, in one YAML file (0600).

    keys:
      ci-bot: {sha256: "9f86d0...", user: ci-bot, groups: [staff], created: "2026-11-23T10:00:00+00:00"}

A key is `asst_` and 43 characters of `secrets.token_urlsafe(32)`: 256 random bits, shown once by `assistant keys add`
and never stored. A plain SHA-256 is the right hash for it. argon2 (the portal's password hash) is slow on purpose so
that guessing a person's low-entropy password from a stolen hash costs years; no amount of guessing finds a 256-bit
random key, so that slowness would protect nothing and cost every API request tens of milliseconds and 64 MB of
memory. Hashing still matters: a copy of this file (a backup, a misplaced permission) does not hand out the keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import yaml

from assistant.files import exclusive_lock, write_private
from assistant.types import User
from retrieval import InvalidGroupName, validate_groups

KEY_PREFIX = (
    "asst_"  # tells a key from an OIDC token in the same Authorization header, and makes a leaked one greppable
)
_NOT_A_KEY = hashlib.sha256(b"not anyone's key").hexdigest()
_SHA256 = re.compile(r"[0-9a-f]{64}")


class KeyStoreError(ValueError):
    pass


@dataclass(frozen=True)
class ApiKey:
    name: str
    user: User
    created: str


class ApiKeyStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        # The server checks a key on every request: the file is parsed again only when it was replaced (each change
        # writes a new file, so its inode changes), and `assistant keys remove` takes effect on the next request.
        self._cache: tuple[tuple[int, int, int], dict[str, dict]] | None = None
        self._cache_lock = threading.Lock()

    # --- changes ---------------------------------------------------------------------------

    def add(self, name: str, groups: Iterable[str], user: str | None = None) -> str:
        """Creates a key named `name` acting as `user` (default: the name) in `groups`; returns the key, once."""
        _check_name(name, "key")
        user = name if user is None else user
        _check_name(user, "user")
        try:
            groups = validate_groups(groups)
        except InvalidGroupName as exc:
            raise KeyStoreError(str(exc)) from None
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        with exclusive_lock(self.path):
            keys = self._load()
            if name in keys:
                # Replacing it would cut off whoever holds the old key without a word: say so, and let them choose.
                raise KeyStoreError(
                    f"a key named {name!r} exists: `assistant keys remove {name}` first, or choose another name"
                )
            keys[name] = {
                "sha256": _digest(key),
                "user": user,
                "groups": list(groups),
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            self._save(keys)
        return key

    def remove(self, name: str) -> None:
        with exclusive_lock(self.path):
            keys = self._load()
            if name not in keys:
                raise KeyStoreError(f"no key named {name!r} in {self.path}: `assistant keys list` lists them")
            del keys[name]
            self._save(keys)

    # --- reading ---------------------------------------------------------------------------

    def entries(self) -> list[ApiKey]:
        return [_entry_key(name, entry) for name, entry in sorted(self._current().items())]

    def authenticate(self, presented: str) -> ApiKey | None:
        """The key whose hash matches `presented`; None when none does."""
        digest = _digest(presented) if presented.startswith(KEY_PREFIX) else _NOT_A_KEY
        found = None
        # Every entry is compared, each in constant time, so the time taken tells nothing about which hashes share
        # a prefix with the presented one (or whether any matched).
        for name, entry in self._current().items():
            if hmac.compare_digest(entry["sha256"], digest):
                found = (name, entry)
        return None if found is None else _entry_key(*found)

    # --- the file --------------------------------------------------------------------------

    def _current(self) -> dict[str, dict]:
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return {}
        identity = (status.st_ino, status.st_mtime_ns, status.st_size)
        with self._cache_lock:
            if self._cache is None or self._cache[0] != identity:
                self._cache = (identity, self._load())
            return self._cache[1]

    def _load(self) -> dict[str, dict]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        fix = "fix it, or move it away and create the keys again with `assistant keys add`"
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise KeyStoreError(f"the API keys file {self.path} is not valid YAML ({exc}): {fix}") from None
        if data is None:  # an empty file
            return {}
        keys = data.get("keys") if isinstance(data, dict) else "malformed"
        if keys is None:  # `keys:` with none under it
            return {}
        if not isinstance(keys, dict):
            raise KeyStoreError(f"the API keys file {self.path} does not hold a 'keys:' mapping: {fix}")
        for name, entry in keys.items():
            if not (
                isinstance(name, str)
                and isinstance(entry, dict)
                and isinstance(entry.get("sha256"), str)
                and _SHA256.fullmatch(entry["sha256"])
                and isinstance(entry.get("user"), str)
                and isinstance(entry.get("groups"), list)
            ):
                raise KeyStoreError(
                    f"the API keys file {self.path} has a malformed entry {name!r} (each key needs sha256 (64 hex "
                    f"digits), user and a list of groups): {fix}"
                )
            try:
                _check_name(entry["user"], "user")
                validate_groups(entry["groups"])
            except (InvalidGroupName, KeyStoreError) as exc:
                raise KeyStoreError(f"the API keys file {self.path}, key {name!r}: {exc}: {fix}") from None
        return keys

    def _save(self, keys: dict[str, dict]) -> None:
        text = yaml.safe_dump({"keys": dict(sorted(keys.items()))}, sort_keys=False, default_flow_style=False)
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_private(self.path, text)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _entry_key(name: str, entry: dict) -> ApiKey:
    return ApiKey(name, User(entry["user"], tuple(entry["groups"])), str(entry.get("created", "")))


def _check_name(name: str, what: str) -> None:
    # The same rule as a group name: it goes into the audit log and the metrics, and is typed on command lines.
    try:
        validate_groups([name])
    except InvalidGroupName:
        raise KeyStoreError(
            f"invalid {what} name {name!r}: use 1-64 letters, digits, '_', '.', '@' or '-', starting with a letter or "
            "digit"
        ) from None
