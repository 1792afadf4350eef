"""A question -> the chunks a reader may see that answer it best.

First stage: the store's query (dense, sparse or both fused inside Qdrant, the access filter in every branch).
Second, when a reranker is configured: a cross-encoder reads the question with each of the top candidates, and
its score is blended with the first stage's, each min-max normalised over the candidates. Blending rather than
replacing, because on SciFact an MS MARCO cross-encoder alone reordered the candidates worse than the fusion
that found them (benchmarks/README.md). Last, the edition a question's period asks for is preferred
(``retrieval.editions``).
"""

from collections.abc import Iterable

from llama_index.core.schema import NodeWithScore

from retrieval.editions import prefer_period
from retrieval.embedding import LocalEmbedding
from retrieval.ingest import embedding_text
from retrieval.periods import asked_period
from retrieval.points import QueryVectors
from retrieval.rerank import CrossEncoderReranker
from retrieval.scores import min_max
from retrieval.sparse import Bm25Encoder
from retrieval.store import ChunkStore


class Searcher:
    def __init__(
        self,
        store: ChunkStore,
        embedder: LocalEmbedding,
        sparse: Bm25Encoder,
        reranker: CrossEncoderReranker | None = None,
        rerank_candidates: int = 40,
        rerank_weight: float = 0.5,
    ):
        self.store = store
        self.embedder = embedder
        self.sparse = sparse
        self.reranker = reranker
        self.rerank_candidates = rerank_candidates
        self.rerank_weight = rerank_weight

    def search(
        self, text: str, reader_groups: Iterable[str], k: int, dense: list[float] | None = None
    ) -> list[NodeWithScore]:
        """``dense``: the query's embedding where the caller already made it (it is used for more than search)."""
        mode = self.store.plan.mode
        vectors = QueryVectors(
            dense=(dense if dense is not None else self.embedder.embed_query(text)) if mode != "sparse" else None,
            sparse=self.sparse.query(text) if mode != "dense" else None,
        )
        # Deeper than k whatever the reranker: the edition a question asks for may rank below its twins.
        found = self.store.search(vectors, reader_groups, max(k, self.rerank_candidates))
        if self.reranker is not None and len(found) > 1:
            found = self._rerank(text, found)
        return prefer_period(found, asked_period(text))[:k]

    def _rerank(self, text: str, found: list[NodeWithScore]) -> list[NodeWithScore]:
        """Blends the cross-encoder's score into the top candidates; the rest count as its lowest score.

        The first stage is normalised over all that was found, so every candidate left unread still ranks
        below every one that was read (their first-stage score is no higher and their reranker score is 0).
        """
        head = found[: self.rerank_candidates]
        passages = [embedding_text(c.node.text, c.node.metadata) for c in head]
        cross = min_max(self.reranker.score(text, passages)) + [0.0] * (len(found) - len(head))
        first = min_max([c.score for c in found])
        weight = self.rerank_weight
        blended = [weight * r + (1 - weight) * f for r, f in zip(cross, first, strict=True)]
        order = sorted(range(len(found)), key=lambda i: blended[i], reverse=True)
        return [NodeWithScore(node=found[i].node, score=blended[i]) for i in order]
