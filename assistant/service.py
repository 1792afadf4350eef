"""The Assistant: the one object the CLI, the portal and the HTTP API talk to."""

import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Self

from assistant import extractive
from assistant.settings import Settings
from assistant.types import Answer, DocumentInfo, Source, User
from model.generators import Generator
from model.generators import build as build_generator
from model.prompt import Passage, build_prompt, passage_header
from retrieval import ChunkStore, DocumentRecord, Ingestor, IngestReport
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
        # Built on first use: loading a model takes seconds to minutes, and a command that only ingests needs none.
        self._generator: Generator | None = None
        self._generator_lock = threading.Lock()

    def close(self) -> None:
        close_generator = getattr(self._generator, "close", None)
        if close_generator is not None:
            close_generator()
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
        return [_to_info(record) for record in self.store.list_documents(user.groups)]

    def delete(self, path_or_doc_id: str | Path) -> DocumentInfo:
        """Removes a document and all its chunks, named by its id or by its path."""
        key = str(path_or_doc_id)
        record = self.store.get_document(key) or self.store.get_document(document_id(Path(key).expanduser()))
        if record is None:
            raise DocumentNotFound(f"no document with id or path {key!r}: `assistant documents` lists them")
        self.store.delete_document(record)
        return _to_info(record)

    # --- questions -------------------------------------------------------------------------

    def search(self, query: str, user: User, k: int = 10) -> list[Source]:
        return self._search(self._embed_query(query), user, k)

    def _embed_query(self, query: str) -> list[float]:
        if not query or not query.strip():
            raise ValueError("the query is empty")
        return self.embedder.embed([query])[0]

    def _search(self, vector: list[float], user: User, k: int) -> list[Source]:
        return [_to_source(hit) for hit in self.store.search(vector, user.groups, k)]

    def ask(self, question: str, user: User, k: int = 5) -> Answer:
        *_, answer = self.stream(question, user, k)
        return answer

    @property
    def generator(self) -> Generator | None:
        """The configured generator, built (its model loaded) once, on first use; None for extractive answers."""
        if self.settings.generator == "extractive":
            return None
        with self._generator_lock:  # two first questions at once must not load the model twice
            if self._generator is None:
                self._generator = build_generator(self.settings)
        return self._generator

    def stream(self, question: str, user: User, k: int = 5) -> Iterator[str | Answer]:
        """Yields the answer's text in pieces as it is produced, then the whole Answer."""
        started = time.perf_counter()
        question_vector = self._embed_query(question)
        sources = self._search(question_vector, user, k)
        retrieved = time.perf_counter()
        # No source the user may read means nothing to answer from: the model is not asked, so it cannot answer
        # from what it learned elsewhere (or from documents an adapter was trained on).
        generator = self.generator if sources else None
        first_piece = None
        if generator is None:
            text = extractive.compose(question_vector, sources, self.embedder.embed)
            yield from text.splitlines(keepends=True)
            model, adapter = EXTRACTIVE_MODEL, None
        else:
            prompt = build_prompt(question, [Passage(passage_header(s.path, s.location), s.text) for s in sources])
            pieces = []
            for piece in generator.stream(prompt):
                first_piece = first_piece or time.perf_counter()
                pieces.append(piece)
                yield piece
            text = "".join(pieces).strip()
            model, adapter = generator.name, generator.adapter
        done = time.perf_counter()
        timings = {
            "retrieve_ms": round((retrieved - started) * 1000, 1),
            "generate_ms": round((done - retrieved) * 1000, 1),
            "total_ms": round((done - started) * 1000, 1),
        }
        if first_piece is not None:
            timings["first_token_ms"] = round((first_piece - started) * 1000, 1)
        yield Answer(text=text, sources=sources, model=model, timings=timings, adapter=adapter)


def _to_info(record: DocumentRecord) -> DocumentInfo:
    return DocumentInfo(
        record.doc_id, record.path, record.groups, record.chunks, record.size, record.modified, record.ingested_at
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
