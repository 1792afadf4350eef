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

import streamlit as st

from assistant import Settings, User
from assistant.users import user_from_claims
from ui.components import USER_KEY, failures_shown, get_settings

WRONG = "Wrong name or password."


def signed_in_user(settings: Settings) -> User | None:
    """The user of this session, or None. For OIDC it is re-read from the identity token on every run."""
    if settings.auth == "oidc":
        # .get: without an [auth] section in secrets.toml, st.user has no is_logged_in at all.
        if not st.user.get("is_logged_in", False):
            st.session_state.pop(USER_KEY, None)
            return None
        st.session_state[USER_KEY] = _oidc_user()
    return st.session_state.get(USER_KEY)


def _oidc_user() -> User:
    user, ignored = user_from_claims(st.user.to_dict())
    st.session_state["ignored_groups"] = ignored
    return user


def sign_in_page() -> None:
    settings = get_settings()
    st.title("Sign in")
    if settings.auth == "oidc":
        _oidc_sign_in()
    else:
        _local_sign_in(settings)


def _local_sign_in(settings: Settings) -> None:
    from assistant.users import UserStore

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
        with failures_shown():
            user = store.authenticate(name.strip(), password) if name.strip() and password else None
        if user is None:
            st.error(WRONG)  # the same words whether the name or the password was wrong
        else:
            st.session_state[USER_KEY] = user
            st.rerun()


def _oidc_sign_in() -> None:
    st.write("Sign in with your organisation account.")
    if st.button("Sign in", type="primary"):
        try:
            st.login()
        except st.errors.StreamlitAuthError as error:
            st.error(
                f"Single sign-on is not configured: {error}\n\n"
                "An administrator adds an [auth] section to .streamlit/secrets.toml on the server."
            )


def sign_out(settings: Settings) -> None:
    # Everything of the session goes, the conversation included: the next person at this browser starts clean.
    st.session_state.clear()
    if settings.auth == "oidc":
        st.logout()
    st.rerun()
