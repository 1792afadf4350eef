"""Hybrid search and reranking end to end: real MiniLM, real BM25, real cross-encoder, both store engines."""

import pytest

from assistant import User

ADMIN = User("root", ("admin",))
STAFF = User("ann", ("staff",))

PARTS = {
    # Near-identical prose, told apart only by the part number: what embedders blur and words catch.
    "valve-a.md": "# Valve kit\n\nReplacement valve kit VX-2291 fits the north boiler. Torque the bolts to 40 Nm.\n",
    "valve-b.md": "# Valve kit\n\nReplacement valve kit VX-7734 fits the south boiler. Torque the bolts to 55 Nm.\n",
    "valve-c.md": "# Valve kit\n\nReplacement valve kit VX-5108 fits the east boiler. Torque the bolts to 35 Nm.\n",
    "leave.md": "# Annual leave\n\nEmployees get 27 days of paid annual leave each calendar year.\n",
    "travel.md": "# Travel\n\nTrain travel is second class unless the journey takes more than four hours.\n",
}


@pytest.fixture(params=["edge", "client"])
def company(request, make_assistant, tmp_path):
    """Makes an assistant with the given settings over the documents above, on either engine."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in PARTS.items():
        (docs / name).write_text(text)

    def make(**settings):
        if request.param == "edge":
            settings["qdrant_path"] = str(tmp_path / "qdrant")
        assistant = make_assistant(**settings)
        assert assistant.ingest([docs], groups=["staff"]).ok
        return assistant

    return make


def top(assistant, query, user=STAFF, k=3):
    return [source.path.rsplit("/", 1)[-1] for source in assistant.search(query, user, k=k)]


def test_hybrid_search_finds_an_exact_part_number_and_keeps_meaning_search(company):
    assistant = company()
    assert top(assistant, "torque for VX-7734")[0] == "valve-b.md"
    assert top(assistant, "torque for VX-5108")[0] == "valve-c.md"
    assert top(assistant, "how much holiday do I get per year")[0] == "leave.md"
    assert top(assistant, "anything", user=User("eve", ("finance",))) == []


def test_each_mode_is_chosen_by_settings(company):
    sparse = company(search_mode="sparse")
    assert top(sparse, "2291", k=5) == ["valve-a.md"]  # only the document holding the word
    assert top(sparse, "the of and") == []


def test_reranking_blends_the_cross_encoder_and_keeps_scores_in_rank_order(company):
    reranked = company(reranker="bundled", rerank_candidates=3, rerank_weight=0.5)
    sources = reranked.search("is first class allowed on long train journeys", ADMIN, k=5)
    assert sources[0].path.endswith("travel.md")
    scores = [s.score for s in sources]
    assert scores == sorted(scores, reverse=True) and len(sources) == 5


def test_a_missing_reranker_is_named_with_what_to_set(make_assistant, tmp_path):
    from retrieval.rerank import RerankerNotFound

    with pytest.raises(RerankerNotFound, match=str(tmp_path / "nowhere")):
        make_assistant(reranker=str(tmp_path / "nowhere"))


def test_an_empty_question_is_refused_before_any_search(make_assistant):
    assistant = make_assistant()
    for empty in ("", "   \n"):
        with pytest.raises(ValueError, match="the query is empty"):
            assistant.search(empty, ADMIN)
        with pytest.raises(ValueError, match="the question is empty"):
            assistant.ask(empty, ADMIN)
