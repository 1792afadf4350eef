"""The portal against hostile text and hostile sign-ins, through streamlit.testing's AppTest.

- No image, link or HTML written by a document, a user or a model reaches the browser as markup, on any page: every
  Markdown string the page sends is parsed as the frontend would (CommonMark, plus GFM's bare-URL autolinks), every
  `st.html` body as HTML, and neither may hold anything that loads or links a URL.
- Wrong passwords cost growing waits, per name and per client, refused before the password is checked.
- A removed account is signed out at its next click, and changed groups apply at once.
- Non-administrators see which part is down or that something failed, never paths or internal errors.
"""

from __future__ import annotations

import logging
import re
import tomllib
from html.parser import HTMLParser

import pytest
import test_portal
from conftest import ROOT
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest
from test_portal import HR_FILE, PASSWORD, SALARY, button, plain, shown, sign_in, texts

from assistant import Health, Settings, build_assistant
from assistant.errors import InvalidRequest
from assistant.users import UserStore

# The portal tests' store (the samples: staff, hr) and its users, as fixtures of this module too.
corpus, data = test_portal.corpus, test_portal.data

BEACON = "http://127.0.0.1:9/beacon?leak=1"
HOSTILE = (
    "# Parking <img src=http://127.0.0.1:9/heading> www.evil.example\n\n"
    f"Parking permits are issued at the front desk ![x]({BEACON}) every Monday morning.\n\n"
    'Parking permits are free for cyclists <img src="http://127.0.0.1:9/img"> and for car pools.\n\n'
    "Parking permits questions go to [click here](http://evil.example/phish), http://evil.example/bare, "
    "www.evil.example or parking@evil.example.\n"
)
HOSTILE_NAME = "[parking](http:evil.example).md"  # `http:host` is a URL to a browser too
QUESTION = "How are parking permits issued? ![q](http://127.0.0.1:9/question) <img src=http://127.0.0.1:9/q2>"
PARKING = "How are parking permits issued?"


# --- what the frontend would make of what the page sends ---------------------------------------------------------

_MARKDOWN = MarkdownIt("commonmark").enable(["strikethrough", "table"])
# remark-gfm's autolink-literal transform (mdast-util-gfm-autolink-literal, in Streamlit's StreamlitMarkdown.*.js)
# links these in plain text after escapes are read; checked here more broadly than it links (any position).
_AUTOLINKED = re.compile(r"https?://|www\.|[-.\w+]+@[-\w]+(?:\.[-\w]+)+", re.IGNORECASE)
_URL_ATTRIBUTES = {"src", "href", "srcset", "action", "formaction", "poster", "data", "background", "xlink:href"}


def markdown_problems(source: str) -> list[str]:
    problems = []
    tokens = _MARKDOWN.parse(source)
    for token in tokens:
        if token.type == "html_block":
            problems.append(f"HTML block {token.content!r}")
        for child in token.children or []:
            if child.type in ("image", "link_open", "html_inline"):
                problems.append(f"{child.type} {child.attrs or child.content!r}")
        text = "".join(child.content for child in token.children or [] if child.type == "text")
        if _AUTOLINKED.search(text):
            problems.append(f"a bare URL or address that would be linked: {text!r}")
    return problems


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.problems = []

    def handle_starttag(self, tag, attrs):
        if tag not in ("div", "span", "p", "br"):
            self.problems.append(f"<{tag}>")
        for name, value in attrs:
            if name in _URL_ATTRIBUTES or name.startswith("on") or "url(" in (value or ""):
                self.problems.append(f"<{tag} {name}={value!r}>")


def html_problems(body: str) -> list[str]:
    parser = _Tags()
    parser.feed(body)
    return parser.problems


