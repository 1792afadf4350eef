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
