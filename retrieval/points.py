"""What the store keeps and asks for, independent of which Qdrant engine holds it.

The embedded store runs on qdrant-edge and a server on qdrant-client: two APIs with their own filter and point
classes. The store speaks these small types, and each index translates them into its engine's own.
"""

from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal

DENSE = "dense"
SPARSE = "sparse"

# k = 60 as in the RRF paper; Qdrant's own default (2) lets the top few ranks of either branch dominate.
RRF_K = 60

SearchMode = Literal["dense", "sparse", "hybrid"]
Fusion = Literal["dbsf", "rrf"]


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class Where:
    """Points whose payload ``key`` holds any of the values, for every key in ``all_of``, and none in ``none_of``.

    A key with no values in ``all_of`` matches nothing: that is how a reader without groups reads nothing.
    """

    all_of: dict[str, tuple[str, ...]] = field(default_factory=dict)
    none_of: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def match(cls, key: str, *values: str) -> "Where":
        return cls(all_of={key: values})

    def excluding(self, key: str, *values: str) -> "Where":
        return Where(self.all_of, {**self.none_of, key: values})

    def __and__(self, other: "Where | None") -> "Where":
        if other is None:
            return self
        return Where({**self.all_of, **other.all_of}, {**self.none_of, **other.none_of})

    def to_filter(self, api: ModuleType):
        """This condition as ``api``'s Filter: qdrant-client's ``models`` and ``qdrant_edge`` name the classes and
        their fields alike (Filter(must, must_not), FieldCondition(key, match), MatchAny(any))."""

        def condition(key: str, values: tuple[str, ...]):
            return api.FieldCondition(key=key, match=api.MatchAny(any=list(values)))

        return api.Filter(
            must=[condition(key, values) for key, values in self.all_of.items()] or None,
            must_not=[condition(key, values) for key, values in self.none_of.items()] or None,
        )


def idf_corpus(scope: Where | None, api: ModuleType):
    """The points whose statistics BM25 scores a sparse query with, as ``api``'s Filter (its ``IdfParams`` corpus).

    A sparse vector with the IDF modifier takes N (documents) and df (documents holding a term) from a corpus. By
    default that is the whole collection, so a reader's scores, and their order, would move with words in documents
    they cannot read: enough to test whether a restricted document names a person or a deal (issue 16). The caller
    passes the reader's access filter, so the statistics count exactly what the reader may read, computed by the
    engine at query time (Qdrant 1.19's per-query IDF corpus, qdrant/qdrant#9661; qdrant-edge 0.9 and qdrant-client
    1.20 local mode implement the same). Per-scope statistics are BM25 over the reader's own collection: a reader
    whose groups see a subset ranks as if only that subset existed, which is what the fused search already does.

    ``None`` (an admin, who reads everything) still gets a corpus, one matching every point, rather than the engines'
    global default: the global statistics are read from the sparse index, which goes on counting deleted points until
    the segment is rebuilt (qdrant/qdrant#6739, and seen in qdrant-edge 0.9), so a deleted document would linger in
    admins' scores and the in-memory engine, which counts live points, would disagree with the other two.

    A server collection split into several shards scores each shard with that shard's own statistics (Qdrant's
    documentation says so of IDF in general): still counted over the reader's scope only, so nothing leaks, but no
    longer one BM25 over the whole scope. The embedded store is one shard, and so is a collection this code creates
    on a one-node server.
    """
    return (scope or Where()).to_filter(api)


@dataclass
class StoredPoint:
    id: str
    payload: dict
    dense: list[float] | None = None
    sparse: SparseVector | None = None


@dataclass(frozen=True)
class Hit:
    id: str
    score: float
    payload: dict


@dataclass(frozen=True)
class QueryVectors:
    """A query as each branch of the search reads it."""

    dense: list[float] | None = None
    sparse: SparseVector | None = None


@dataclass(frozen=True)
class SearchPlan:
    """How the index runs a query: which branches, how many candidates each, how they are fused."""

    mode: SearchMode = "hybrid"
    candidates: int = 100
    fusion: Fusion = "dbsf"

    def depth(self, limit: int) -> int:
        """Candidates each branch of a fused query brings: never fewer than the answer asks for."""
        return max(self.candidates, limit)

    def branches(self, vectors: QueryVectors) -> list[tuple[str, list[float] | SparseVector]]:
        """(vector name, query vector) for each branch the mode runs.

        A query of stop words only has no sparse terms: its lexical branch is dropped, so a hybrid search is a
        dense one and a sparse search finds nothing.
        """
        branches: list[tuple[str, list[float] | SparseVector]] = []
        if self.mode in ("dense", "hybrid"):
            branches.append((DENSE, vectors.dense))
        if self.mode in ("sparse", "hybrid") and vectors.sparse is not None and vectors.sparse.indices:
            branches.append((SPARSE, vectors.sparse))
        return branches
