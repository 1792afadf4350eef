"""Sign-in: local accounts from the users file, or the organisation's identity provider through st.login (OIDC).

OIDC is configured by the operator in `.streamlit/secrets.toml` (not in this repository), for example:

    [auth]
    redirect_uri = "https://assistant.example.org/oauth2callback"
    cookie_secret = "a long random string"
    client_id = "..."
    client_secret = "..."
    server_metadata_url = "https://idp.example.org/.well-known/openid-configuration"
    client_kwargs = { scope = "openid profile email groups" }

The identity token must carry a `groups` claim (a list of group names): those are the groups the user reads as.
"""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from assistant import Settings, User
from assistant.users import user_from_claims
from ui.accounts import current_users
from ui.components import USER_KEY, failures_shown, get_settings
from ui.safe_text import md
from ui.sessions import CLEAR_COOKIE_SCRIPT, COOKIE, SessionStore, set_cookie_script
from ui.throttle import Throttle, wait_message

WRONG = "Wrong name or password."
NOTICE_KEY = "sign-in:notice"  # why this session was signed out, shown once on the sign-in page
REMOVED = "You were signed out: your account no longer exists. Ask an administrator if this is a mistake."
REGROUPED = "Your groups have changed since you signed in: sign in again."
TOKEN_KEY = "session:token"  # this session's token, to revoke at sign-out
SET_COOKIE_KEY = "session:set-cookie"  # a token to hand the browser on the next run (a rerun would drop it now)
CLEAR_COOKIE_KEY = "session:clear-cookie"


@st.cache_resource(show_spinner=False)
def session_store(path: str, idle_minutes: int) -> SessionStore:
    return SessionStore(path, timedelta(minutes=idle_minutes))


def _sessions(settings: Settings) -> SessionStore:
    return session_store(str(settings.data_dir / "portal_sessions.json"), settings.portal_session_idle_minutes)


def _cookie() -> str | None:
    try:
        value = st.context.cookies.get(COOKIE)
    except Exception:  # noqa: BLE001 - no browser behind the session (as under AppTest): no cookie
        return None
    return value if isinstance(value, str) and value else None


def _resumed(settings: Settings) -> User | None:
    """The account a reload's cookie names, where its session is live and the account unchanged; else None."""
    token = _cookie()
    if not token:
        return None
    store = _sessions(settings)
    found = store.resume(token)
    current = current_users(settings.users_file).get(found[0]) if found else None
    if current is None or current.groups != found[1]:
        store.revoke(token)
        st.session_state[CLEAR_COOKIE_KEY] = True
        if current is not None:
            st.session_state[NOTICE_KEY] = REGROUPED
        return None
    st.session_state[USER_KEY], st.session_state[TOKEN_KEY] = current, token
    return current


def signed_in_user(settings: Settings) -> User | None:
    """The user of this session, or None. Re-read on every run: for OIDC from the identity token, for a local
    account from the users file, so a removed account is signed out and changed groups apply at once."""
    if settings.auth == "oidc":
        # .get: without an [auth] section in secrets.toml, st.user has no is_logged_in at all.
        if not st.user.get("is_logged_in", False):
            st.session_state.pop(USER_KEY, None)
            return None
        st.session_state[USER_KEY] = _oidc_user()
        return st.session_state[USER_KEY]
    user = st.session_state.get(USER_KEY)
    if user is None:
        return _resumed(settings)
    current = current_users(settings.users_file).get(user.name)
    if current is None:
        # Everything of the session goes, as at sign-out: what it showed was shown to an account that is gone.
        _end(settings)
        st.session_state[NOTICE_KEY] = REMOVED
        return None
    if current != user:
        st.session_state[USER_KEY] = current  # new groups, from this run on (pages read the user from here)
    return current


def _oidc_user() -> User:
    user, ignored = user_from_claims(st.user.to_dict())
    st.session_state["ignored_groups"] = ignored
    return user


