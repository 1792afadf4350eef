"""The Streamlit portal, driven through streamlit.testing's AppTest: sign-in, chat, documents, admin pages.

Each test gets its own copy of one store holding the samples (public -> staff, hr -> hr) and of the users file,
and a fresh Assistant: the portal keeps one per process in st.cache_resource, cleared (and closed) between tests.
"""

import html
import json
import math
import re
import shutil
import stat
from datetime import date
from pathlib import Path

import pytest
import streamlit as st
from conftest import ROOT, SAMPLES
from streamlit.testing.v1 import AppTest

from assistant import Settings, build_assistant
from assistant.audit import AuditLog
from assistant.users import UserStore

APP = str(ROOT / "ui" / "app.py")
PASSWORD = "correct horse battery"
LEAVE = "How many days of paid annual leave does a full-time employee get per year?"
SALARY = "How big is the salary increase that normally comes with a promotion?"
HR_FILE = "salary-bands-and-reviews.pdf"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, embedder):
    data = tmp_path_factory.mktemp("portal") / "data"
    settings = Settings(data_dir=data)
    with build_assistant(settings, embedder=embedder) as assistant:
        assistant.ingest([SAMPLES / "public"], groups=["staff"])
        assistant.ingest([SAMPLES / "hr"], groups=["hr"])
    users = UserStore(settings.users_file)
    users.add("ana", PASSWORD, ["staff"])
    users.add("hal", PASSWORD, ["hr", "staff"])
    users.add("root", PASSWORD, ["admin"])
    return data


