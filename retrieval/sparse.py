"""Sparse lexical (BM25) vectors for chunks and queries.

qdrant-edge's ``Bm25`` is the Qdrant team's encoder: the same tokenizer, English stop words, Snowball stemmer
and term hashing as Qdrant's server-side BM25, compiled, and with nothing to download (FastEmbed's BM25 fetches
its files from a model hub at run time, which fails on an offline machine). A document vector holds BM25's
saturated, length-normalised term frequencies; the collection's IDF modifier supplies the inverse document
frequency at query time, so documents never need re-encoding as the corpus grows. Its statistics are counted over
the chunks the reader may read, never the whole collection (retrieval.points.idf_corpus): BM25's score of a chunk is

    sum over query terms t of  idf(t) * tf_weight(t, chunk),   idf(t) = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

with N the readable chunks that have a sparse vector and df(t) those of them holding t (Qdrant's ``fancy_idf``,
lib/segment/src/data_types/query_context.rs, as of its per-corpus ``IdfScopeStats`` in 1.19; qdrant-client 1.20's
local mode computes the same in ``LocalCollection._compute_idf``). A query's own weights are 1 per distinct term.
"""

import qdrant_edge

from retrieval.points import SparseVector


class Bm25Encoder:
    def __init__(self, k1: float = 1.2, b: float = 0.75, avg_len: float = 256.0):
        self._bm25 = qdrant_edge.Bm25(qdrant_edge.Bm25Config(k=k1, b=b, avg_len=avg_len))

    def documents(self, texts: list[str]) -> list[SparseVector]:
        return [_plain(self._bm25.embed_document(text)) for text in texts]

    def query(self, text: str) -> SparseVector:
        return _plain(self._bm25.embed_query(text))


def _plain(vector: qdrant_edge.SparseVector) -> SparseVector:
    return SparseVector(list(vector.indices), list(vector.values))
