import json
import subprocess
import sys

import pytest

from assistant import cli


@pytest.fixture
def run(embedder, tmp_path, monkeypatch, capsys):
    """Runs `assistant ...` in-process on an embedded store under tmp_path, reusing the loaded embedder."""
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path / "data"))
    # `embedder` is the process\'s shared one: the Assistant built here uses it (assistant.assembly).

    def invoke(*argv):
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "leave.md").write_text("# Leave\n\n## Annual leave\n\nEvery employee gets 27 days of annual leave.\n")
    (folder / "secret.md").write_text("# Incident\n\nThe contractor account was phished on 3 March at 09:40.\n")
    return folder


def test_ingest_ask_search_documents_delete_as_json(run, docs):
    assert run("ingest", str(docs / "leave.md"), "--group", "staff", "--json")[0] == 0
    code, out, _ = run("ingest", str(docs / "secret.md"), "--group", "security", "--json")
    assert code == 0 and json.loads(out)["added"] == [str((docs / "secret.md").resolve())]

    code, out, _ = run("ask", "How many days of annual leave?", "--user", "ana", "--group", "staff", "--json")
    answer = json.loads(out)
    assert code == 0 and set(answer) == {"answer", "sources", "model", "timings"}
    assert "27 days of annual leave. [1]" in answer["answer"] and answer["model"] == "extractive"
    assert {s["path"] for s in answer["sources"]} == {str((docs / "leave.md").resolve())}
    source = answer["sources"][0]
    assert set(source) == {"doc_id", "path", "page", "chunk", "score", "text", "heading", "title", "period", "table"}
    assert source["title"] == "Leave" and source["table"] is False
    assert set(answer["timings"]) == {"retrieve_ms", "generate_ms", "total_ms"}

    code, out, _ = run("search", "phished contractor", "--group", "security", "--json", "--k", "1")
    assert code == 0 and "phished" in json.loads(out)["sources"][0]["text"]
    code, out, _ = run("search", "phished contractor", "--group", "staff", "--json")
    assert "phished" not in out

    code, out, _ = run("documents", "--json")
    assert code == 0 and len(json.loads(out)["documents"]) == 2
    code, out, _ = run("documents", "--group", "staff", "--json")
    assert [d["path"] for d in json.loads(out)["documents"]] == [str((docs / "leave.md").resolve())]

    assert run("delete", str(docs / "secret.md"))[0] == 0
    code, _, err = run("delete", str(docs / "secret.md"))
    assert code == 2 and "no document" in err


def test_plain_output_streams_the_answer_then_lists_sources(run, docs):
    run("ingest", str(docs), "--group", "staff")
    code, out, _ = run("ask", "annual leave days", "--group", "staff")
    assert code == 0
    assert out.index("27 days") < out.index("Sources:") < out.index("[1] " + str((docs / "leave.md").resolve()))
    assert "Leave > Annual leave" in out


def test_strict_turns_any_failure_into_a_non_zero_exit(run, docs):
    (docs / "broken.pdf").write_bytes(b"not a pdf at all")
    code, _, err = run("ingest", str(docs), "--group", "staff")
    assert code == 0 and "broken.pdf" in err and "PDF" in err
    code, _, _ = run("ingest", str(docs), "--group", "staff", "--strict")
    assert code == 1


def test_bad_group_is_a_clear_error_not_a_traceback(run, docs):
    code, _, err = run("ingest", str(docs), "--group", "hr*")
    assert code == 2 and "invalid group name 'hr*'" in err


def test_a_second_process_on_the_embedded_store_gets_a_clear_error(embedder, docs, tmp_path):
    from assistant import Settings, build_assistant

    with build_assistant(Settings(data_dir=tmp_path / "data"), embedder=embedder) as holding:
        holding.ingest([docs], groups=["staff"])
        result = subprocess.run(
            [sys.executable, "-m", "assistant.cli", "documents"],
            env={"ASSISTANT_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert "open in another process" in result.stderr and "Traceback" not in result.stderr


def test_an_operators_relative_path_with_dots_is_taken_as_the_shell_means_it(run, docs, monkeypatch):
    (docs / "sub").mkdir()
    monkeypatch.chdir(docs / "sub")
    code, out, _ = run("ingest", "../leave.md", "--group", "staff", "--json")
    assert code == 0 and json.loads(out)["added"] == [str((docs / "leave.md").resolve())]
