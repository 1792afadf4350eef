"""Follow-up questions: the conversation's last turns steer the search and reach the model, and no further."""

from __future__ import annotations

from pathlib import Path

from assistant import Turn, User
from assistant.service import FOLLOW_UP_TURNS, TURN_ANSWER_CHARS
from model.prompt import build_prompt

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
ANA = User("ana", ("staff",))


class RecordingGenerator:
    """Answers "ok" and keeps the prompts it was given."""

    name, adapter = "recorder", None

    def __init__(self):
        self.prompts = []

    def stream(self, prompt):
        self.prompts.append(prompt)
        yield "ok"


def test_a_follow_up_searches_with_the_previous_question_and_the_model_sees_the_turns(make_assistant, tmp_path):
    assistant = make_assistant(generator="local", model_path=tmp_path)  # the recorder stands in for the model
    assistant.ingest([SAMPLES / "public"], groups=["staff"])
    generator = assistant._generator = RecordingGenerator()
    searched = []
    search = assistant.searcher.search
    assistant.searcher.search = lambda text, *args, **kwargs: searched.append(text) or search(text, *args, **kwargs)

    first = assistant.ask("How many days of annual leave do employees get?", ANA)
    history = [Turn("What is the mileage rate?", "45p a mile."), Turn(first.sources[0].text[:40], "x" * 5000)]
    history.insert(0, Turn("An old topic nobody asks about any more?", "Long ago."))
    history.insert(0, Turn("An even older one?", "Older."))
    follow_up = assistant.ask("And can they carry any over?", ANA, history=history)

    assert searched[-1] == f"{history[-1].question}\nAnd can they carry any over?"
    prompt = generator.prompts[-1]
    assert (
        len(prompt.history) == FOLLOW_UP_TURNS
        and prompt.history[0].question == "An old topic nobody asks about any more?"
    )
    assert len(prompt.history[-1].answer) <= TURN_ANSWER_CHARS + 4, "a long earlier answer is cut"
    roles = [message["role"] for message in prompt.messages()]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant", "user"]
    assert follow_up.sources and "Earlier in this conversation:" in prompt.plain()


def test_without_history_the_prompt_is_unchanged():
    prompt = build_prompt("Why?", [])
    assert [m["role"] for m in prompt.messages()] == ["system", "user"]
    assert "Earlier" not in prompt.plain()
