"""What every page shares: the one Assistant of the process, the signed-in user, errors, sources, small formats."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from assistant import Assistant, Settings, Source, User, build_assistant
from ui.safe_text import md, show_text

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
    return build_assistant(get_settings())


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
    "EmbedderMismatch": "Search is paused until an administrator re-embeds the documents (`assistant reembed`).",
    "ModelLoadError": "An administrator needs to check the model settings (ASSISTANT_MODEL_PATH, ASSISTANT_ADAPTER).",
    "GeneratorError": "The answering model did not respond: try again in a minute, or tell an administrator.",
    "InvalidGroupName": "",
    "DocumentNotFound": "Reload the page: someone may have removed it already.",
    "PermissionError": "",
    "AuditError": "",  # nothing is done unrecorded: its message says what to free or fix
}


def _safe_for_anyone(error: BaseException) -> bool:
    """Errors whose str() is written for whoever asked: no server path, no other group's name, no internals."""
    from assistant.audit import AuditError
    from assistant.errors import AssistantError
    from retrieval import InvalidGroupName

    # Not PermissionError as such: the operating system's ("Permission denied: '/srv/...'") names server paths; the
    # assistant's own refusals are NotPermitted, an AssistantError.
    return isinstance(error, AssistantError | AuditError | InvalidGroupName)


def show_error(error: BaseException) -> None:
    """What went wrong, as much of it as this user may see, and what to do; tracebacks go to the server log only.

    Anyone sees the message of the assistant's own refusals (written to be safe for any caller). Anything else may
    name server paths, hosts or other groups' documents: a non-administrator gets a short incident id to pass on,
    and the log holds the whole error under that id. Administrators see the detail.
    """
    user = current_user()
    admin = user is not None and user.is_admin
    name = type(error).__name__
    expected = _safe_for_anyone(error)
    incident = None if expected else secrets.token_hex(4)
    if expected:
        log.warning("%s: %s", name, getattr(error, "detail", error))
    else:
        log.error("incident %s: unexpected %s in the portal", incident, name, exc_info=error)
    if expected or admin:
        message = str(getattr(error, "detail", None) or error) if admin else str(error)
        hint = _HINTS.get(name, "")
        if incident:
            hint = f"{hint} (incident {incident}: the server's log has the traceback.)".strip()
        # The message may quote a file name or a question: shown as its characters, never as Markdown.
        st.error("\n\n".join(part for part in (md(message) or md(name), hint) if part))
    else:
        st.error(f"Something went wrong. Tell an administrator, quoting incident {incident}.")


@st.cache_data(ttl=30, show_spinner=False)
def _health(_assistant: Assistant):
    # A check may reach a model server: at most one every 30 s for the whole process, not one per click.
    return _assistant.health()


def show_health(assistant: Assistant, user: User | None = None) -> None:
    """One line in the sidebar when all is well; for each part that is down, which one, and what to do.

    Only administrators see why (a path, a host, an error): for anyone else that would be a map of the server.
    """
    health = None
    with failures_shown(stop=False):
        health = _health(assistant)
    if health is None:
        return
    if health.ok:
        st.caption(":green[●] Document store and answering model are ready.")
        return
    admin = user is not None and user.is_admin
    for ok, part, message in (
        (health.store_ok, "Document store", health.store_message),
        (health.generator_ok, "Answering model", health.generator_message),
    ):
        if ok:
            continue
        if admin:
            st.warning(f"{part}: {md(message)}", icon=":material/error:")
        else:
            st.warning(f"{part} is not available. Tell an administrator.", icon=":material/error:")


def show_sources(sources: list[Source], assistant: Assistant, user: User, key: str) -> None:
    """The passages an answer came from, each openable at its place in the original and downloadable; `key` tells
    this list's widgets from other answers'."""
    if not sources:
        st.caption("No document you may read matched this question.")
        return
    st.caption("Sources")
    for number, source in enumerate(sources, 1):
        # A file name and a heading come from the document: in a label they would be Markdown, so they are escaped.
        where = f" — {source.location}" if source.location else ""
        with st.expander(md(f"[{number}] {Path(source.path).name}{where}")):
            document = f"{source.title} ({source.period})" if source.title and source.period else source.title
            st.caption(
                " · ".join(md(part) for part in (document, source.path) if part) + f" · relevance {source.score:.2f}"
            )
            show_passage(source)
            show_original(source, assistant, user, f"{key}:{number}")


def show_passage(source: Source) -> None:
    if (table := source.grid()) is not None:
        show_table(*table)
    else:
        # A passage is quoted as written: never rendered as Markdown or HTML of the page's own.
        show_text(source.text)


def show_original(source: Source, assistant: Assistant, user: User, key: str) -> None:
    """The page the passage is on, marked (a PDF), or the passage in its section; and the file itself. Both go
    through the Assistant, which checks again that the user may read the document and records the opening."""
    on_page = source.page is not None and Path(source.path).suffix.lower() == ".pdf"
    shown = f"open:{key}"
    open_column, download_column = st.columns(2)
    if open_column.button("Show the page" if on_page else "Show in its section", key=f"{shown}:button"):
        if shown in st.session_state:
            del st.session_state[shown]
        else:
            # Fetched once, when asked for, and kept with the answer: one opening, one audit record.
            with failures_shown(stop=False):
                st.session_state[shown] = (
                    assistant.page_image(source.doc_id, source.page, user, chunk=source.chunk)
                    if on_page
                    else assistant.passage_in_context(source.doc_id, source.chunk, user)
                )
    # Read when clicked, not when drawn: every download is a real one, and is recorded as such.
    download_column.download_button(
        "Download the original",
        data=lambda: assistant.original(source.doc_id, user).data,
        file_name=Path(source.path).name,
        key=f"{key}:download",
        on_click="ignore",
    )
    opened = st.session_state.get(shown)
    if isinstance(opened, bytes):
        # An image the portal drew from the page: nothing of the PDF itself reaches the browser.
        st.image(opened)
    elif opened:
        for passage in opened:
            if passage.chunk == source.chunk:
                st.caption("The cited passage:")
            show_passage(passage)


def show_table(header: list[str], rows: list[list[str]]) -> None:
    """A table passage as a grid. st.dataframe draws cells on a canvas as plain text, so a cell's Markdown or HTML
    is never rendered; columns are named uniquely, as a frame needs."""
    names: list[str] = []
    for number, name in enumerate(header, 1):
        name = name or f"column {number}"
        names.append(name if name not in names else f"{name} ({number})")
    width = len(names)
    cells = [(row + [""] * width)[:width] for row in rows]
    st.dataframe(pd.DataFrame(cells, columns=names), hide_index=True)


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
