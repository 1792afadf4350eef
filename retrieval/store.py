"""The Qdrant store: chunks with their vectors, and one record per document.

Two collections. ``<name>`` holds a point per chunk (a dense and a sparse BM25 vector + text + metadata,
including the groups that may read it). ``<name>_documents`` holds a vector-less point per document: its
path, content hash, groups and chunk count; and one point that names the embedding model the chunks' vectors
came from, so that a store is never searched or extended with another model's vectors. The document record is written last, after all
its chunks, so it doubles as the commit marker: before the chunks go in, the record is put
with status "writing"; only after them with status "complete". A run killed halfway leaves a
"writing" record, and the next run redoes that document and sweeps its stale chunks. Ids are
derived from the document id and the chunk number, so redoing overwrites, never duplicates.

Where the collections live: a Qdrant server when ``qdrant_url`` is set (qdrant-client); an embedded
qdrant-edge shard per collection under ``qdrant_path`` otherwise; ``:memory:`` is a throw-away
qdrant-client local-mode store.
"""

import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llama_index.core.schema import NodeWithScore, TextNode
from qdrant_client import QdrantClient

from retrieval.access import ADMIN_GROUP, access_filter
from retrieval.edge_index import EdgeIndex, EdgeLockedError
from retrieval.embedding_models import EARLIER_DEFAULT, bundled_names
from retrieval.points import QueryVectors, SearchPlan, SparseVector, StoredPoint, Where
from retrieval.server_index import ServerIndex, require_idf_corpus
from retrieval.settings import RetrievalSettings

_ID_NAMESPACE = uuid.UUID("5b0c1f8e-7f9a-4f4e-9a59-8d4b2f7a1c30")
COMPLETE = "complete"
WRITING = "writing"
DELETING = "deleting"


class StoreLockedError(RuntimeError):
    pass


class StoreNotFound(FileNotFoundError):
    pass


class EmbedderMismatch(RuntimeError):
    """The store's vectors come from another embedding model than the one configured: searching them with this
    one's query vectors, or adding this one's vectors beside them, would rank by noise."""


def chunk_point_id(doc_id: str, chunk: int) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{doc_id}/{chunk}"))


def _document_point_id(doc_id: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, doc_id))


# In the documents collection, beside the records; it has no doc_id, so no listing mistakes it for a document.
_STORE_POINT_ID = str(uuid.uuid5(_ID_NAMESPACE, "store"))


@dataclass
class DocumentRecord:
    doc_id: str
    path: str
    content_hash: str
    groups: tuple[str, ...]
    chunks: int
    size: int
    modified: str
    ingested_at: str
    status: str = field(default=COMPLETE)
    redacted: bool = False  # whether personal data was replaced in its chunks (redact_pii when it was ingested)
    # What the document calls itself and the period it states (retrieval.document_info); None for documents
    # stored before these were read.
    title: str | None = None
    period: str | None = None

    @classmethod
    def from_payload(cls, payload: dict) -> "DocumentRecord":
        return cls(**{**payload, "groups": tuple(payload["groups"])})


