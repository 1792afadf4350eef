"""Follow-up questions: the conversation's last turns steer the search and reach the model, and no further."""

from __future__ import annotations

import json
from pathlib import Path

from assistant import Turn, User
from assistant.follow_ups import refers_back, standalone_rewrite
from assistant.service import FOLLOW_UP_TURNS, TURN_ANSWER_CHARS
from model.generators import GeneratorError
from model.prompt import REWRITE_INSTRUCTION, build_prompt

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

    # The recorder's "ok" is no rewrite: the follow-up is searched after the previous question.
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


# --- what a question in a conversation is searched with (assistant/follow_ups.py) ------------------------------------

LEAVE = Turn("How many days of annual leave do employees get?", "27 days of paid annual leave [1].")


def _searched_texts(assistant) -> list[str]:
    searched = []
    search = assistant.searcher.search
    assistant.searcher.search = lambda text, *args, **kwargs: searched.append(text) or search(text, *args, **kwargs)
    return searched


def test_a_change_of_topic_is_searched_on_its_own(make_assistant):
    assistant = make_assistant()
    assistant.ingest([SAMPLES / "public"], groups=["staff"])
    searched = _searched_texts(assistant)
    answer = assistant.ask("What is the mileage rate when I use my own car for work?", ANA, history=[LEAVE])
    assert searched == ["What is the mileage rate when I use my own car for work?"]
    assert all(source.path.endswith("expense-policy.pdf") for source in answer.sources[:1])
    assert answer.search_question is None


def test_a_question_that_points_back_is_searched_with_the_previous_one(make_assistant):
    assistant = make_assistant()
    assistant.ingest([SAMPLES / "public"], groups=["staff"])
    searched = _searched_texts(assistant)
    for follow_up in ("And part-time employees?", "Can they carry any over?", "Why?"):
        assistant.ask(follow_up, ANA, history=[LEAVE])
        assert searched[-1] == f"{LEAVE.question}\n{follow_up}"


def test_a_question_whose_own_search_finds_no_answer_is_searched_with_the_previous_one(make_assistant, monkeypatch):
    assistant = make_assistant()
    assistant.ingest([SAMPLES / "public"], groups=["staff"])
    searched = _searched_texts(assistant)
    question = "How many are reserved for the winter shutdown?"
    # No passage reaches the embedder's answer similarity: the question is searched again, with the conversation.
    monkeypatch.setattr(assistant.embedder, "answer_similarity", 1.01)
    assistant.ask(question, ANA, history=[LEAVE])
    assert searched == [question, f"{LEAVE.question}\n{question}"]
    # Where one does, the question's own search stands.
    monkeypatch.setattr(assistant.embedder, "answer_similarity", -1.0)
    searched.clear()
    assistant.ask(question, ANA, history=[LEAVE])
    assert searched == [question]


class RewritingGenerator(RecordingGenerator):
    """Rewrites follow-ups as a model would (or fails to), and answers "ok"."""

    def __init__(self, rewrite):
        super().__init__()
        self.rewrite = rewrite

    def stream(self, prompt):
        self.prompts.append(prompt)
        if prompt.instruction != REWRITE_INSTRUCTION:
            yield "ok"
        elif isinstance(self.rewrite, Exception):
            raise self.rewrite
        else:
            yield self.rewrite


def test_with_a_model_a_follow_up_is_searched_as_its_rewrite_which_the_answer_shows(make_assistant, tmp_path):
    assistant = make_assistant(generator="local", model_path=tmp_path)
    assistant.ingest([SAMPLES / "public"], groups=["staff"])
    rewrite = "How many days of annual leave do part-time employees get?"
    generator = assistant._generator = RewritingGenerator(f'Standalone question: "{rewrite}"\n')
    searched = _searched_texts(assistant)

    answer = assistant.ask("And part-time employees?", ANA, history=[LEAVE])

    assert searched == [rewrite] and answer.search_question == rewrite
    asked = generator.prompts[0]
    assert asked.instruction == REWRITE_INSTRUCTION and not asked.passages
    assert asked.history == (LEAVE,) and "Sources:" not in asked.user_text()  # the conversation only
    assert answer.to_dict()["search_question"] == rewrite
    last = json.loads(assistant.audit.path.read_text().splitlines()[-1])
    assert last["event"] == "ask" and last["search_question"] == rewrite


def test_a_rewrite_that_is_no_question_or_a_model_that_fails_falls_back_to_the_previous_question(
    make_assistant, tmp_path
):
    assistant = make_assistant(generator="local", model_path=tmp_path)
    assistant.ingest([SAMPLES / "public"], groups=["staff"])
    searched = _searched_texts(assistant)
    for reply in ("Sure.", "How many of them do they get?", GeneratorError("the server went away")):
        assistant._generator = RewritingGenerator(reply)
        answer = assistant.ask("And part-time employees?", ANA, history=[LEAVE])
        assert searched[-1] == f"{LEAVE.question}\nAnd part-time employees?"
        assert answer.search_question is None and answer.text == "ok"


def test_what_ties_a_question_to_the_conversation():
    assert all(
        refers_back(q)
        for q in ("And for contractors?", "What about Cuba?", "Is it paid?", "Does this apply to interns?", "Why?")
    )
    assert not any(
        refers_back(q) for q in ("What should I do if I lose my laptop?", "Who approves claims that exceed EUR 2,000?")
    )
    assert standalone_rewrite("Question: How long is the warranty on the X4?\nIt is 24 months.", "Is it long?") == (
        "How long is the warranty on the X4?"
    )
    assert standalone_rewrite("", "Is it long?") is None
    assert standalone_rewrite("Is it long?", "Is it long?") is None
    assert standalone_rewrite("x " * 200, "Is it long?") is None