def sign_in_page() -> None:
    settings = get_settings()
    if st.session_state.pop(CLEAR_COOKIE_KEY, False):
        st.html(CLEAR_COOKIE_SCRIPT, unsafe_allow_javascript=True)  # the project's own script, nothing of a user's
    st.title("Sign in")
    if settings.auth == "oidc":
        _oidc_sign_in()
    else:
        _local_sign_in(settings)


@st.cache_resource(show_spinner=False)
def sign_in_throttle() -> Throttle:
    # One for the process: every session's failures count against the same name and the same client.
    return Throttle()


def _client_key() -> str:
    """Who is trying, as well as the portal can tell: the client's address, else this browser session.

    Behind a TLS proxy on this host, uvicorn takes the address from X-Forwarded-For (it trusts 127.0.0.1 by
    default); a proxy elsewhere is one address for everyone, which then share one counter.
    """
    try:
        address = st.context.ip_address  # None for loopback
    except Exception:  # noqa: BLE001 - no runtime (as under AppTest): the session is all there is to go by
        address = None
    if address:
        return f"client:{address}"
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    context = get_script_run_ctx()
    return f"session:{context.session_id if context else 'unknown'}"


def _local_sign_in(settings: Settings) -> None:
    from assistant.users import UserStore

    if notice := st.session_state.pop(NOTICE_KEY, None):
        st.info(notice)
    store = UserStore(settings.users_file)
    with failures_shown():  # a damaged users file: its message says how to repair it
        has_users = bool(store.users())
    if not has_users:
        st.info(
            f"No accounts exist yet ({settings.users_file} has none). An administrator creates the first one "
            "on the server:\n\n`assistant users add NAME --group admin`"
        )
    with st.form("sign-in"):
        name = st.text_input("Name", key="sign-in:name", autocomplete="username")
        password = st.text_input("Password", key="sign-in:password", type="password", autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", key="sign-in:submit", type="primary")
    if submitted:
        _attempt(store, name.strip(), password)


def _attempt(store, name: str, password: str) -> None:
    if not (name and password):
        st.error(WRONG)  # nothing was checked, so nothing to count
        return
    throttle = sign_in_throttle()
    name_key, client_key = f"name:{name}", _client_key()
    wait = throttle.begin([name_key, client_key])
    if wait:
        st.error(wait_message(wait))  # refused before the password is looked at: a guess here tells nothing
        return
    with failures_shown():
        user = store.authenticate(name, password)
    if user is None:
        st.error(WRONG)  # the same words whether the name or the password was wrong
        return
    throttle.succeeded(reset=[name_key], release=[client_key])
    token = _sessions(get_settings()).create(user)
    st.session_state[USER_KEY], st.session_state[TOKEN_KEY], st.session_state[SET_COOKIE_KEY] = user, token, token
    st.rerun()


def hand_over_cookie(settings: Settings) -> None:
    """After a sign-in, once: the browser keeps the session's token, so that a reload resumes the session."""
    if token := st.session_state.pop(SET_COOKIE_KEY, None):
        script = set_cookie_script(token, settings.portal_session_idle_minutes * 60)
        st.html(script, unsafe_allow_javascript=True)  # the project's own script and a url-safe token


def _end(settings: Settings) -> None:
    """Ends this browser's session: the server forgets its token, the page forgets everything, the browser its
    cookie (on the sign-in page that comes next)."""
    if token := st.session_state.get(TOKEN_KEY):
        _sessions(settings).revoke(token)
    st.session_state.clear()
    st.session_state[CLEAR_COOKIE_KEY] = True


def _oidc_sign_in() -> None:
    st.write("Sign in with your organisation account.")
    if st.button("Sign in", type="primary"):
        try:
            st.login()
        except st.errors.StreamlitAuthError as error:
            st.error(
                f"Single sign-on is not configured: {md(error)}\n\n"
                "An administrator adds an [auth] section to .streamlit/secrets.toml on the server."
            )


def sign_out(settings: Settings) -> None:
    # Everything of the session goes, the conversation on screen included: the next person at this browser starts
    # clean (kept conversations stay on the server, for their owner).
    _end(settings)
    if settings.auth == "oidc":
        st.logout()
    st.rerun()
