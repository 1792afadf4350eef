"""`assistant eval`: its figures against a computation of our own, runs kept and compared, the regression gate,
access (questions asked as staff never reach an hr document), bad lines, answers, and the audit."""

import json
import shutil
import statistics
from pathlib import Path

import pytest
from conftest import SAMPLES

from assistant import NotPermitted, Settings, User, build_assistant, cli
from assistant.audit import AuditLog
from assistant.evaluation.comparison import parse_threshold
from assistant.evaluation.questions import Question, read_questions
from assistant.evaluation.scoring import cited_numbers, normal
from assistant.users import UserStore

FOLDERS = {"public": "staff", "security": "security", "hr": "hr"}
HR_FILE = "salary-bands-and-reviews.pdf"
ADMIN = User("root", ("admin",))
SAMPLE_LINES = [json.loads(line) for line in (SAMPLES / "questions.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def company(tmp_path_factory, embedder):
    """A data directory holding the sample company as `make run` ingests it, and two portal accounts."""
    data = tmp_path_factory.mktemp("evaluation") / "data"
    settings = Settings(data_dir=data)
    with build_assistant(settings, embedder=embedder) as assistant:
        for folder, group in FOLDERS.items():
            assert assistant.ingest([SAMPLES / folder], groups=[group]).ok
    users = UserStore(settings.users_file)
    users.add("ana", "correct horse battery", ["staff"])
    users.add("hal", "correct horse battery", ["hr", "staff"])
    return data


@pytest.fixture
def data(company, tmp_path, monkeypatch):
    """A copy of the company's data directory, which `assistant` commands and build_assistant open."""
    copy = tmp_path / "data"
    shutil.copytree(company, copy)
    for name in ("ASSISTANT_CONFIG", "ASSISTANT_QDRANT_URL", "ASSISTANT_QDRANT_PATH", "ASSISTANT_GENERATOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(copy))
    return copy


@pytest.fixture
def assistant(data, embedder):
    with build_assistant(Settings(data_dir=data), embedder=embedder) as opened:
        yield opened


@pytest.fixture
def run_cli(data, embedder, capsys):
    def invoke(*argv):
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def write_questions(path, lines) -> str:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return str(path)


def our_figures(assistant, lines, k):
    """The figures computed here, from the assistant's own search, without the evaluation's code."""
    documents = {d.doc_id: d.path for d in assistant.documents(ADMIN)}

    def expected(line, doc_id, path, patterns=None):
        for pattern in patterns or line["expected"]:
            if pattern == doc_id or path.endswith("/" + pattern):
                return True
            if pattern.startswith("*") and path.endswith(pattern[1:]):
                return True
            if "/*." in pattern:
                folder, suffix = pattern.split("/*")
                if path.rsplit("/", 2)[-2] == folder and path.endswith(suffix):
                    return True
        return False

    rows = []
    for line in lines:
        sources = assistant.search(line["question"], User("evaluation", tuple(line["groups"])), k=k)
        marks = [expected(line, s.doc_id, s.path) for s in sources]
        assert all(documents[s.doc_id] == s.path for s in sources)
        rank = marks.index(True) + 1 if True in marks else None
        phrase = " ".join(line["answer"].lower().split()) if "answer" in line else None
        rows.append(
            {
                "hit": float(rank is not None),
                "share": sum(marks) / len(marks) if marks else 0.0,
                "mrr": 1 / rank if rank else 0.0,
                "answer": None
                if phrase is None
                else float(any(phrase in " ".join(s.text.lower().split()) for s in sources)),
                "page": None
                if "page" not in line
                else float(
                    any(
                        expected(line, s.doc_id, s.path, line["expected"][:1]) and s.page == line["page"]
                        for s in sources
                    )
                ),
            }
        )
    figures = {}
    for metric in ("hit", "share", "mrr", "answer", "page"):
        values = [row[metric] for row in rows if row[metric] is not None]
        figures[metric] = (statistics.fmean(values), len(values))
    return figures, rows


def test_the_figures_equal_a_computation_of_our_own(assistant, tmp_path):
    handbook = next(d.doc_id for d in assistant.documents(ADMIN) if d.path.endswith("employee-handbook.md"))
    lines = [
        *SAMPLE_LINES,
        # a document id, a glob, an expectation the search will not meet, and an answer nobody wrote
        {"question": "How long is parental leave for the second parent?", "expected": [handbook], "groups": ["staff"]},
        {"question": "What is the salary band for a senior engineer?", "expected": ["hr/*.pdf"], "groups": ["hr"]},
        {"question": "How many days of annual leave?", "expected": ["product-faq.html"], "groups": ["staff"]},
        {"question": "What is the password policy?", "expected": ["security/*.docx"], "groups": ["staff"]},
        {
            "question": "What is the mileage rate?",
            "expected": ["*.pdf"],
            "answer": "EUR 9.99 per mile",
            "page": 3,
            "groups": ["staff"],
        },
    ]
    file = write_questions(tmp_path / "questions.jsonl", lines)
    run = assistant.evaluate(Path(file).read_bytes(), "questions.jsonl", ADMIN, k=5, answers=False)

    figures, rows = our_figures(assistant, lines, k=5)
    for metric, (value, n) in figures.items():
        assert run.metrics[metric].value == pytest.approx(value), metric
        assert run.metrics[metric].n == n, metric
    assert [result.hit for result in run.results] == [bool(row["hit"]) for row in rows]
    assert run.metrics["hit"].value < 1 and run.metrics["mrr"].value < run.metrics["hit"].value  # not all found first
    assert run.metrics["answered"].n == 0 and run.metrics["cited"].n == 0  # answers were not asked for
    latencies = sorted(result.latency_ms for result in run.results)
    position = 0.95 * (len(latencies) - 1)
    low = int(position)
    p95 = latencies[low] + (latencies[min(low + 1, len(latencies) - 1)] - latencies[low]) * (position - low)
    assert run.latency_ms["p95"] == pytest.approx(p95, abs=0.01)
    assert run.latency_ms["p50"] == pytest.approx(statistics.median(latencies), abs=0.01)
    missed = next(result for result in run.results if result.question == "What is the password policy?")
    assert missed.rank is None and missed.found and not any(passage.expected for passage in missed.found)


def test_the_answers_are_checked_for_the_phrase_and_the_citation(assistant):
    lines = [line for line in SAMPLE_LINES if line["groups"] == ["staff"]][:4]
    run = assistant.evaluate("\n".join(json.dumps(line) for line in lines), "q.jsonl", ADMIN, k=5)
    for line, result in zip(lines, run.results):
        assert result.reply and result.reply.startswith("Extracted from your documents")
        assert result.answered == (normal(line["answer"]) in normal(result.reply))
        cited = [result.found[number - 1] for number in cited_numbers(result.reply)]
        assert result.cited == any(passage.expected for passage in cited)
    assert run.metrics["answered"].n == 4 and run.metrics["cited"].value == 1.0


def test_a_run_as_staff_never_returns_an_hr_document(run_cli, tmp_path):
    file = write_questions(tmp_path / "questions.jsonl", SAMPLE_LINES)
    code, out, err = run_cli("eval", file, "--user", "ana", "--group", "staff", "--json", "--k", "10")
    run = json.loads(out)["run"]
    assert code == 0, err
    found = [passage["path"] for result in run["results"] for passage in result["found"]]
    assert found and all("/samples/public/" in path for path in found)
    assert all(result["asked_as"] == ["staff"] for result in run["results"])
    assert run["reader"] == "ana (staff)" and run["metrics"]["hit"]["value"] < 1

    # --user alone asks as the portal account: hal is in hr, so the salary questions find the hr file.
    code, out, _ = run_cli("eval", file, "--user", "hal", "--json")
    hal = json.loads(out)["run"]
    assert hal["reader"] == "hal (hr, staff)"
    found = {passage["path"].rsplit("/", 1)[1] for result in hal["results"] for passage in result["found"]}
    assert HR_FILE in found and "it-security-policy.docx" not in found
    code, _, err = run_cli("eval", file, "--user", "nobody")
    assert code == 2 and "nobody has no portal account" in err and "--group" in err


def test_compare_and_the_regression_gate_on_two_runs_with_different_settings(run_cli, tmp_path, monkeypatch, capsys):
    file = write_questions(tmp_path / "questions.jsonl", SAMPLE_LINES)
    code, out, _ = run_cli("eval", file, "--json", "--no-answers")
    first = json.loads(out)["run"]
    assert code == 0 and first["metrics"]["hit"]["value"] == 1.0

    # Another search mode, and the questions asked as staff: the hr and security questions are no longer found.
    monkeypatch.setenv("ASSISTANT_SEARCH_MODE", "sparse")
    argv = ["eval", file, "--group", "staff", "--compare", "latest", "--no-answers"]
    code, out, err = run_cli(*argv, "--json", "--fail-below", "hit@5=0.9", "--fail-below", "mrr=0.1")
    report = json.loads(out)
    second, comparison = report["run"], report["comparison"]
    assert code == 1 and "below the gate: hit@5 is 0.625, below 0.9" in err and "MRR" not in err
    assert report["gates"] == {"passed": False, "failures": ["hit@5 is 0.625, below 0.9"]}
    assert comparison["baseline"] == first["id"]
    assert comparison["settings"]["search_mode"] == {"before": "hybrid", "after": "sparse"}
    assert comparison["metrics"]["hit@5"] == {"before": 1.0, "after": 0.625, "change": -0.375}
    # the questions whose outcome changed: computed here from the two runs' results
    before = {r["question"]: r["rank"] for r in first["results"]}
    moved = {r["question"] for r in second["results"] if r["rank"] != before[r["question"]]}
    assert {q["question"] for q in comparison["questions"]} == moved
    worse = {q["question"] for q in comparison["questions"] if q["verdict"] == "worse"}
    assert worse == {line["question"] for line in SAMPLE_LINES if line["groups"] != ["staff"]}

    code, out, err = run_cli(*argv, "--compare", first["id"], "--fail-below", "hit=0.6", "--fail-below", "page@5=0.5")
    assert code == 0, err
    assert f"compared with run {first['id']}" in out and "search_mode: hybrid -> sparse" in out
    code, _, err = run_cli(*argv, "--fail-below", "hit@10=0.5")
    assert code == 1 and "hit@10 was not measured: the run took the top 5" in err
    # against the first run: hit@5 fell by 0.375; share@5 by less than 0.5
    drops = ["--max-drop", "hit@5=0.1", "--max-drop", "share=0.5", "--max-p95-ms", "0.001"]
    code, _, err = run_cli(*argv, "--compare", first["id"], *drops)
    assert code == 1 and "hit@5 fell by 0.375 (1.000 -> 0.625), more than 0.1" in err and "share" not in err
    assert "search p95 is" in err and "above 0.001 ms" in err
    code, _, err = run_cli("eval", file, "--max-drop", "hit=0.1")
    assert code == 2 and "--max-drop needs a run to compare with" in err
    with pytest.raises(SystemExit) as refused:
        run_cli(*argv, "--fail-below", "recall=0.5")
    assert refused.value.code == 2 and "METRIC one of hit, share" in capsys.readouterr().err

    code, out, _ = run_cli("eval", "--list", "--json")
    assert [run["id"] for run in json.loads(out)["runs"]][:2] == [first["id"], second["id"]]
    code, out, _ = run_cli("eval", "--show", second["id"])
    assert code == 0 and "asked as evaluation (staff)" in out
    code, out, _ = run_cli("eval", "--show", "latest", "--json")
    assert code == 0 and json.loads(out)["id"] != first["id"]
    code, _, err = run_cli("eval", "--show", "../../etc/passwd")
    assert code == 2 and "is not a run id" in err


def test_bad_lines_are_named_and_the_rest_are_asked(run_cli, tmp_path):
    good = SAMPLE_LINES[0]
    file = write_questions(
        tmp_path / "questions.jsonl",
        [
            good,
            "{not json",
            {"question": "Where is the canteen?", "groups": ["staff"]},
            {"question": "Sick leave?", "expected_path": "public/employee-handbook.md", "groups": ["staff"]},
            {"question": "Which laptop?", "expected": ["x.md"], "groups": ["staff", "bad group"]},
            {"question": "Per diem?", "expected": ["public/expense-policy.pdf"]},
        ],
    )
    code, out, err = run_cli("eval", file, "--json", "--no-answers")
    run = json.loads(out)["run"]
    assert code == 1 and "5 line(s)" in err
    assert [result["line"] for result in run["results"]] == [1]
    reasons = {problem["line"]: problem["reason"] for problem in run["problems"]}
    assert reasons[2].startswith("not JSON") and "expected: Field required" in reasons[3]
    assert "expected_path: not a field" in reasons[4] and "invalid group name 'bad group'" in reasons[5]
    assert "no groups to ask as" in reasons[6]

    empty = write_questions(tmp_path / "empty.jsonl", ['{"question": "x"}'])
    code, _, err = run_cli("eval", empty)
    assert code == 2 and "empty.jsonl: the file holds no question (line 1: expected: Field required)" in err
    assert run_cli("eval", str(tmp_path / "missing.jsonl"))[0] == 2


def test_only_administrators_evaluate_and_each_run_is_audited(assistant):
    data = "\n".join(json.dumps(line) for line in SAMPLE_LINES[:2])
    with pytest.raises(NotPermitted):
        assistant.evaluate(data, "q.jsonl", User("ana", ("staff",)))
    with pytest.raises(NotPermitted):
        assistant.evaluation_runs(User("ana", ("staff",)))
    run = assistant.evaluate(data, "q.jsonl", ADMIN, reader=User("ana", ("staff",)))
    [entry] = AuditLog(assistant.settings.audit_log).read(events=["evaluate"])
    assert (entry["user"], entry["run"], entry["questions"], entry["asked_as"]) == ("root", run.id, 2, "ana (staff)")
    assert entry["sources"] and all("/samples/public/" in source["path"] for source in entry["sources"])
    kept = assistant.evaluation_run(run.id, ADMIN)
    assert kept == run and kept.snapshot["documents"] == 6 and kept.snapshot["search_mode"] == "hybrid"
    assert (assistant.settings.evaluations_dir / f"{run.id}.json").stat().st_mode & 0o077 == 0


def test_a_model_server_that_is_down_is_noted_once_and_the_search_still_measured(data, embedder):
    settings = Settings(
        data_dir=data, generator="openai", openai_base_url="http://127.0.0.1:9/v1", openai_model="grok-1"
    )
    lines = [line for line in SAMPLE_LINES if line["groups"] == ["staff"]][:3]
    with build_assistant(settings, embedder=embedder) as assistant:
        run = assistant.evaluate("\n".join(json.dumps(line) for line in lines), "q.jsonl", ADMIN)
    assert run.metrics["hit"].n == 3 and run.metrics["answered"].n == 0
    notes = {result.note for result in run.results}
    assert len(notes) == 1 and "the model failed at line 1, so no later answer was checked" in notes.pop()
    assert run.snapshot["generator"] == "openai" and run.snapshot["model"] == "grok-1"


def test_a_local_model_writes_the_replies_that_are_checked(data, embedder):
    from tiny_models import write_model

    model = write_model(data / "tiny-grok")
    settings = Settings(data_dir=data, generator="local", model_path=model, max_new_tokens=4)
    line = next(line for line in SAMPLE_LINES if line["groups"] == ["staff"])
    with build_assistant(settings, embedder=embedder) as assistant:
        run = assistant.evaluate(json.dumps(line), "q.jsonl", ADMIN)
    [result] = run.results
    # A random tiny model writes four tokens of noise: recorded as its reply, and scored as no answer.
    assert result.reply is not None and not result.reply.startswith("Extracted") and result.answered is False
    assert run.snapshot["model"] == str(model)


def test_question_lines_and_gates_read_as_documented():
    questions, problems = read_questions(
        b'{"question": " Leave? ", "expected": "handbook.md", "kind": "prose"}\n\n{"question": "x", "expected": []}',
        max_chars=100,
    )
    [question] = questions
    assert (question.question, question.expected, question.kind, question.line) == (
        "Leave?",
        ("handbook.md",),
        ("prose",),
        1,
    )
    assert [str(problem) for problem in problems] == [
        "line 3: expected: empty; name at least one document (a path glob or a document id)"
    ]
    matching = Question(question="q", expected=["public/*.pdf", "/srv/docs/a.md", "abc123"])
    assert matching.expects("x", "/srv/docs/public/expense-policy.pdf")
    assert not matching.expects("x", "/srv/docs/hr/expense-policy.pdf")
    assert matching.expects("x", "/srv/docs/a.md") and not matching.expects("x", "/other/srv/docs/a.md")
    assert matching.expects("abc123", "/anything.txt")
    assert parse_threshold("hit@5=0.9").k == 5 and parse_threshold(" MRR = .5 ").value == 0.5
    with pytest.raises(ValueError, match="METRIC=VALUE"):
        parse_threshold("hit>0.9")


def test_a_long_run_lists_only_the_questions_to_read():
    from assistant.evaluation import report
    from assistant.evaluation.records import EvaluationRun
    from assistant.evaluation.scoring import Passage, QuestionResult

    def result(line, expected_first):
        found = [
            Passage(doc_id="d", path=f"/docs/{name}.md", score=1.0, expected=name == "a", text="...")
            for name in (("a", "b") if expected_first else ("b", "a"))
        ]
        return QuestionResult(
            line=line, question=f"q{line}", expected=("a.md",), asked_as=("staff",), found=found, latency_ms=1.0
        )

    results = [result(line, expected_first=line != 7) for line in range(1, 61)]
    run = EvaluationRun(
        id="20261204-000000-000-abcd",
        started="",
        seconds=0,
        by="root",
        questions_file="q.jsonl",
        questions_sha256="",
        k=2,
        reader="x",
        answers=False,
        snapshot={},
        results=results,
    )
    table = report.question_table(run)
    assert len(table) == 3 and "q7" in table[1] and "b.md" in table[1] and table[2].startswith("(59 questions")
    assert run.metrics["mrr"].value == pytest.approx((59 + 0.5) / 60)