def portal_over(corpus: Path, tmp_path: Path, monkeypatch):
    """A copy of `corpus` (a data directory) that the next portal opens; yields it, and closes that portal after."""
    data = tmp_path / "data"
    shutil.copytree(corpus, data)
    for name in ("ASSISTANT_CONFIG", "ASSISTANT_QDRANT_URL", "ASSISTANT_QDRANT_PATH", "ASSISTANT_GENERATOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(data))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield data
    st.cache_resource.clear()  # closes the test's Assistant, releasing its embedded store


@pytest.fixture
def data(corpus, embedder, tmp_path, monkeypatch):
    # `embedder` is the process's shared one: the portal's Assistant uses it (assistant.assembly).
    yield from portal_over(corpus, tmp_path, monkeypatch)


def open_portal() -> AppTest:
    return AppTest.from_file(APP, default_timeout=60).run()


def sign_in(name: str, password: str = PASSWORD) -> AppTest:
    at = open_portal()
    at.text_input(key="sign-in:name").input(name)
    at.text_input(key="sign-in:password").input(password)
    at.button(key="sign-in:submit").click().run()
    assert not at.exception
    return at


def ask(at: AppTest, question: str) -> AppTest:
    at.chat_input[0].set_value(question).run()
    assert not at.exception and not at.error
    return at


def plain(markdown: str) -> str:
    """What escaped Markdown (ui/safe_text.md) shows: its characters, without the escapes and word joiners."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u2060", "")


def shown(element) -> str:
    """The text an element shows: escaped HTML (ui/safe_text.show_text) read back, or Markdown's characters."""
    if element.type == "html":
        return html.unescape(re.sub(r"<[^>]*>", "", element.value))
    return plain(str(element.value))


def texts(at: AppTest) -> str:
    """Everything the page says, passages and source titles included, in one string."""
    kinds = ("title", "markdown", "caption", "text", "html", "info", "warning", "error")
    return "\n".join([*(shown(e) for kind in kinds for e in at.get(kind)), *(plain(x.label) for x in at.expander)])


def answer(at: AppTest, turn: int = 0) -> str:
    """The text of the `turn`th answer on the page (its first element: the answer, then its sources)."""
    return shown(at.chat_message[2 * turn + 1].html[0])


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def table(at: AppTest, index: int = -1) -> list[dict]:
    return at.dataframe[index].value.to_dict("records")


def test_nothing_but_sign_in_before_signing_in(data):
    at = open_portal()
    assert [t.value for t in at.title] == ["Sign in"]
    assert not at.chat_input and not at.dataframe and not at.sidebar.children
    with pytest.raises(ValueError):  # no other page exists for this session, whatever the URL
        at.switch_page("views/documents.py")


def test_wrong_password_is_refused_without_saying_which_part_was_wrong(data):
    for name, password in (("ana", "not her password"), ("nobody", PASSWORD)):
        at = sign_in(name, password)
        assert [e.value for e in at.error] == ["Wrong name or password."]
        assert not at.chat_input


def test_an_empty_users_file_says_how_to_create_the_first_account(data):
    (data / "users.yaml").unlink()
    assert "assistant users add NAME --group admin" in texts(open_portal())


def test_signed_in_user_gets_an_answer_with_its_sources_and_can_rate_it(data):
    at = ask(sign_in("ana"), LEAVE)
    assert "27 days of paid annual leave" in answer(at)
    assert any(plain(label).startswith("[1] employee-handbook.md") for label in (x.label for x in at.expander))
    assert "27 days" in shown(at.expander[0].html[0])  # the passage itself
    assert any("ready" in caption.value for caption in at.sidebar.caption)  # the health line

    at.feedback[0].set_value(1).run()
    next(t for t in at.text_input if t.label == "Comment (optional)").input("spot on")
    button(at, "Send feedback").click().run()
    assert "feedback was recorded" in texts(at)
    [entry] = AuditLog(data / "audit.jsonl").read(events=["feedback"])
    assert (entry["user"], entry["rating"], entry["comment"], entry["question"]) == ("ana", 1, "spot on", LEAVE)

    button(at, "New conversation").click().run()
    assert not at.chat_message


def test_a_source_opens_at_its_page_or_in_its_section_and_each_opening_is_recorded(data):
    at = ask(sign_in("ana"), "What is the domestic per diem for business travel?")
    labels = [plain(x.label) for x in at.expander]
    pdf = next(i for i, label in enumerate(labels) if "expense-policy.pdf" in label)
    assert at.get("download_button")  # the original, fetched only when clicked (the callable runs then)
    next(b for b in at.expander[pdf].button if b.label == "Show the page").click().run()
    assert not at.exception and at.expander[pdf].get("image"), "the page, drawn by the portal, is shown"

    at = ask(at, LEAVE)
    handbook = next(i for i, x in enumerate(at.expander) if "employee-handbook.md" in plain(x.label))
    next(b for b in at.expander[handbook].button if b.label == "Show in its section").click().run()
    assert not at.exception and "The cited passage:" in texts(at)
    # Once each, though the page was drawn again for the second question: an opening is kept, not fetched again.
    opened = AuditLog(data / "audit.jsonl").read(events=["open"])
    assert sorted((entry["user"], Path(entry["path"]).name) for entry in opened) == [
        ("ana", "employee-handbook.md"),
        ("ana", "expense-policy.pdf"),
    ]
    assert at.expander[pdf].get("image"), "still open"


def test_conversations_are_kept_listed_resumed_renamed_and_deleted_and_nobody_else_sees_them(data):
    at = ask(sign_in("ana"), LEAVE)
    at = ask(at, "And part-time employees?")
    listed = [b for b in at.sidebar.button if plain(b.label) == LEAVE]
    assert len(listed) == 1, "one conversation, titled by its first question"

    # A new session (a reload signs in again): the conversation is still there, and resumes with both turns.
    at = sign_in("ana")
    assert not at.chat_message
    next(b for b in at.sidebar.button if plain(b.label) == LEAVE).click().run()
    assert "27 days of paid annual leave" in answer(at, 0) and len(at.chat_message) == 4
    at.sidebar.text_input(key=next(t.key for t in at.sidebar.text_input if t.label == "Title")).input("Leave").run()
    assert any(plain(b.label) == "Leave" for b in at.sidebar.button)
    at = ask(at, "From which day of sick leave do I need a doctor's note?")  # added to the resumed conversation
    assert len([b for b in at.sidebar.button if plain(b.label) in (LEAVE, "Leave")]) == 1

    other = sign_in("hal")
    assert not any(plain(b.label) in (LEAVE, "Leave") for b in other.sidebar.button), "hal never sees ana's"

    at = sign_in("ana")
    next(b for b in at.sidebar.button if plain(b.label) == "Leave").click().run()
    button(at, "Delete this conversation").click().run()
    assert not at.chat_message and not any(plain(b.label) == "Leave" for b in at.sidebar.button)
    folders = list((data / "conversations").iterdir())
    assert all(stat.S_IMODE(folder.stat().st_mode) == 0o700 for folder in folders)


def test_staff_never_see_an_hr_document_in_answers_sources_or_the_list(data):
    at = ask(sign_in("ana"), SALARY)
    assert HR_FILE not in texts(at) and "8% to 12%" not in texts(at)
    at.switch_page("views/documents.py").run()
    assert HR_FILE not in {row["document"] for row in table(at)}

    # The same question and list for a member of hr: the document is there to be hidden.
    at = ask(sign_in("hal"), SALARY)
    assert HR_FILE in texts(at)
    at.switch_page("views/documents.py").run()
    assert HR_FILE in {row["document"] for row in table(at)}


def upload_button(at: AppTest):
    return button(at, "Upload and index")


def upload(at: AppTest, files, groups) -> AppTest:
    at.file_uploader[0].set_value(files)
    at.multiselect[0].set_value(groups).run()  # the button is enabled once files and groups are chosen
    upload_button(at).click().run()
    assert not at.exception
    return at


def test_upload_indexes_for_the_chosen_group_and_refuses_files_over_the_limit(data, monkeypatch):
    monkeypatch.setenv("ASSISTANT_UPLOAD_MAX_MB", "1")
    at = sign_in("ana").switch_page("views/documents.py").run()
    assert at.multiselect[0].options == ["staff"]  # only groups she is in

    canteen = ("canteen.md", b"# Canteen\n\nThe canteen opens at 07:30 on weekdays.\n", "text/markdown")
    big = ("big.txt", b"x" * (1024 * 1024 + 1), "text/plain")
    at = upload(at, [canteen, big], ["staff"])
    outcomes = {row["file"]: (row["outcome"], row["reason"]) for row in table(at, 0)}
    assert outcomes == {"canteen.md": ("added", ""), "big.txt": ("refused", "larger than the upload limit of 1 MB")}
    assert not at.file_uploader[0].value  # emptied once its files were indexed
    assert (data / "uploads" / "ana" / "canteen.md").is_file() and not (data / "uploads" / "ana" / "big.txt").exists()
    assert {row["document"]: row["groups"] for row in table(at)}["canteen.md"] == "staff"

    at.switch_page("views/chat.py").run()
    assert "07:30" in answer(ask(at, "When does the canteen open?"))

    # Without a group the file would be readable by administrators only, so a user must choose one.
    at.switch_page("views/documents.py").run()
    at.file_uploader[0].set_value(canteen).run()
    assert upload_button(at).disabled
    at.multiselect[0].set_value(["staff"]).run()
    assert not upload_button(at).disabled


def test_admin_deletes_a_document_and_non_admins_cannot(data):
    at = sign_in("ana").switch_page("views/documents.py").run()
    assert not any(b.label == "Delete" for b in at.button)

    at = sign_in("root").switch_page("views/documents.py").run()
    assert HR_FILE in {row["document"] for row in table(at)}  # an admin sees every document
    chosen = next(o for o in at.selectbox[0].options if HR_FILE in o)
    at.selectbox[0].select(chosen).run()
    button(at, "Re-index from its file").click().run()
    assert "unchanged 1" in texts(at) and table(at, 0) == [{"file": HR_FILE, "outcome": "unchanged", "reason": ""}]
    button(at, "Delete").click().run()
    button(at, "Yes, delete it").click().run()
    assert not at.exception and not at.error
    assert f"Deleted {HR_FILE}." in texts(at)
    assert HR_FILE not in {row["document"] for row in table(at)}


def test_admin_pages_are_hidden_from_non_admins(data):
    at = sign_in("ana")
    for page in ("views/finetuning.py", "views/evaluation.py", "views/audit.py"):
        with pytest.raises(ValueError):
            at.switch_page(page)
    at.switch_page("views/models.py").run()
    assert "extractive" in {row["value"] for row in table(at)} and not at.selectbox


def write_run(runs, name="leave-lora", base_loss=3.0, eval_loss=2.0):
    run = runs / name
    (run / "adapter").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"train": {"max_steps": 4}}))
    lines = [{"step": step, "loss": 4.0 - step * 0.5, "lr": 1e-4, "tokens_per_s": 100.0} for step in range(1, 5)]
    lines.append({"step": 4, "eval_loss": eval_loss, "eval_perplexity": math.exp(eval_loss)})
    (run / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run / "eval.json").write_text(json.dumps({"base_loss": base_loss, "adapted_loss": eval_loss}))
    (run / "adapter" / "adapter_config.json").write_text("{}")
    return run