def _nodes(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _nodes(child)


PLAIN_ELEMENTS = {"text", "code", "dataframe", "table", "json", "html"}  # drawn as characters (html: checked below)


def remote_markup(at: AppTest) -> list[str]:
    """Everything on the page that would load or link a URL in the browser."""
    found = []
    for node in _nodes(at._tree):
        if node.type == "html":
            found += [f"st.html: {p}" for p in html_problems(node.value)]
            continue
        markdown = [getattr(node, name, None) for name in ("label", "help", "placeholder")]
        if node.type not in PLAIN_ELEMENTS:
            markdown.append(getattr(getattr(node, "proto", None), "body", None))
        for source in markdown:
            if isinstance(source, str) and source:
                found += [f"{node.type}: {p} in {source!r}" for p in markdown_problems(source)]
    return found


def test_the_checks_see_what_they_look_for():
    # The detectors themselves, on what the portal rendered before it escaped: each payload is caught.
    assert markdown_problems(f"![x]({BEACON})") and markdown_problems("[a](http://e.example)")
    assert markdown_problems("<img src=http://e.example/i>") and markdown_problems("see www.evil.example")
    assert markdown_problems("mail parking@evil.example") and markdown_problems("http://evil.example/bare")
    assert html_problems('<img src="http://e.example/i">') and html_problems("<a href='http://e.example'>x</a>")
    assert not markdown_problems(r"\!\[x\]\(http\:" + "\u2060" + r"\/\/e\.example\)")


# --- a store with a hostile document -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile_corpus(tmp_path_factory, embedder):
    root = tmp_path_factory.mktemp("hostile")
    docs = root / "docs"
    docs.mkdir()
    (docs / HOSTILE_NAME).write_text(HOSTILE)
    settings = Settings(data_dir=root / "data")
    with build_assistant(settings, embedder=embedder) as assistant:
        assert assistant.ingest([docs], groups=["staff"]).ok
    users = UserStore(settings.users_file)
    users.add("ana", PASSWORD, ["staff"])
    users.add("root", PASSWORD, ["admin", "staff"])
    return root / "data"


@pytest.fixture
def hostile(hostile_corpus, tmp_path, monkeypatch):
    yield from test_portal.portal_over(hostile_corpus, tmp_path, monkeypatch)


def test_no_page_renders_a_documents_or_users_images_links_or_html(hostile, embedder):
    at = sign_in("ana")
    at.chat_input[0].set_value(QUESTION).run()
    assert not at.exception and not at.error
    page = texts(at)
    # The payloads are on the page, as text: the answer quotes the document, the sources show its passages.
    assert f"![x]({BEACON})" in page and "<img src=" in page and QUESTION in page
    assert any(plain(e.label).startswith(f"[1] {HOSTILE_NAME} — Parking") for e in at.expander)
    assert remote_markup(at) == []

    at.chat_input[0].set_value(PARKING).run()  # a second turn: the first is drawn again from the history
    assert remote_markup(at) == []
    at.feedback[0].set_value(0).run()
    next(t for t in at.text_input if t.label == "Comment (optional)").input("see [here](http://evil.example/c)")
    button(at, "Send feedback").click().run()

    for page in ("views/documents.py", "views/models.py"):
        at.switch_page(page).run()
        assert not at.exception and remote_markup(at) == [], page

    run = hostile / "runs" / "[run](http:evil.example)"
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "log.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    admin = sign_in("root")
    for page in ("views/documents.py", "views/audit.py", "views/finetuning.py", "views/models.py"):
        admin.switch_page(page).run()
        assert not admin.exception and remote_markup(admin) == [], page
    admin.switch_page("views/documents.py").run()
    button(admin, "Delete").click().run()  # the confirmation names the file in Markdown
    assert "Remove" in texts(admin) and remote_markup(admin) == []


# --- sign-in throttling ------------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def throttle(data, monkeypatch):
    """The process's throttle on a clock the test moves, and a client the test names (AppTest has one session)."""
    from ui import auth

    clock = Clock()
    auth.sign_in_throttle().clock = clock
    client = {"key": "client:a"}
    monkeypatch.setattr(auth, "_client_key", lambda: client["key"])
    checked = []
    real = UserStore.authenticate

    def counted(self, name, password):
        checked.append(name)
        return real(self, name, password)

    monkeypatch.setattr(UserStore, "authenticate", counted)
    return clock, client, checked


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_wrong_passwords_for_one_name_cost_growing_waits_from_any_client(throttle):
    clock, client, checked = throttle
    for _ in range(3):
        assert errors(sign_in("ana", "wrong password")) == ["Wrong name or password."]
    client["key"] = "client:b"  # another client: the name's own counter still applies
    refused = sign_in("ana")  # the right password, inside the wait
    assert errors(refused) == ["Too many failed sign-ins: wait 1 second, then try again."] and not refused.chat_input
    assert len(checked) == 3  # the refused attempt never reached the password check

    clock.now += 1
    assert errors(sign_in("ana", "wrong password")) == ["Wrong name or password."]
    clock.now += 1.5
    assert errors(sign_in("ana")) == ["Too many failed sign-ins: wait 1 second, then try again."]  # 2 s after it
    clock.now += 0.5
    assert sign_in("ana").chat_input  # the right password, once the wait is over

    # A success starts the name afresh: three mistakes are free again (from a client with no failures of its own:
    # a success does not wash away its client's earlier failures, or one's own account would reset guesses at others).
    client["key"] = "client:c"
    for _ in range(3):
        assert errors(sign_in("ana", "wrong password")) == ["Wrong name or password."]


def test_wrong_passwords_from_one_client_cost_waits_whatever_name_they_try(throttle):
    _, client, _ = throttle
    for name in ("ana", "hal", "nobody"):
        assert errors(sign_in(name, "wrong password")) == ["Wrong name or password."]
    assert errors(sign_in("root")) == ["Too many failed sign-ins: wait 1 second, then try again."]
    client["key"] = "client:b"
    assert sign_in("root").chat_input  # the same name from elsewhere: nothing against it


def test_the_wait_doubles_up_to_five_minutes(throttle):
    from ui import auth

    clock, _, _ = throttle
    limiter = auth.sign_in_throttle()  # the very one the sign-in page uses
    for _ in range(3):
        assert limiter.begin(["name:x"]) == 0  # three free failures
    waits = []
    for _ in range(12):
        wait = limiter.begin(["name:x"])  # refused: how long to wait
        waits.append(wait)
        clock.now += wait
        assert limiter.begin(["name:x"]) == 0  # allowed once waited, and counted as a failure
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    assert errors(sign_in("x", "wrong password")) == ["Too many failed sign-ins: wait 5 minutes, then try again."]


# --- the signed-in user follows the users file -------------------------------------------------------------------


def test_changed_groups_apply_at_the_next_run(data):
    at = sign_in("hal")
    at.chat_input[0].set_value(SALARY).run()
    assert HR_FILE in texts(at)
    UserStore(data / "users.yaml").add("hal", PASSWORD, ["staff"])  # hal leaves hr

    at.run()
    assert at.session_state["user"].groups == ("staff",)
    assert "groups: staff" in "\n".join(c.value for c in at.sidebar.caption).replace("\\", "")
    at.chat_input[0].set_value(SALARY).run()
    last = at.chat_message[-1]
    assert HR_FILE not in "\n".join([*(shown(e) for e in last.html), *(e.label for e in last.expander)])


def test_an_admin_who_loses_the_group_loses_the_admin_pages_at_once(data):
    at = sign_in("root").switch_page("views/audit.py").run()
    assert not at.error
    UserStore(data / "users.yaml").add("root", PASSWORD, ["staff"])
    at.run()
    assert "Audit log" not in [t.value for t in at.title] and not at.session_state["user"].is_admin
    for page in ("views/finetuning.py", "views/audit.py"):
        with pytest.raises(ValueError):
            at.switch_page(page)


def test_a_removed_account_is_signed_out_at_its_next_click(data):
    at = sign_in("ana")
    at.chat_input[0].set_value(SALARY).run()
    UserStore(data / "users.yaml").remove("ana")
    at.run()
    assert [t.value for t in at.title] == ["Sign in"] and not at.chat_message and not at.sidebar.children
    assert "no longer exists" in texts(at)
    assert "user" not in at.session_state and "chat:ana" not in at.session_state


# --- what a failure shows to whom --------------------------------------------------------------------------------

SECRET_PATH = "/srv/assistant-secret/qdrant/collection"


def test_health_details_are_for_administrators(data, monkeypatch):
    down = Health(False, f"cannot open {SECRET_PATH}: locked", False, "model at /srv/models/x does not answer")
    monkeypatch.setattr("assistant.service.Assistant.health", lambda self: down)
    at = sign_in("ana")
    sidebar = "\n".join(w.value for w in at.sidebar.warning)
    assert "Document store is not available" in sidebar and "Answering model is not available" in sidebar
    assert "administrator" in sidebar and "/srv" not in sidebar

    sidebar = "\n".join(w.value for w in sign_in("root").sidebar.warning).replace("\\", "")
    assert SECRET_PATH in sidebar and "/srv/models/x" in sidebar


def failing_stream(error):
    def stream(self, question, user, k=5, history=()):
        raise error
        yield  # a generator, like the real one

    return stream


def test_an_internal_error_shows_only_an_incident_id_to_a_non_admin(data, monkeypatch, caplog):
    monkeypatch.setattr(
        "assistant.service.Assistant.stream", failing_stream(ValueError(f"bad vector in {SECRET_PATH}"))
    )
    at = sign_in("ana")
    with caplog.at_level(logging.ERROR, logger="ui"):
        at.chat_input[0].set_value(SALARY).run()
    [message] = errors(at)
    assert "/srv" not in message and "tell an administrator" in message.lower()
    incident = re.search(r"incident ([0-9a-f]{8})", message).group(1)
    logged = "\n".join(r.getMessage() + (str(r.exc_info[1]) if r.exc_info else "") for r in caplog.records)
    assert incident in logged and SECRET_PATH in logged

    at = sign_in("root")
    at.chat_input[0].set_value(SALARY).run()
    assert SECRET_PATH in errors(at)[0].replace("\\", "")


def test_an_operating_systems_permission_error_is_an_incident_not_a_message(data, monkeypatch):
    # PermissionError from the OS names the file it could not open; only the assistant's NotPermitted is for users.
    denied = PermissionError(13, "Permission denied", f"{SECRET_PATH}/segment-3")
    monkeypatch.setattr("assistant.service.Assistant.stream", failing_stream(denied))
    at = sign_in("ana")
    at.chat_input[0].set_value(SALARY).run()
    [message] = errors(at)
    assert "/srv" not in message and re.search(r"incident [0-9a-f]{8}", message)


def test_the_assistants_own_refusals_are_shown_to_anyone_and_their_detail_to_admins(data, monkeypatch):
    refusal = InvalidRequest("the question is too long: shorten it", detail=f"limit from {SECRET_PATH}")
    monkeypatch.setattr("assistant.service.Assistant.stream", failing_stream(refusal))
    at = sign_in("ana")
    at.chat_input[0].set_value(SALARY).run()
    [message] = errors(at)
    assert "the question is too long: shorten it" in message.replace("\\", "") and "/srv" not in message
    at = sign_in("root")
    at.chat_input[0].set_value(SALARY).run()
    assert SECRET_PATH in errors(at)[0].replace("\\", "")


# --- deployment settings -----------------------------------------------------------------------------------------


def test_the_portal_names_its_own_address_so_streamlit_need_not_look_up_a_public_ip():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["browser"]["serverAddress"] == "127.0.0.1"
    makefile = (ROOT / "Makefile").read_text()
    [line] = [line for line in makefile.splitlines() if "--server.address" in line]
    assert "--browser.serverAddress $(PORTAL_ADDRESS)" in line
