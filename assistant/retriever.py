"""The assistant's search as a llama-index retriever, for internal services that already run on llama-index.

It retrieves for one user, through ``Assistant.search``: the access filter inside every search, and the audit
record of who searched and what they were shown, hold for a llama-index pipeline exactly as for the portal. A
service that needs passages for several people makes one retriever per person; there is no way to retrieve
without one.
"""

from __future__ import annotations

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from assistant.service import Assistant
from assistant.types import Source, User


class AssistantRetriever(BaseRetriever):
    """``retriever.retrieve("...")`` -> the k passages `user` may read, as llama-index nodes with their scores."""

    def __init__(self, assistant: Assistant, user: User, k: int = 5):
        super().__init__()
        if k < 1:
            raise ValueError(f"k is how many passages to retrieve, at least 1, not {k}")
        self.assistant, self.user, self.k = assistant, user, k

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [_node(source) for source in self.assistant.search(query_bundle.query_str, self.user, self.k)]


def _node(source: Source) -> NodeWithScore:
    metadata = {key: value for key, value in source.to_dict().items() if key not in ("text", "score") and value}
    node = TextNode(id_=f"{source.doc_id}:{source.chunk}", text=source.text, metadata=metadata)
    return NodeWithScore(node=node, score=source.score)
