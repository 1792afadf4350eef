"""The Assistant: the one object the CLI, the portal and the HTTP API talk to."""

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self

from assistant import extractive
from assistant.settings import Settings
from assistant.types import Answer, DocumentInfo, Source, User
from retrieval import ChunkStore, Ingestor, IngestReport
from retrieval.chunking import Chunker
from retrieval.embedding import LocalEmbedding
from retrieval.ingest import document_id

EXTRACTIVE_MODEL = "extractive"


class DocumentNotFound(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class Assistant:
    def __init__(self, settings: Settings | None = None, embedder: LocalEmbedding | None = None):
        self.settings = settings or Settings()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        # The embedder may be shared (tests, one portal process with several stores).
        self.embedder = embedder or LocalEmbedding(self.settings.embedding_model, self.settings.embed_batch_size)
        self.store = ChunkStore(self.settings, self.embedder.dimension)
        chunker = Chunker(self.embedder.count_tokens, self.settings.chunk_size, self.settings.chunk_overlap)
        self.ingestor = Ingestor(self.store, self.embedder, chunker, self.settings.embed_batch_size)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- documents -------------------------------------------------------------------------

    def ingest(
        self, paths: Iterable[str | Path], groups: Iterable[str] = (), prune: bool = False, progress: bool = False
    ) -> IngestReport:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        return self.ingestor.ingest(paths, groups=groups, prune=prune, progress=progress)

    def documents(self, user: User) -> list[DocumentInfo]:
        return [
            DocumentInfo(r.doc_id, r.path, r.groups, r.chunks, r.size, r.modified, r.ingested_at)
            for r in self.store.list_documents(user.groups)
        ]

    def delete(self, path_or_doc_id: str | Path) -> DocumentInfo:
        """Removes a document and all its chunks, named by its id or by its path."""
        key = str(path_or_doc_id)
        record = self.store.get_document(key) or self.store.get_document(document_id(Path(key).expanduser()))
        if record is None:
            raise DocumentNotFound(f"no document with id or path {key!r}: `assistant documents` lists them")
        self.store.delete_document(record)
        return DocumentInfo(
            record.doc_id, record.path, record.groups, record.chunks, record.size, record.modified, record.ingested_at
        )

    # --- questions -------------------------------------------------------------------------

    def search(self, query: str, user: User, k: int = 10) -> list[Source]:
        if not query or not query.strip():
            raise ValueError("the query is empty")
        vector = self.embedder.embed([query])[0]
        return [_to_source(hit) for hit in self.store.search(vector, user.groups, k)]

    def ask(self, question: str, user: User, k: int = 5) -> Answer:
        *_, answer = self.stream(question, user, k)
        return answer

    def stream(self, question: str, user: User, k: int = 5) -> Iterator[str | Answer]:
        """Yields the answer's text in pieces as it is produced, then the whole Answer."""
        started = time.perf_counter()
        sources = self.search(question, user, k)
        retrieved = time.perf_counter()
        text = extractive.compose(question, sources, self.embedder.embed)
        yield from text.splitlines(keepends=True)
        done = time.perf_counter()
        yield Answer(
            text=text,
            sources=sources,
            model=EXTRACTIVE_MODEL,
            timings={
                "retrieve_ms": round((retrieved - started) * 1000, 1),
                "generate_ms": round((done - retrieved) * 1000, 1),
                "total_ms": round((done - started) * 1000, 1),
            },
        )


def _to_source(hit) -> Source:
    meta = hit.node.metadata
    return Source(
        doc_id=meta["doc_id"],
        path=meta["path"],
        page=meta.get("page"),
        chunk=meta["chunk"],
        score=float(hit.score),
        text=hit.node.text,
        heading=meta.get("heading"),
    )
