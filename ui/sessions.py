"""A local account's portal session outlives a reload: a random token in a cookie, its hash on the server.

Streamlit keeps a session only as long as the browser tab's connection, so a reload would sign the user out. At
sign-in the portal sets a cookie holding a random token (32 bytes from `secrets`); the server keeps only the token's
SHA-256 with the account's name and groups, in `<data_dir>/portal_sessions.json` (0600). A reload presents the cookie
and resumes the session, while:

- the session has been used within the idle timeout (`ASSISTANT_PORTAL_SESSION_IDLE_MINUTES`);
- the account still exists, with the groups it had when it signed in (new groups mean signing in again);
- nobody signed it out: signing out deletes the server's record, so a copied cookie is worth nothing after.

Nothing is signed with a key kept in the repository: there is no key, the server's record is the session. The cookie
is set by the page's own script (Streamlit cannot set one), so it cannot be HttpOnly; the portal renders no script
from documents or users (ui/safe_text.py), which is what HttpOnly would guard against.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from assistant import User
from assistant.files import exclusive_lock, write_private

COOKIE = "assistant_session"
# The record's last use is written at most this often: every run of a page would otherwise rewrite the file.
TOUCH_EVERY = timedelta(minutes=1)


class SessionStore:
    def __init__(self, path: Path, idle: timedelta):
        self.path = Path(path)
        self.idle = idle

    def create(self, user: User) -> str:
        token = secrets.token_urlsafe(32)
        with exclusive_lock(self.path):  # every browser session of the portal (threads) shares the one file
            sessions = self._live(self._read())
            sessions[_digest(token)] = {"user": user.name, "groups": list(user.groups), "used": _now()}
            self._write(sessions)
        return token

    def resume(self, token: str) -> tuple[str, tuple[str, ...]] | None:
        """(account name, groups at sign-in) of a live session, marked as used now; None for any other token."""
        with exclusive_lock(self.path):
            sessions = self._read()
            live = self._live(sessions)
            record = live.get(_digest(token))
            changed = len(live) != len(sessions)
            if record is not None and datetime.now(UTC) - datetime.fromisoformat(record["used"]) > TOUCH_EVERY:
                record["used"], changed = _now(), True
            if changed:
                self._write(live)
        return (record["user"], tuple(record["groups"])) if record else None

    def revoke(self, token: str) -> None:
        with exclusive_lock(self.path):
            sessions = self._read()
            if sessions.pop(_digest(token), None) is not None:
                self._write(sessions)

    def _live(self, sessions: dict) -> dict:
        cutoff = datetime.now(UTC) - self.idle
        return {key: value for key, value in sessions.items() if datetime.fromisoformat(value["used"]) >= cutoff}

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # a damaged file ends every session: everyone signs in again, nobody gets in unasked

    def _write(self, sessions: dict) -> None:
        write_private(self.path, json.dumps(sessions))


def set_cookie_script(token: str, max_age_s: int) -> str:
    """The page script that stores the token (url-safe base64: nothing to escape) for this site only."""
    return (
        "<script>document.cookie = "
        f"'{COOKIE}={token}; Path=/; Max-Age={max_age_s}; SameSite=Strict' + "
        "(location.protocol === 'https:' ? '; Secure' : '');</script>"
    )


CLEAR_COOKIE_SCRIPT = f"<script>document.cookie = '{COOKIE}=; Path=/; Max-Age=0; SameSite=Strict';</script>"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