def test_finetuning_page_shows_a_run_its_loss_curve_and_perplexity_before_and_after(data):
    write_run(data / "runs")
    at = sign_in("root").switch_page("views/finetuning.py").run()
    assert not at.exception and not at.error
    [run] = table(at, 0)
    assert (run["run"], run["status"], run["steps"]) == ("leave-lora", "finished", "4 / 4")
    assert run["held-out perplexity before"] == pytest.approx(math.exp(3.0))
    assert run["held-out perplexity after"] == pytest.approx(math.exp(2.0))
    assert [m.value for m in at.metric] == [f"{math.exp(3.0):.2f}", f"{math.exp(2.0):.2f}"]
    assert "Training loss by step" in texts(at) and at.get("vega_lite_chart")


def test_audit_page_lists_who_asked_what_and_which_documents_they_were_shown(data):
    ask(sign_in("ana"), LEAVE)
    ask(sign_in("hal"), SALARY)
    at = sign_in("root").switch_page("views/audit.py").run()
    assert not at.exception and not at.error
    asked = [(row["user"], row["question"], row["documents"]) for row in table(at) if row["event"] == "ask"]
    assert [(user, question) for user, question, _ in asked] == [("hal", SALARY), ("ana", LEAVE)]  # newest first
    assert HR_FILE in asked[0][2] and "employee-handbook.md" in asked[1][2]

    at.selectbox[0].select("ana").run()
    assert {row["user"] for row in table(at)} == {"ana"}
    at.date_input[0].set_value((date(2020, 1, 1), date(2020, 1, 31))).run()
    assert not table(at)


