"""A store keeps the embedding model its vectors came from: another model is refused until `assistant reembed`."""

import pytest

from assistant import Settings, User, build_assistant, cli
from retrieval import EmbedderMismatch
from retrieval.embedding import LocalEmbedding
from retrieval.embedding_models import DEFAULT_MODEL, EARLIER_DEFAULT
from retrieval.store import _STORE_POINT_ID

STAFF = User("ana", ("staff",))
QUESTIONS = {
    "How many days of annual leave do employees get?": "leave.md",
    "Which account was phished, and when?": "incident.md",
    "Who approves invoices above 10,000 euros?": "invoices.md",
}


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    return LocalEmbedding(EARLIER_DEFAULT, cache_dir=tmp_path_factory.mktemp("embeddings"))


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "leave.md").write_text("# Leave\n\n## Annual leave\n\nEvery employee gets 27 days of annual leave.\n")
    (folder / "incident.md").write_text("# Incident\n\nThe contractor account was phished on 3 March at 09:40.\n")
    (folder / "invoices.md").write_text("# Payments\n\nInvoices above 10,000 euros need the finance director.\n")
    return folder


@pytest.fixture
def settings(tmp_path, monkeypatch):
    # The CLI reads the same store from the environment.
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path / "data"))
    return Settings(data_dir=tmp_path / "data")


def top_files(assistant) -> dict[str, str]:
    return {question: assistant.search(question, STAFF, k=1)[0].path.rsplit("/", 1)[-1] for question in QUESTIONS}


def test_a_store_made_by_another_model_is_refused_until_it_is_reembedded(settings, docs, minilm, embedder, capsys):
    with build_assistant(settings, embedder=minilm) as earlier:
        earlier.ingest([docs], groups=["staff"])
        assert earlier.store.vectors_from == EARLIER_DEFAULT
        assert top_files(earlier) == QUESTIONS

    with build_assistant(settings, embedder=embedder) as assistant:
        with pytest.raises(EmbedderMismatch, match=f"made by .*{EARLIER_DEFAULT}.*set to {DEFAULT_MODEL}.*reembed"):
            assistant.search("annual leave", STAFF)
        with pytest.raises(EmbedderMismatch):  # nothing of the other model's is added beside them either
            assistant.ingest([docs / "leave.md"], groups=["staff", "hr"])
        health = assistant.health()
        assert not health.store_ok and "assistant reembed" in health.store_message
        # Listing needs no vectors, and the record naming the model is no document.
        assert sorted(d.path.rsplit("/", 1)[-1] for d in assistant.documents(STAFF)) == sorted(QUESTIONS.values())

    assert cli.main(["search", "annual leave", "--group", "staff"]) == 2
    assert "assistant reembed" in capsys.readouterr().err
    assert cli.main(["reembed"]) == 0
    assert f"re-embedded 3 chunks with {DEFAULT_MODEL}" in capsys.readouterr().out

    with build_assistant(settings, embedder=embedder) as assistant:
        assert assistant.store.vectors_from == DEFAULT_MODEL and assistant.health().store_ok
        reembedded = {q: assistant.search(q, STAFF, k=3) for q in QUESTIONS}
        assert top_files(assistant) == QUESTIONS
        # The same vectors as ingesting the files afresh with this model: same passages, same scores.
        fresh = build_assistant(
            Settings(data_dir=settings.data_dir / "fresh", qdrant_path=":memory:"), embedder=embedder
        )
        with fresh:
            fresh.ingest([docs], groups=["staff"])
            for question, sources in reembedded.items():
                again = fresh.search(question, STAFF, k=3)
                assert [s.text for s in sources] == [s.text for s in again]
                assert [s.score for s in sources] == pytest.approx([s.score for s in again], abs=1e-4)
        # Groups, headings and the rest of each chunk's payload came through unchanged.
        assert assistant.search("annual leave", User("eve", ("hr",)), k=3) == []
        assert reembedded["How many days of annual leave do employees get?"][0].heading == "Leave > Annual leave"


def test_a_store_from_before_models_were_recorded_counts_as_the_earlier_default(settings, docs, minilm, embedder):
    with build_assistant(settings, embedder=minilm) as earlier:
        earlier.ingest([docs], groups=["staff"])
        earlier.store.documents.delete_ids([_STORE_POINT_ID])  # as every store written before this change
    with build_assistant(settings, embedder=minilm) as same:
        assert same.store.vectors_from == EARLIER_DEFAULT and top_files(same) == QUESTIONS
    with build_assistant(settings, embedder=embedder) as other, pytest.raises(EmbedderMismatch):
        other.search("annual leave", STAFF)


def test_an_empty_store_takes_whichever_model_fills_it(settings, docs, embedder, minilm):
    with build_assistant(settings, embedder=embedder) as assistant:
        assert assistant.store.vectors_from is None
        assert assistant.search("annual leave", STAFF) == []
        assistant.ingest([docs], groups=["staff"])
        assert assistant.store.vectors_from == DEFAULT_MODEL
    with build_assistant(settings, embedder=minilm) as other, pytest.raises(EmbedderMismatch, match=DEFAULT_MODEL):
        other.search("annual leave", STAFF)
