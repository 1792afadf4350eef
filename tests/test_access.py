"""No chunk of a document outside a user's groups ever reaches that user."""

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_model_loading import save_tiny_grok

from assistant import User
from retrieval import InvalidGroupName

GROUPS = ["hr", "security", "finance", "staff", "legal"]
TOPICS = [
    "salary bands and pay reviews",
    "password rotation and multi-factor sign-in",
    "quarterly revenue and budget forecasts",
    "office opening hours and parking",
    "contract renewal and liability clauses",
    "drone battery life and firmware updates",
]


@pytest.fixture(scope="module", params=["edge", "client"])
def corpus(request, embedder, tmp_path_factory):
    """Thirty documents, each readable by a random set of groups (some by none: admins only), on either engine:
    the embedded qdrant-edge store and qdrant-client (a server's API, here in memory)."""
    from assistant import Settings, build_assistant

    root = tmp_path_factory.mktemp("access")
    rng = random.Random(7)
    store = str(root / "qdrant") if request.param == "edge" else ":memory:"
    # A real (tiny, random) Grok-1 writes the answers: what matters is which passages its prompt was given.
    model = save_tiny_grok(root / "tiny-grok")
    settings = Settings(
        data_dir=root / "data", qdrant_path=store, generator="local", model_path=model, max_new_tokens=2
    )
    assistant = build_assistant(settings, embedder=embedder)
    allowed = {}
    for n in range(30):
        groups = tuple(sorted(rng.sample(GROUPS, rng.randint(0, 2))))
        path = root / "docs" / f"doc{n}.md"
        path.parent.mkdir(exist_ok=True)
        topic = TOPICS[n % len(TOPICS)]
        path.write_text(f"# Document {n} on {topic}\n\nThis page explains {topic} in detail for case {n}.\n")
        report = assistant.ingest([path], groups=groups)
        assert report.ok
        allowed[str(path.resolve())] = set(groups)
    prompts = []
    real_stream = assistant.generator.stream

    def recorded(prompt):
        prompts.append(prompt)
        return real_stream(prompt)

    assistant.generator.stream = recorded
    yield assistant, allowed, prompts
    assistant.close()


users = st.builds(
    lambda name, groups: User(name, tuple(groups)),
    st.sampled_from(["ana", "bo", "cy"]),
    st.lists(st.sampled_from(GROUPS + ["unknown"]), max_size=3),
)
questions = st.one_of(st.sampled_from(TOPICS), st.text(alphabet="abcdefghij klmnop", min_size=1, max_size=40))


# 500 (user, question) pairs per engine, 1,000 in all, each through search, ask (its stream, and the prompt the model
# is given) and the listing.
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=users, question=questions)
def test_search_ask_and_documents_never_show_a_document_outside_the_users_groups(corpus, user, question):
    assistant, allowed, prompts = corpus
    assume(question.strip())  # an empty question is refused before any search (test_search_quality.py)
    visible = {path for path, groups in allowed.items() if groups & set(user.groups)}
    texts = {path: Path(path).read_text() for path in visible}
    prompts.clear()

    found = {s.path for s in assistant.search(question, user, k=30)}
    answer = assistant.ask(question, user, k=5)
    listed = {d.path for d in assistant.documents(user)}

    assert found <= visible
    assert {s.path for s in answer.sources} <= visible
    assert listed == visible
    # The model is asked only when there is something readable, and sees only readable passages.
    assert len(prompts) == (1 if answer.sources else 0)
    for prompt in prompts:
        for passage in prompt.passages:
            path = passage.header.split(" (")[0]
            assert path in visible and passage.text.strip() in texts[path]


def test_admin_sees_everything_and_no_groups_means_admins_only(corpus):
    assistant, allowed, _ = corpus
    admin = User("root", ("admin",))
    assert {d.path for d in assistant.documents(admin)} == set(allowed)
    assert len(assistant.search("document", admin, k=30)) == 30
    nobody = [p for p, g in allowed.items() if not g]
    assert nobody, "the corpus should hold admin-only documents"
    everyone_but_admin = User("all", tuple(GROUPS))
    assert not set(nobody) & {s.path for s in assistant.search("document", everyone_but_admin, k=30)}
    assert assistant.search("document", User("lonely", ())) == []


@pytest.mark.parametrize("bad", ["", " ", "*", "hr,security", "a b", "../x", "-x", "x" * 65])
def test_group_names_are_validated(bad):
    with pytest.raises(InvalidGroupName, match="invalid group name"):
        User("ana", (bad,))


def test_a_bare_string_is_not_taken_for_a_list_of_groups(make_assistant, tmp_path):
    with pytest.raises(InvalidGroupName, match="list of names"):
        make_assistant().ingest([tmp_path], groups="hr")
