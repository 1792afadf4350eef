"""Kept conversations: each user's own, withheld where their groups no longer cover an answer, and forgotten after the
retention."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from assistant import InvalidRequest, NotFound, User

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
HAL, ANA = User("hal", ("staff", "hr")), User("ana", ("staff",))
SALARY = "What is the salary band for a senior engineer?"


@pytest.fixture
def assistant(make_assistant):
    assistant = make_assistant(conversation_retention_days=30)
    assistant.ingest([SAMPLES / "public"], groups=["staff"])
    assistant.ingest([SAMPLES / "hr"], groups=["hr"])
    return assistant


def test_a_conversation_is_its_owners_alone(assistant):
    answer = assistant.ask(SALARY, HAL)
    kept = assistant.keep_turn(HAL, None, SALARY, answer)
    kept = assistant.keep_turn(HAL, kept.id, "And for a lead?", assistant.ask("And for a lead?", HAL))
    assert [c.title for c in assistant.conversations(HAL)] == [SALARY]
    resumed = assistant.conversation(HAL, kept.id)
    assert [t.question for t in resumed.turns] == [SALARY, "And for a lead?"]
    assert resumed.turns[0].answer["sources"] == [s.to_dict() for s in answer.sources]

    assert assistant.conversations(ANA) == []
    for attempt in (
        lambda: assistant.conversation(ANA, kept.id),
        lambda: assistant.keep_turn(ANA, kept.id, "x?", answer),
        lambda: assistant.rename_conversation(ANA, kept.id, "mine now"),
        lambda: assistant.delete_conversation(ANA, kept.id),
        lambda: assistant.conversation(HAL, "../../users"),
    ):
        with pytest.raises(NotFound):
            attempt()
    assert assistant.conversation(HAL, kept.id).title == SALARY

    files = list(Path(assistant.settings.conversations_dir).rglob("*.json"))
    assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700
    with pytest.raises(InvalidRequest, match="1 to 80 characters"):
        assistant.rename_conversation(HAL, kept.id, "  ")
    assert assistant.rename_conversation(HAL, kept.id, " Senior  bands ").title == "Senior bands"
    assistant.delete_conversation(HAL, kept.id)
    assert assistant.conversations(HAL) == []


def test_an_answer_from_a_document_no_longer_readable_is_withheld(assistant):
    kept = assistant.keep_turn(HAL, None, SALARY, assistant.ask(SALARY, HAL))
    moved = User("hal", ("staff",))  # hal left hr, and went on with the conversation
    leave = "How many days of paid annual leave does a full-time employee get?"
    kept = assistant.keep_turn(moved, kept.id, leave, assistant.ask(leave, moved))
    first, second = assistant.conversation(moved, kept.id).turns
    assert first.answer["sources"] == [] and "no longer shown" in first.answer["answer"]
    assert "27 days" in second.answer["answer"] and second.answer["sources"]
    # Still whole for him as he was: nothing was deleted, only withheld.
    assert assistant.conversation(HAL, kept.id).turns[0].answer["sources"]


def test_a_conversation_untouched_past_the_retention_is_deleted(assistant):
    kept = assistant.keep_turn(ANA, None, "Hello there, annual leave?", assistant.ask("annual leave days", ANA))
    (file,) = Path(assistant.settings.conversations_dir).rglob("*.json")
    data = json.loads(file.read_text())
    data["updated"] = (datetime.now(UTC) - timedelta(days=31)).isoformat(timespec="seconds")
    file.write_text(json.dumps(data))
    os.chmod(file, 0o600)
    assert assistant.conversations(ANA) == [] and not file.exists()
    with pytest.raises(NotFound):
        assistant.conversation(ANA, kept.id)
