"""One collection of a Qdrant server (or cluster) through qdrant-client.

Also the throw-away in-memory store (``:memory:``): qdrant-client's local mode runs the same client calls as a
server does, which is how this path is exercised where no server runs (tests, a quick try).
"""

import re

from qdrant_client import QdrantClient, models

from retrieval.points import (
    DENSE,
    RRF_K,
    SPARSE,
    Hit,
    QueryVectors,
    SearchPlan,
    SparseVector,
    StoredPoint,
    Where,
    idf_corpus,
)

_BATCH = 256
# The first Qdrant release that takes a per-query IDF corpus (qdrant/qdrant#9661), which keeps a reader's BM25
# statistics to what they may read (points.idf_corpus).
IDF_CORPUS_SINCE = (1, 19)


def require_idf_corpus(client: QdrantClient, url: str) -> None:
    """Refuses a server too old to scope BM25 statistics: it would not apply the corpus (or would reject every
    sparse query), and whole-collection statistics let a reader's scores reveal words of documents they cannot
    read."""
    version = client.info().version
    found = re.match(r"v?(\d+)\.(\d+)", version or "")
    if found and (int(found[1]), int(found[2])) >= IDF_CORPUS_SINCE:
        return
    since = ".".join(map(str, IDF_CORPUS_SINCE))
    raise ValueError(
        f"the Qdrant server at {url} is version {version!r}, and lexical (sparse and hybrid) search needs {since} or "
        f"later to keep each reader's BM25 statistics to what they may read: upgrade the server (docker-compose.yml "
        f"names its image), or set ASSISTANT_SEARCH_MODE=dense until then"
    )


class ServerIndex:
    def __init__(self, client: QdrantClient, name: str, dimension: int | None, vectors: bool, server: bool):
        """Opens collection ``name``, creating it when absent (see EdgeIndex for the arguments)."""
        self.client = client
        self.name = name
        if not client.collection_exists(name):
            if vectors and dimension is None:
                raise FileNotFoundError(f"no collection {name!r}")
            client.create_collection(
                name,
                vectors_config={DENSE: models.VectorParams(size=dimension, distance=models.Distance.COSINE)}
                if vectors
                else {},
                # IDF applied at query time, so documents store plain BM25 term weights; each query names the corpus
                # the statistics come from (the reader's access scope, see points.idf_corpus).
                sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)}
                if vectors
                else None,
            )
        elif vectors and dimension is not None:
            existing = client.get_collection(name).config.params.vectors[DENSE].size
            if existing != dimension:
                raise ValueError(
                    f"collection {name!r} holds {existing}-d vectors but the embedding model makes {dimension}-d "
                    "ones: use the model the store was built with, or a new collection name"
                )
        params = client.get_collection(name).config.params
        self.has_sparse = bool(params.sparse_vectors and SPARSE in params.sparse_vectors)
        # A server indexes the keys every read and write filters on; local mode scans and only warns.
        for key in ("doc_id", "groups") if server else ():
            client.create_payload_index(name, key, models.PayloadSchemaType.KEYWORD)

    def close(self) -> None:
        pass  # the client is shared by the store's two collections and closed by the store

    def upsert(self, points: list[StoredPoint]) -> None:
        for start in range(0, len(points), _BATCH):
            batch = [_point(p) for p in points[start : start + _BATCH]]
            self.client.upsert(self.name, batch, wait=True)

    def retrieve(self, ids: list[str]) -> list[dict]:
        return [point.payload for point in self.client.retrieve(self.name, ids, with_payload=True)]

    def scroll(self, where: Where | None, limit: int, offset: str | None) -> tuple[list[tuple[str, dict]], str | None]:
        points, next_offset = self.client.scroll(self.name, scroll_filter=_as_filter(where), limit=limit, offset=offset)
        return [(str(p.id), p.payload) for p in points], (None if next_offset is None else str(next_offset))

    def set_payload(self, where: Where, payload: dict) -> None:
        self.client.set_payload(self.name, payload, points=models.FilterSelector(filter=_as_filter(where)), wait=True)

    def delete(self, where: Where) -> None:
        self.client.delete(self.name, models.FilterSelector(filter=_as_filter(where)), wait=True)

    def delete_ids(self, ids: list[str]) -> None:
        self.client.delete(self.name, ids, wait=True)

    def count(self, where: Where | None = None) -> int:
        return self.client.count(self.name, count_filter=_as_filter(where), exact=True).count

    def query(
        self, vectors: QueryVectors, where: Where | None, limit: int, plan: SearchPlan, idf_scope: Where | None
    ) -> list[Hit]:
        """``idf_scope``: the points the sparse branch's BM25 statistics count (points.idf_corpus)."""
        flt = _as_filter(where)
        branches = [(using, _vector(vector)) for using, vector in plan.branches(vectors)]
        if not branches:
            return []
        idf = models.SearchParams(idf=models.IdfCorpusParams(corpus=idf_corpus(idf_scope, models)))

        def params(using: str) -> models.SearchParams | None:
            # An IDF corpus applies to sparse vectors with the IDF modifier only (qdrant-edge refuses it elsewhere).
            return idf if using == SPARSE else None

        if len(branches) == 1:
            using, vector = branches[0]
            response = self.client.query_points(
                self.name,
                query=vector,
                using=using,
                query_filter=flt,
                search_params=params(using),
                limit=limit,
                with_payload=True,
            )
        else:
            depth = plan.depth(limit)
            fusion = (
                models.FusionQuery(fusion=models.Fusion.DBSF)
                if plan.fusion == "dbsf"
                else models.RrfQuery(rrf=models.Rrf(k=RRF_K))
            )
            response = self.client.query_points(
                self.name,
                prefetch=[
                    models.Prefetch(query=v, using=u, filter=flt, params=params(u), limit=depth) for u, v in branches
                ],
                query=fusion,
                query_filter=flt,
                limit=limit,
                with_payload=True,
            )
        return [Hit(str(p.id), p.score, p.payload) for p in response.points]


def _vector(vector: list[float] | SparseVector) -> list[float] | models.SparseVector:
    if isinstance(vector, SparseVector):
        return models.SparseVector(indices=vector.indices, values=vector.values)
    return vector


def _point(point: StoredPoint) -> models.PointStruct:
    vectors = {}
    if point.dense is not None:
        vectors[DENSE] = point.dense
    if point.sparse is not None and point.sparse.indices:
        vectors[SPARSE] = _vector(point.sparse)
    return models.PointStruct(id=point.id, vector=vectors, payload=point.payload)


def _as_filter(where: Where | None) -> models.Filter | None:
    return None if where is None else where.to_filter(models)
