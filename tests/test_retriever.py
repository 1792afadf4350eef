"""The assistant's search as a llama-index retriever: the same access rule and audit as every other search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine

from assistant import User
from assistant.retriever import AssistantRetriever

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
STAFF, HR = User("ana", ("staff",)), User("hanna", ("staff", "hr"))
SALARY = "What is the salary band for a senior engineer?"


@pytest.fixture
def assistant(make_assistant):
    assistant = make_assistant()
    assistant.ingest([SAMPLES / "public"], groups=["staff"])
    assistant.ingest([SAMPLES / "hr"], groups=["hr"])
    return assistant


def test_it_retrieves_only_what_its_user_may_read_and_is_audited(assistant):
    staff = AssistantRetriever(assistant, STAFF, k=5)
    assert isinstance(staff, BaseRetriever)
    found = staff.retrieve(SALARY)
    assert len(found) == 5 and not any("salary-bands" in n.node.metadata["path"] for n in found)
    hr = AssistantRetriever(assistant, HR, k=3).retrieve(SALARY)
    assert hr[0].node.metadata["path"].endswith("salary-bands-and-reviews.pdf")
    assert hr[0].node.metadata["page"] and hr[0].score is not None and hr[0].node.get_content()
    assert len({n.node.node_id for n in hr}) == 3  # one node per passage, named by document and chunk
    events = [json.loads(line) for line in assistant.audit.path.read_text().splitlines()]
    searches = [(e["user"], e["question"]) for e in events if e["event"] == "search"]
    assert searches == [("ana", SALARY), ("hanna", SALARY)]


def test_a_llama_index_query_engine_answers_from_it_without_reaching_other_groups(assistant):
    # llama-index's stand-in LLM: what matters is which passages the engine would hand a real one.
    engine = RetrieverQueryEngine.from_args(AssistantRetriever(assistant, STAFF), llm=MockLLM(max_tokens=8))
    response = engine.query(SALARY)
    assert response.source_nodes and all("salary-bands" not in n.node.metadata["path"] for n in response.source_nodes)


def test_k_must_be_positive(assistant):
    with pytest.raises(ValueError, match="at least 1"):
        AssistantRetriever(assistant, STAFF, k=0)
