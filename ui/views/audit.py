"""Audit (administrators): who asked what and which documents they were shown, who changed which, newest first."""

from datetime import date, datetime, time, timedelta
from pathlib import Path

import streamlit as st

from ui.components import assistant_or_stop, failures_shown, require_admin, short_time

EVERYONE = "everyone"
DAYS_SHOWN = 30


def documents(entry: dict) -> str:
    """The documents an answer showed (ask), or those added or removed (ingest, delete)."""
    names = []
    for source in entry.get("sources") or entry.get("paths") or []:
        path = source.get("path") if isinstance(source, dict) else source
        if path and Path(path).name not in names:
            names.append(Path(path).name)
    return ", ".join(names)


def row(entry: dict) -> dict:
    return {
        "time": short_time(entry.get("time")),
        "user": entry.get("user", ""),
        "event": entry.get("event", ""),
        # A log set to hash what people typed holds a keyed hash: shown shortened, for matching rows by eye.
        "question": entry.get("question")
        or (f"(hashed) {entry['question_hmac'][:12]}" if "question_hmac" in entry else ""),
        "documents": documents(entry),
    }


require_admin()
assistant = assistant_or_stop()
st.title("Audit log")

today = date.today()
span, who, kinds = st.columns([2, 1, 1])
dates = span.date_input("Dates", (today - timedelta(days=DAYS_SHOWN), today), max_value=today)
# While a range is being picked the widget holds only its first day: read up to today until the second is chosen.
first, last = (tuple(dates) + (today,))[:2] if isinstance(dates, tuple | list) else (dates, today)
since, until = datetime.combine(first, time.min).astimezone(), datetime.combine(last, time.max).astimezone()

with failures_shown():
    in_range = assistant.audit.read(since=since, until=until)
    user = who.selectbox("User", [EVERYONE, *sorted({e["user"] for e in in_range if e.get("user")})])
    chosen = kinds.multiselect("Events", sorted({e["event"] for e in in_range if e.get("event")}))
    entries = assistant.audit.read(
        user=None if user == EVERYONE else user, since=since, until=until, events=chosen or None
    )

st.caption(f"{len(entries)} entries")
st.dataframe(
    [row(e) for e in entries], hide_index=True, column_config={"question": st.column_config.TextColumn(width="large")}
)