def test_sign_out_forgets_the_user_and_the_conversation(data):
    at = ask(sign_in("ana"), LEAVE)
    button(at, "Sign out").click().run()
    assert [t.value for t in at.title] == ["Sign in"] and not at.chat_message
    assert "user" not in at.session_state and "chat:ana" not in at.session_state


def test_single_sign_on_takes_the_name_and_groups_from_the_identity_token(data, monkeypatch):
    monkeypatch.setenv("ASSISTANT_AUTH", "oidc")
    at = AppTest.from_file(APP, default_timeout=60)
    at.user = {}  # no [auth] in secrets.toml: st.user has no is_logged_in at all
    at.run()
    assert [t.value for t in at.title] == ["Sign in"] and not at.text_input  # the IdP asks for passwords, not us
    at.button[0].click().run()
    assert "Single sign-on is not configured" in at.error[0].value

    at.user = {"is_logged_in": False}
    assert [t.value for t in at.run().title] == ["Sign in"]

    at.user = {
        "is_logged_in": True,
        "iss": "https://idp.example.org",
        "sub": "ana-1",
        "email": "ana@example.org",
        "groups": ["staff", "CN=hr,OU=groups"],
    }
    at.run()
    sidebar = "\n".join(plain(c.value) for c in at.sidebar.caption)
    assert "ana@example.org" in sidebar and "groups: staff" in sidebar and "CN=hr,OU=groups" in sidebar
    assert HR_FILE not in texts(ask(at, SALARY))


def test_a_failure_is_a_message_with_what_to_do_not_a_traceback(data):
    (data / "audit.jsonl").mkdir()  # the audit log cannot be written, so no question may be answered
    at = sign_in("ana")
    at.chat_input[0].set_value(LEAVE).run()
    assert not at.exception
    [error] = at.error
    assert "could not write the audit log" in error.value and "Traceback" not in error.value


def test_a_local_model_answers_and_an_admin_switches_its_adapter(data, monkeypatch):
    from tiny_models import write_model

    model = write_model(data / "tiny-grok")
    monkeypatch.setenv("ASSISTANT_GENERATOR", "local")
    monkeypatch.setenv("ASSISTANT_MODEL_PATH", str(model))
    monkeypatch.setenv("ASSISTANT_MAX_NEW_TOKENS", "4")
    run = write_run(data / "runs")

    at = ask(sign_in("root"), LEAVE)
    assert plain(at.chat_message[1].caption[-1].value).startswith("tiny-grok ·")  # the model answered, not "extractive"

    at.switch_page("views/models.py").run()
    assert {"setting": "model", "value": str(model)} in table(at)
    at.selectbox[0].select(str(run / "adapter")).run()
    button(at, "Use this adapter").click().run()
    assert not at.error
    assert {"setting": "adapter", "value": str(run / "adapter")} in table(at)
