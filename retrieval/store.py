"""The Qdrant store: chunks with their vectors, and one record per document.

Two collections. ``<name>`` holds a point per chunk (vector + text + metadata, including the
groups that may read it). ``<name>_documents`` holds a vector-less point per document: its
path, content hash, groups and chunk count. The document record is written last, after all
its chunks, so it doubles as the commit marker: before the chunks go in, the record is put
with status "writing"; only after them with status "complete". A run killed halfway leaves a
"writing" record, and the next run redoes that document and sweeps its stale chunks. Ids are
derived from the document id and the chunk number, so redoing overwrites, never duplicates.
"""

import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llama_index.core.schema import NodeWithScore, TextNode
from qdrant_client import QdrantClient, models

from retrieval.access import ADMIN_GROUP, access_filter
from retrieval.settings import RetrievalSettings

_ID_NAMESPACE = uuid.UUID("5b0c1f8e-7f9a-4f4e-9a59-8d4b2f7a1c30")
DENSE = "dense"
COMPLETE = "complete"
WRITING = "writing"
DELETING = "deleting"


class StoreLockedError(RuntimeError):
    pass


def chunk_point_id(doc_id: str, chunk: int) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{doc_id}/{chunk}"))


def _document_point_id(doc_id: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, doc_id))


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

    @classmethod
    def from_payload(cls, payload: dict) -> "DocumentRecord":
        return cls(**{**payload, "groups": tuple(payload["groups"])})


def open_client(settings: RetrievalSettings) -> QdrantClient:
    if settings.qdrant_url:
        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return QdrantClient(url=settings.qdrant_url, api_key=api_key)
    if settings.qdrant_path in (None, ":memory:"):
        return QdrantClient(location=":memory:")
    path = Path(settings.qdrant_path)
    path.mkdir(parents=True, exist_ok=True)
    try:
        return QdrantClient(path=str(path))
    except RuntimeError as exc:
        if "already accessed" not in str(exc):
            raise
        raise StoreLockedError(
            f"the embedded store at {path} is open in another process, and embedded mode allows one "
            "process at a time: stop the other process (the portal, the API or another `assistant` "
            "command), or run a Qdrant server and set ASSISTANT_QDRANT_URL"
        ) from None


class ChunkStore:
    def __init__(self, settings: RetrievalSettings, dimension: int):
        self.client = open_client(settings)
        self.chunks = settings.collection
        self.documents = f"{settings.collection}_documents"
        self._ensure_collections(dimension, server=bool(settings.qdrant_url))

    def _ensure_collections(self, dimension: int, server: bool) -> None:
        if not self.client.collection_exists(self.chunks):
            self.client.create_collection(
                self.chunks,
                vectors_config={DENSE: models.VectorParams(size=dimension, distance=models.Distance.COSINE)},
            )
        else:
            existing = self.client.get_collection(self.chunks).config.params.vectors[DENSE].size
            if existing != dimension:
                raise ValueError(
                    f"collection {self.chunks!r} holds {existing}-d vectors but the embedding model makes "
                    f"{dimension}-d ones: use the model the store was built with, or a new collection name"
                )
        if not self.client.collection_exists(self.documents):
            self.client.create_collection(self.documents, vectors_config={})
        # Every read filters on groups and every write on doc_id: a server indexes both (embedded
        # mode scans and only warns that indexes have no effect there).
        for collection in (self.chunks, self.documents) if server else ():
            for key in ("doc_id", "groups"):
                self.client.create_payload_index(collection, key, models.PayloadSchemaType.KEYWORD)

    def close(self) -> None:
        self.client.close()

    # --- documents -------------------------------------------------------------------------

    def get_document(self, doc_id: str) -> DocumentRecord | None:
        found = self.client.retrieve(self.documents, [_document_point_id(doc_id)], with_payload=True)
        return DocumentRecord.from_payload(found[0].payload) if found else None

    def put_document(self, record: DocumentRecord) -> None:
        self.put_documents([record])

    def put_documents(self, records: list[DocumentRecord]) -> None:
        points = [
            models.PointStruct(
                id=_document_point_id(r.doc_id), vector={}, payload={**asdict(r), "groups": list(r.groups)}
            )
            for r in records
        ]
        if points:
            self.client.upsert(self.documents, points, wait=True)

    def list_documents(self, reader_groups: Iterable[str]) -> list[DocumentRecord]:
        records, offset = [], None
        while True:
            points, offset = self.client.scroll(
                self.documents, scroll_filter=access_filter(reader_groups), limit=256, offset=offset
            )
            records.extend(DocumentRecord.from_payload(p.payload) for p in points)
            if offset is None:
                return sorted(records, key=lambda r: r.path)

    def all_documents(self) -> list[DocumentRecord]:
        return self.list_documents([ADMIN_GROUP])

    def set_groups(self, record: DocumentRecord, groups: tuple[str, ...]) -> None:
        # Chunks first, record last: a crash in between leaves the old record, so the next run
        # sees the groups differ and does this again.
        self.client.set_payload(self.chunks, {"groups": list(groups)}, points=self._of_document(record.doc_id))
        record.groups = groups
        self.put_document(record)

    def delete_document(self, record: DocumentRecord) -> None:
        record.status = DELETING
        self.put_document(record)
        self.client.delete(self.chunks, self._of_document(record.doc_id), wait=True)
        self.client.delete(self.documents, [_document_point_id(record.doc_id)], wait=True)

    # --- chunks ----------------------------------------------------------------------------

    def upsert_chunks(self, nodes: list[TextNode]) -> None:
        points = [
            models.PointStruct(
                id=node.id_, vector={DENSE: node.embedding}, payload={**node.metadata, "text": node.text}
            )
            for node in nodes
        ]
        self.client.upsert(self.chunks, points, wait=True)

    def remove_stale_chunks(self, doc_id: str, content_hash: str) -> None:
        """Drops the chunks of an earlier version of the document (including any beyond the new count)."""
        stale = models.Filter(
            must=[_match("doc_id", doc_id)],
            must_not=[_match("content_hash", content_hash)],
        )
        self.client.delete(self.chunks, models.FilterSelector(filter=stale), wait=True)

    def count_chunks(self) -> int:
        return self.client.count(self.chunks, exact=True).count

    def search(self, vector: list[float], reader_groups: Iterable[str], k: int) -> list[NodeWithScore]:
        """Nearest chunks the reader may see; the access filter is part of the query itself."""
        response = self.client.query_points(
            self.chunks,
            query=vector,
            using=DENSE,
            query_filter=access_filter(reader_groups),
            limit=k,
            with_payload=True,
        )
        return [_to_node(point) for point in response.points]

    def _of_document(self, doc_id: str) -> models.FilterSelector:
        return models.FilterSelector(filter=models.Filter(must=[_match("doc_id", doc_id)]))


def _match(key: str, value: str) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _to_node(point: models.ScoredPoint) -> NodeWithScore:
    payload = dict(point.payload)
    text = payload.pop("text")
    return NodeWithScore(node=TextNode(id_=str(point.id), text=text, metadata=payload), score=point.score)
