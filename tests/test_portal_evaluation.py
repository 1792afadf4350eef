"""The portal's Evaluation page (administrators), driven through AppTest: a run started on an uploaded question file,
the runs with their figures over time, and each question's drill-down, with access holding for the reader chosen."""

import json
import time

import pandas as pd
import pytest
from conftest import SAMPLES
from test_portal import HR_FILE, button, corpus, plain, portal_over, sign_in, table, texts  # noqa: F401 - corpus: a fixture

from assistant.evaluation.comparison import compare
from assistant.evaluation.records import RunStore
from ui.components import short_time
from ui.safe_text import md

PAGE = "views/evaluation.py"
LINES = [
    json.loads(line)
    for line in (SAMPLES / "questions.jsonl").read_text().splitlines()
    if line.strip() and not json.loads(line)["expected"][0].startswith("security/")  # not in the portal's corpus
]
QUESTIONS = ("questions.jsonl", "".join(json.dumps(line) + "\n" for line in LINES).encode(), "application/jsonl")


@pytest.fixture
def data(corpus, embedder, tmp_path, monkeypatch):  # noqa: F811 - the portal tests' corpus, copied per test
    yield from portal_over(corpus, tmp_path, monkeypatch)


def start_run(at, ask_as=None, value=None, k=None):
    at.file_uploader(key="evaluation:file").set_value(QUESTIONS)
    if ask_as is not None:
        at.radio[0].set_value(ask_as)
        at.run()
        if ask_as == "groups":
            at.text_input(key="evaluation:groups").input(value)
        else:
            at.selectbox[0].select(value)
    if k is not None:
        at.number_input[0].set_value(k)
    at.run()
    button(at, "Run evaluation").click().run()
    return finished(at)


def finished(at, timeout_s=120):
    """The page once the run started on it has ended: it runs in a thread, and the page is drawn again until then."""
    deadline = time.monotonic() + timeout_s
    while at.get("progress"):
        assert time.monotonic() < deadline, "the evaluation did not finish"
        time.sleep(0.2)
        at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def kept_runs(data):
    # Read from the files: the portal's Assistant holds the embedded store, so no second one may open it.
    return RunStore(data / "evaluations").runs()


def test_an_admin_runs_an_uploaded_question_file_and_sees_each_question(data):
    at = sign_in("root").switch_page(PAGE).run()
    assert not at.exception and "No run yet" in texts(at)
    assert button(at, "Run evaluation").disabled  # no file yet

    at.file_uploader(key="evaluation:file").set_value(QUESTIONS).run()
    button(at, "Run evaluation").click().run()
    assert at.get("progress")  # how far it has got, while it runs
    at = finished(at)
    [run] = kept_runs(data)
    assert at.success[0].value.startswith(f"Run {run.id} kept: {len(LINES)} questions")
    [row] = table(at, 0)
    assert (row["run"], row["questions"], row["asked as"]) == (run.id, len(LINES), "each question's groups")
    assert row["hit@5"] == pytest.approx(run.figure("hit")) == 1.0
    assert row["started"] == short_time(run.started)
    questions = table(at, -1)
    assert [q["question"] for q in questions] == [line["question"] for line in LINES]
    assert all(q["rank"] == 1 and q["hit"] and q["found instead"] == "" for q in questions)
    assert {m.label for m in at.metric} >= {"hit@5", "MRR@5", "answered", "cited"}


def test_two_runs_chart_each_figure_and_a_run_as_staff_shows_what_was_found_instead(data):
    at = start_run(sign_in("root").switch_page(PAGE).run())
    at = start_run(at, ask_as="groups", value="staff", k=3)
    first, second = kept_runs(data)
    assert second.reader == "evaluation (staff)" and second.k == 3
    assert at.get("vega_lite_chart")  # the figures over the two runs
    assert [row["run"] for row in table(at, 0)] == [second.id, first.id]  # newest first

    # The new run is the one shown: the hr questions miss, and what was found instead is public only.
    questions = {q["question"]: q for q in table(at, -1)}
    hr = [line["question"] for line in LINES if line["groups"] == ["hr"]]
    assert hr and all(pd.isna(questions[q]["rank"]) and questions[q]["found instead"] for q in hr)
    assert not any(questions[q]["hit"] for q in hr)
    assert not any(HR_FILE in q["found instead"] for q in questions.values())
    changed = compare(second, first).questions
    assert f"Against run {first.id}: {len(changed)} question(s) changed" in texts(at)
    [moved] = [frame.value for frame in at.dataframe if "verdict" in frame.value.columns]
    assert set(moved["question"]) == {q.question for q in changed} >= set(hr)

    # Drill-down: a missed question's passages, none of them from the hr file.
    at.selectbox(key=f"evaluation:question:{second.id}").select(
        next(option for option in at.selectbox(key=f"evaluation:question:{second.id}").options if hr[0] in option)
    ).run()
    labels = [expander.label for expander in at.expander if "not expected" in expander.label]
    assert len(labels) == 3 and not any(HR_FILE in label for label in labels)


def test_the_uploaded_file_name_is_shown_as_its_characters(data):
    # Progress text and captions are Markdown: a name holding an image would be fetched by the admin's browser.
    name = "![beacon](http://127.0.0.1:9/b.png) **q**.jsonl"
    at = sign_in("root").switch_page(PAGE).run()
    at.file_uploader(key="evaluation:file").set_value((name, QUESTIONS[1], "application/jsonl")).run()
    button(at, "Run evaluation").click().run()
    # The run may be past its first question, or not yet counting them, when the page is drawn: only the name is fixed.
    shown = at.get("progress")
    assert shown and all(p.proto.text.startswith(f"{md(name)}: ") for p in shown)
    at = finished(at)
    [run] = kept_runs(data)
    assert run.questions_file == name
    assert f"{md(name)}, top 5" in " ".join(c.value for c in at.caption)


def test_a_file_with_no_question_is_refused_and_the_kept_runs_stay(data):
    at = sign_in("root").switch_page(PAGE).run()
    at.file_uploader(key="evaluation:file").set_value(("bad.jsonl", b'{"question": "x"}\n', "application/jsonl")).run()
    button(at, "Run evaluation").click().run()
    while at.get("progress"):
        time.sleep(0.2)
        at.run()
    assert not at.exception
    assert "bad.jsonl: the file holds no question" in " ".join(plain(e.value) for e in at.error)
    assert not kept_runs(data)


def test_the_page_is_for_administrators_only(data):
    at = sign_in("ana")
    with pytest.raises(ValueError):
        at.switch_page(PAGE)
