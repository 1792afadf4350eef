"""The users file as the portal reads it on every run: parsed again only when the file itself changed.

A signed-in local user is checked against it at each run, so removing an account or changing its groups
(`assistant users remove` / `add`) takes effect at the user's next click, not at their next sign-in.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from assistant import User
from assistant.users import UserStore

_lock = threading.Lock()
_parsed: dict[Path, tuple[tuple, dict[str, User]]] = {}


def _signature(path: Path) -> tuple | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    # UserStore writes a new file and renames it over the old one: a change moves the inode as well as the times.
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def current_users(path: Path | str) -> dict[str, User]:
    """Every account in the users file by name; raises UserStoreError (which says how to repair it) if damaged."""
    path = Path(os.path.abspath(path))
    signature = _signature(path)
    with _lock:
        cached = _parsed.get(path)
        if cached is not None and signature is not None and cached[0] == signature:
            return cached[1]
    users = {user.name: user for user in UserStore(path).users()}
    # Read after parsing too: a file replaced meanwhile must not be cached under the new signature with old content.
    if signature is not None and _signature(path) == signature:
        with _lock:
            _parsed[path] = (signature, users)
    return users
