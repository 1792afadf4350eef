"""The access promise through the doors people use: the `assistant` command and the portal's pages.

test_access.py tries 1,000 (user, question) pairs against the Python API on both store engines. Here random users
and questions go through the CLI's search, ask and documents and through the portal's chat and document list, and
every word each prints is checked for the mark of a document that user may not read.
"""

import contextlib
import io
import json
import random
from itertools import combinations

import pytest
import streamlit as st
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st_
from streamlit.testing.v1 import AppTest

from assistant import Settings, build_assistant, cli
from assistant.users import UserStore

GROUPS = ["hr", "security", "finance", "staff"]
TOPICS = ["salary bands", "password rotation", "budget forecasts", "parking rules", "contract renewal"]
PASSWORD = "correct horse battery"
DOCUMENTS = 20
# Every combination of up to two groups has an account, named after its groups ("u-hr-staff"; "u-" has none).
ACCOUNTS = {"u-" + "-".join(c): c for size in range(3) for c in combinations(GROUPS, size)}


def mark(n: int) -> str:
    return f"MARK{n:02d}Q"  # one token to BM25 and to the eye; no mark is a substring of another


@pytest.fixture(scope="module")
def company(tmp_path_factory, embedder):
    """An embedded store on disk holding documents for random groups (some for none: admins only), then closed."""
    root = tmp_path_factory.mktemp("doors")
    rng = random.Random(11)
    data, docs = root / "data", root / "docs"
    docs.mkdir()
    readers = {}
    with build_assistant(Settings(data_dir=data), embedder=embedder) as assistant:
        for n in range(DOCUMENTS):
            groups = tuple(sorted(rng.sample(GROUPS, rng.randint(0, 2))))
            topic = TOPICS[n % len(TOPICS)]
            path = docs / f"doc-{n:02d}.md"
            path.write_text(f"# {topic.title()} {mark(n)}\n\nThe {topic} rules for case {mark(n)} are set out here.\n")
            assert assistant.ingest([path], groups=groups).ok
            readers[n] = set(groups)
    users = UserStore(data / "users.yaml")
    for name, groups in ACCOUNTS.items():
        users.add(name, PASSWORD, list(groups))
    return data, readers


@pytest.fixture(scope="module")
def environment(company, embedder):
    data, readers = company
    with pytest.MonkeyPatch.context() as patch:
        for name in ("ASSISTANT_CONFIG", "ASSISTANT_QDRANT_URL", "ASSISTANT_QDRANT_PATH", "ASSISTANT_GENERATOR"):
            patch.delenv(name, raising=False)
        patch.setenv("ASSISTANT_DATA_DIR", str(data))
        # `embedder` is the process's shared one (assistant.assembly): hundreds of commands load it once.
        yield data, readers


def forbidden(readers: dict[int, set[str]], groups: tuple[str, ...]) -> list[str]:
    return [mark(n) for n, allowed in readers.items() if not allowed & set(groups)]


accounts = st_.sampled_from(sorted(ACCOUNTS))
questions = st_.one_of(
    st_.sampled_from(TOPICS),
    # Asking for a document by its mark is the most direct way to try to reach it.
    st_.integers(0, DOCUMENTS - 1).map(lambda n: f"what do the rules for case {mark(n)} say"),
    st_.text(alphabet="abcdefghij klmnop", min_size=3, max_size=30).filter(str.strip),
)


def run_cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return out.getvalue()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(account=accounts, question=questions)
def test_the_command_line_never_prints_what_its_user_may_not_read(environment, account, question):
    _, readers = environment
    groups = ACCOUNTS[account]
    who = ["--user", account, *(arg for group in groups for arg in ("--group", group))]

    found = json.loads(run_cli("search", question, "--k", "30", "--json", *who))["sources"]
    answered = json.loads(run_cli("ask", question, "--json", *who))
    printed = run_cli("ask", question, *who)  # the streamed, human form
    listed = run_cli("documents", "--json", *who) if groups else ""  # no --group lists as the operator (admin)

    said = json.dumps(found) + json.dumps(answered) + printed + listed
    assert not [m for m in forbidden(readers, groups) if m in said]
    if groups:
        readable = {f"doc-{n:02d}.md" for n, allowed in readers.items() if allowed & set(groups)}
        assert {d["path"].rsplit("/", 1)[1] for d in json.loads(listed)["documents"]} == readable


@pytest.fixture(scope="module")
def portal(environment):
    st.cache_resource.clear()
    yield environment
    st.cache_resource.clear()  # closes the portal's Assistant, releasing the embedded store


def page_text(at: AppTest) -> str:
    kinds = ("title", "markdown", "caption", "text", "info", "warning", "error")
    shown = [str(e.value) for kind in kinds for e in at.get(kind)] + [x.label for x in at.expander]
    shown += [frame.value.to_csv() for frame in at.dataframe]
    return "\n".join(shown)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(account=accounts, question=questions)
def test_the_portal_never_shows_what_its_user_may_not_read(portal, account, question):
    _, readers = portal
    at = AppTest.from_file(str(ROOT / "ui" / "app.py"), default_timeout=60).run()
    at.text_input(key="sign-in:name").input(account)
    at.text_input(key="sign-in:password").input(PASSWORD)
    at.button(key="sign-in:submit").click().run()
    at.chat_input[0].set_value(question).run()
    assert not at.exception
    chat = page_text(at).replace(question, "")  # the chat shows the question itself, which may name a mark
    at.switch_page("views/documents.py").run()
    assert not at.exception
    listing = page_text(at)

    banned = forbidden(readers, ACCOUNTS[account])
    assert not [m for m in banned if m in chat or m in listing]
    readable = [f"doc-{n:02d}.md" for n, allowed in readers.items() if allowed & set(ACCOUNTS[account])]
    assert all(name in listing for name in readable)
