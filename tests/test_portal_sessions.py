"""The portal's sessions that outlive a reload (ui/sessions.py): live while used, gone once signed out or idle."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime, timedelta

from assistant import User
from ui.sessions import COOKIE, SessionStore, set_cookie_script

ANA = User("ana", ("staff",))


def test_a_token_resumes_its_session_until_it_is_revoked(tmp_path):
    store = SessionStore(tmp_path / "sessions.json", timedelta(hours=8))
    token = store.create(ANA)
    assert len(token) >= 43 and store.resume(token) == ("ana", ("staff",))
    assert store.resume(token + "x") is None and store.resume("") is None
    stored = (tmp_path / "sessions.json").read_text()
    assert token not in stored, "only the token's hash is kept"
    assert stat.S_IMODE((tmp_path / "sessions.json").stat().st_mode) == 0o600
    store.revoke(token)
    assert store.resume(token) is None


def test_an_idle_session_ends_and_a_damaged_file_ends_them_all(tmp_path):
    path = tmp_path / "sessions.json"
    store = SessionStore(path, timedelta(minutes=30))
    idle, active = store.create(ANA), store.create(User("hal", ("hr",)))
    sessions = json.loads(path.read_text())
    for record in sessions.values():
        if record["user"] == "ana":
            record["used"] = (datetime.now(UTC) - timedelta(minutes=31)).isoformat(timespec="seconds")
    path.write_text(json.dumps(sessions))
    assert store.resume(idle) is None and store.resume(active) == ("hal", ("hr",))
    assert len(json.loads(path.read_text())) == 1, "the idle one is forgotten"
    path.write_text("{not json")
    assert store.resume(active) is None


def test_the_cookie_is_this_sites_only_and_expires_with_the_idle_timeout():
    script = set_cookie_script("abc-_123", 28800)
    assert f"{COOKIE}=abc-_123; Path=/; Max-Age=28800; SameSite=Strict" in script
    assert "Secure" in script  # added on https pages
