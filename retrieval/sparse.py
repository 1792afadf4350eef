"""Sparse lexical (BM25) vectors for chunks and queries.

qdrant-edge's ``Bm25`` is the Qdrant team's encoder: the same tokenizer, English stop words, Snowball stemmer
and term hashing as Qdrant's server-side BM25, compiled, and with nothing to download (FastEmbed's BM25 fetches
its files from a model hub at run time, which fails on an offline machine). A document vector holds BM25's
saturated, length-normalised term frequencies; the collection's IDF modifier supplies the inverse document
frequency at query time, from the live collection, so documents never need re-encoding as the corpus grows.
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