class ChunkStore:
    def __init__(self, settings: RetrievalSettings, dimension: int | None, embedder: str | None = None):
        """Opens (creating where absent) the store the settings name.

        ``dimension`` None opens an existing store as it is, for readers that make no vectors (fine-tuning's
        data preparation); it raises StoreNotFound where there is none. ``embedder`` names the model whose vectors
        this process searches and writes; None (readers that make no vectors) skips the check.
        """
        self.embedder = embedder
        self.plan = SearchPlan(settings.search_mode, settings.search_candidates, settings.fusion)
        self._client: QdrantClient | None = None
        if settings.qdrant_url or settings.qdrant_path in (None, ":memory:"):
            self.chunks, self.documents = self._open_server(settings, dimension)
        else:
            self.chunks, self.documents = self._open_edge(Path(settings.qdrant_path), settings.collection, dimension)
        if self.plan.mode != "dense" and not self.chunks.has_sparse:
            self.close()
            raise ValueError(
                f"collection {settings.collection!r} was built without sparse vectors, which {self.plan.mode} search "
                "needs: re-ingest into a new collection (ASSISTANT_COLLECTION), or set ASSISTANT_SEARCH_MODE=dense"
            )
        self.vectors_from = self._vectors_from() if embedder is not None else None

    def _open_server(self, settings: RetrievalSettings, dimension: int | None) -> tuple[ServerIndex, ServerIndex]:
        if settings.qdrant_url:
            api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
            # Only the configured host: qdrant-client hands extra arguments to its httpx client, where trust_env=False
            # ignores proxy variables (a proxy is another host that would see every chunk); redirects are not
            # followed (httpx's default, stated). Its compatibility check is off because it asks the server through
            # httpx.get with the environment's proxies, API key included. REST only: no second (gRPC) port.
            self._client = QdrantClient(
                url=settings.qdrant_url,
                api_key=api_key,
                prefer_grpc=False,
                check_compatibility=False,
                trust_env=False,
                follow_redirects=False,
            )
        else:
            self._client = QdrantClient(location=":memory:")
        server = bool(settings.qdrant_url)
        try:
            if server and self.plan.mode != "dense":  # before anything is created on a server that cannot serve it
                require_idf_corpus(self._client, settings.qdrant_url)
            chunks = ServerIndex(self._client, settings.collection, dimension, vectors=True, server=server)
            documents = ServerIndex(
                self._client, f"{settings.collection}_documents", None, vectors=False, server=server
            )
        except FileNotFoundError:
            self._client.close()
            raise StoreNotFound(f"no collection {settings.collection!r} at {settings.qdrant_url}") from None
        except ValueError:
            self._client.close()
            raise
        return chunks, documents

    @staticmethod
    def _open_edge(path: Path, collection: str, dimension: int | None) -> tuple[EdgeIndex, EdgeIndex]:
        if (path / "meta.json").is_file():
            # qdrant-client's local-mode layout, which the embedded store used before it moved to qdrant-edge.
            raise ValueError(
                f"the store at {path} is in an earlier embedded format: move it aside and ingest the documents "
                "again (`assistant ingest`), which rebuilds it with hybrid search"
            )
        if dimension is None and not (path / collection).is_dir():
            raise StoreNotFound(f"no store at {path}")
        path.mkdir(parents=True, exist_ok=True)
        opened = []
        try:
            opened.append(EdgeIndex(path / collection, dimension, vectors=True))
            opened.append(EdgeIndex(path / f"{collection}_documents", dimension, vectors=False))
        except Exception as exc:
            for index in opened:  # the shard that did open would otherwise stay locked by this process
                index.close()
            if not isinstance(exc, EdgeLockedError):
                raise
            raise StoreLockedError(
                f"the embedded store at {path} is open in another process, and embedded mode allows one "
                "process at a time: stop the other process (the portal, the API or another `assistant` "
                "command), or run a Qdrant server and set ASSISTANT_QDRANT_URL"
            ) from None
        return opened[0], opened[1]

    # --- the embedding model ---------------------------------------------------------------

    def _vectors_from(self) -> str | None:
        """The model the stored vectors came from; None for a store without chunks (any model may start it)."""
        found = self.documents.retrieve([_STORE_POINT_ID])
        if found and found[0].get("embedder"):
            return found[0]["embedder"]
        if not self.chunks.count():
            return None
        # Written before the model was recorded: by the default of the time, or by the operator's own directory.
        return self.embedder if self.embedder not in bundled_names() else EARLIER_DEFAULT

    def record_embedder(self, name: str) -> None:
        """Names the model every stored vector now comes from (after a re-embedding, or with the first chunks)."""
        self.documents.upsert([StoredPoint(_STORE_POINT_ID, {"embedder": name})])
        self.vectors_from = name

    def require_embedder(self) -> None:
        """Refuses to search or write while the stored vectors come from another model than the configured one."""
        if self.embedder is None or self.vectors_from in (None, self.embedder):
            return
        raise EmbedderMismatch(
            f"the store's vectors were made by the embedding model {self.vectors_from}, and the assistant is set to "
            f"{self.embedder}: run `assistant reembed` to re-embed every stored chunk with {self.embedder} (from "
            f"the text the store keeps), or set ASSISTANT_EMBEDDING_MODEL={self.vectors_from}"
        )

    def close(self) -> None:
        self.chunks.close()
        self.documents.close()
        if self._client is not None:
            self._client.close()

    # --- documents -------------------------------------------------------------------------

    def get_document(self, doc_id: str) -> DocumentRecord | None:
        found = self.documents.retrieve([_document_point_id(doc_id)])
        return DocumentRecord.from_payload(found[0]) if found else None

    def put_document(self, record: DocumentRecord) -> None:
        self.put_documents([record])

    def put_documents(self, records: list[DocumentRecord]) -> None:
        points = [StoredPoint(_document_point_id(r.doc_id), {**asdict(r), "groups": list(r.groups)}) for r in records]
        if points:
            self.documents.upsert(points)

    def list_documents(self, reader_groups: Iterable[str]) -> list[DocumentRecord]:
        records, offset = [], None
        where = access_filter(reader_groups)
        while True:
            points, offset = self.documents.scroll(where, limit=256, offset=offset)
            records.extend(DocumentRecord.from_payload(payload) for _, payload in points if "doc_id" in payload)
            if offset is None:
                return sorted(records, key=lambda r: r.path)

    def all_documents(self) -> list[DocumentRecord]:
        return self.list_documents([ADMIN_GROUP])

    def set_groups(self, record: DocumentRecord, groups: tuple[str, ...]) -> None:
        # Chunks first, record last: a crash in between leaves the old record, so the next run
        # sees the groups differ and does this again.
        self.chunks.set_payload(Where.match("doc_id", record.doc_id), {"groups": list(groups)})
        record.groups = groups
        self.put_document(record)

    def delete_document(self, record: DocumentRecord) -> None:
        record.status = DELETING
        self.put_document(record)
        self.remove_chunks(record.doc_id)
        self.documents.delete_ids([_document_point_id(record.doc_id)])

    # --- chunks ----------------------------------------------------------------------------

    def upsert_chunks(self, nodes: list[TextNode], sparse: list[SparseVector], *, reembedding: bool = False) -> None:
        """Each node with its dense vector (``node.embedding``) and its sparse one, in one point.

        ``reembedding``: the caller is replacing every stored vector with the configured model's (Ingestor.reembed),
        so the vectors already there may come from another one.
        """
        if not reembedding:
            self.require_embedder()
        if self.vectors_from is None and self.embedder is not None:
            self.record_embedder(self.embedder)
        self.chunks.upsert(
            [
                StoredPoint(node.id_, {**node.metadata, "text": node.text}, node.embedding, vector)
                for node, vector in zip(nodes, sparse, strict=True)
            ]
        )

    def remove_chunks(self, doc_id: str) -> None:
        self.chunks.delete(Where.match("doc_id", doc_id))

    def remove_stale_chunks(self, doc_id: str, content_hash: str) -> None:
        """Drops the chunks of an earlier version of the document (including any beyond the new count)."""
        self.chunks.delete(Where.match("doc_id", doc_id).excluding("content_hash", content_hash))

    def count_chunks(self) -> int:
        return self.chunks.count()

    def scroll_chunks(self, limit: int = 256, offset: str | None = None) -> tuple[list[TextNode], str | None]:
        points, offset = self.chunks.scroll(None, limit, offset)
        return [_to_node(point_id, payload) for point_id, payload in points], offset

    def readable_document(self, doc_id: str, reader_groups: Iterable[str]) -> DocumentRecord | None:
        """The document, if this reader may read it; None as well where it does not exist, so a reader outside its
        groups cannot tell the two apart."""
        where = Where.match("doc_id", doc_id) & access_filter(reader_groups)
        points, _ = self.documents.scroll(where, limit=1, offset=None)
        return DocumentRecord.from_payload(points[0][1]) if points else None

    def get_chunk(self, point_id: str) -> TextNode | None:
        found = self.chunks.retrieve([point_id])
        return _to_node(point_id, found[0]) if found else None

    def search(self, query: QueryVectors, reader_groups: Iterable[str], k: int) -> list[NodeWithScore]:
        """The chunks the reader may see that best match; the access filter is part of every branch of the query.

        It also bounds the BM25 statistics (N, and each query term's document frequency): counted over the chunks
        this reader may read, so that neither which chunks match nor their scores depend on text the reader cannot
        see (points.idf_corpus).
        """
        self.require_embedder()
        where = access_filter(reader_groups)
        hits = self.chunks.query(query, where, k, self.plan, idf_scope=where)
        return [NodeWithScore(node=_to_node(hit.id, hit.payload), score=hit.score) for hit in hits]


def _to_node(point_id: str, payload: dict) -> TextNode:
    payload = dict(payload)
    text = payload.pop("text")
    return TextNode(id_=point_id, text=text, metadata=payload)
