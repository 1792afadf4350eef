"""What every page shares: the one Assistant of the process, the signed-in user, errors, sources, small formats."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import streamlit as st

from assistant import Assistant, Settings, Source, User

log = logging.getLogger("ui")

USER_KEY = "user"


@st.cache_resource(show_spinner=False)
def get_settings() -> Settings:
    # Read once per process, like the Assistant built from it: the portal and its Assistant never disagree.
    return Settings()


@st.cache_resource(
    show_spinner="Loading the embedding model and opening the document store...", on_release=Assistant.close
)
def get_assistant() -> Assistant:
    # One per process: the embedded store admits a single client, and the models are loaded once for all sessions.
    return Assistant(get_settings())


def current_user() -> User | None:
    return st.session_state.get(USER_KEY)


def require_user() -> User:
    """The signed-in user; a page reached without one (it should not be) shows nothing."""
    user = current_user()
    if user is None:
        st.stop()
    return user


def require_admin() -> User:
    user = require_user()
    if not user.is_admin:
        # Navigation already hides admin pages; this is the second lock on the same door.
        st.error("This page is for administrators.")
        st.stop()
    return user


def assistant_or_stop() -> Assistant:
    with failures_shown():
        return get_assistant()


@contextmanager
def failures_shown(stop: bool = True) -> Iterator[None]:
    """The portal's one error boundary: whatever fails inside becomes a message that says what to do.

    With `stop`, the rest of the page is not drawn; without, it goes on after the block (which did not finish).
    st.rerun() and st.stop() pass through: they are BaseExceptions, not failures.
    """
    try:
        yield
    except Exception as error:  # noqa: BLE001 - this is the boundary: no failure may reach the browser as a traceback
        show_error(error)
        if stop:
            st.stop()


# Known failures, and what the person in front of the portal can do about each. Matched by class name so this
# module does not import the model and loader packages just to name their exceptions.
_HINTS = {
    "StoreLockedError": "",  # its message already says what to do
    "ModelNotFound": "An administrator needs to check the embedding model setting (ASSISTANT_EMBEDDING_MODEL).",
    "ModelLoadError": "An administrator needs to check the model settings (ASSISTANT_MODEL_PATH, ASSISTANT_ADAPTER).",
    "GeneratorError": "The answering model did not respond: try again in a minute, or tell an administrator.",
    "InvalidGroupName": "",
    "DocumentNotFound": "Reload the page: someone may have removed it already.",
    "PermissionError": "",
    "AuditError": "",  # nothing is done unrecorded: its message says what to free or fix
}


def show_error(error: BaseException) -> None:
    """The message and what to do about it; the traceback goes to the server log, never to the browser."""
    name = type(error).__name__
    if name in _HINTS or isinstance(error, ValueError):
        hint = _HINTS.get(name, "")
        log.warning("%s: %s", name, error)
    else:
        hint = "If this keeps happening, tell an administrator: the details are in the portal's log."
        log.exception("unexpected error in the portal")
    st.error(f"{error}\n\n{hint}".strip() if str(error) else hint or name)


@st.cache_data(ttl=30, show_spinner=False)
def _health(_assistant: Assistant):
    # A check may reach a model server: at most one every 30 s for the whole process, not one per click.
    return _assistant.health()


def show_health(assistant: Assistant) -> None:
    """One line in the sidebar when all is well; for each part that is down, what is wrong and what to do."""
    health = None
    with failures_shown(stop=False):
        health = _health(assistant)
    if health is None:
        return
    if health.ok:
        st.caption(":green[●] Document store and answering model are ready.")
        return
    if not health.store_ok:
        st.warning(f"Document store: {health.store_message}", icon=":material/error:")
    if not health.generator_ok:
        st.warning(f"Answering model: {health.generator_message}", icon=":material/error:")


def show_sources(sources: list[Source]) -> None:
    if not sources:
        st.caption("No document you may read matched this question.")
        return
    st.caption("Sources")
    for number, source in enumerate(sources, 1):
        where = f" — {source.location}" if source.location else ""
        with st.expander(f"[{number}] {Path(source.path).name}{where}"):
            st.caption(f"{source.path} · relevance {source.score:.2f}")
            # Plain text: a passage is quoted as written, not rendered as the page's own Markdown.
            st.text(source.text)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def short_time(iso: str | None) -> str:
    """'2026-03-04 09:40' in the server's time zone from an ISO timestamp; anything unparsable as it was."""
    if not iso:
        return ""
    try:
        return datetime.fromisoformat(iso).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso
