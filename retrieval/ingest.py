"""Ingestion: paths -> documents -> chunks -> vectors -> store, incremental and idempotent.

A document's id is derived from its absolute path and its content is identified by a hash,
so a second run skips what is unchanged, replaces what changed (leaving no stale chunks) and,
after a crash, finishes what the first run left undone. A file that fails to load is reported
and the rest of the batch goes on; whatever the store already held for it is kept.
"""

import hashlib
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from llama_index.core.schema import TextNode
from tqdm import tqdm

from retrieval.access import validate_groups
from retrieval.chunking import Chunker
from retrieval.embedding import LocalEmbedding
from retrieval.loaders import SUPPORTED_SUFFIXES, LoadError, load
from retrieval.sparse import Bm25Encoder
from retrieval.store import COMPLETE, WRITING, ChunkStore, DocumentRecord, chunk_point_id


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    # Files met while walking a folder that no loader reads (images, archives, ...): reported,
    # not failed, so one stray file does not make a whole folder's ingestion "fail".
    skipped: list[Failure] = field(default_factory=list)
    chunks: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        return (
            f"added {len(self.added)}, updated {len(self.updated)}, unchanged {len(self.unchanged)}, "
            f"removed {len(self.removed)}, failed {len(self.failed)}, skipped {len(self.skipped)} "
            f"({self.chunks} chunks written in {self.seconds:.1f} s)"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def document_id(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]


@dataclass
class _Pending:
    record: DocumentRecord
    nodes: list[TextNode]
    previous: DocumentRecord | None

    @property
    def is_new(self) -> bool:
        """New to the reader: never stored, or stored only partly by a run that was killed."""
        return self.previous is None or self.previous.status != COMPLETE


class Ingestor:
    def __init__(
        self,
        store: ChunkStore,
        embedder: LocalEmbedding,
        sparse: Bm25Encoder,
        chunker: Chunker,
        batch_size: int = 64,
    ):
        self.store = store
        self.embedder = embedder
        self.sparse = sparse
        self.chunker = chunker
        self.batch_size = batch_size

    def ingest(
        self, paths: Iterable[str | Path], groups: Iterable[str] = (), prune: bool = False, progress: bool = False
    ) -> IngestReport:
        groups = validate_groups(groups)
        started = time.perf_counter()
        report = IngestReport()
        roots = [Path(p).expanduser() for p in paths]
        files = self._expand(roots, prune, report)
        pending: list[_Pending] = []
        for path in tqdm(files, desc="ingesting", unit="file", disable=not progress):
            item = self._prepare(path, groups, report)
            if item is None:
                continue
            pending.append(item)
            if sum(len(p.nodes) for p in pending) >= self.batch_size:
                self._write(pending, report)
                pending = []
        self._write(pending, report)
        if prune:
            self._prune([r for r in roots if r.is_dir()], report)
        report.seconds = time.perf_counter() - started
        return report

    def _expand(self, roots: list[Path], prune: bool, report: IngestReport) -> list[Path]:
        files = []
        for root in roots:
            if root.is_dir():
                for path in sorted(root.rglob("*")):
                    relative = path.relative_to(root).parts
                    if not path.is_file() or any(part.startswith(".") for part in relative):
                        continue
                    if path.suffix.lower() in SUPPORTED_SUFFIXES:
                        files.append(path)
                    else:
                        report.skipped.append(Failure(str(path), f"unsupported file type {path.suffix or '(none)'!r}"))
            elif root.is_file():
                files.append(root)
            elif prune and (record := self.store.get_document(document_id(root))):
                self.store.delete_document(record)
                report.removed.append(record.path)
            else:
                report.failed.append(Failure(str(root), "no such file or directory"))
        return files

    def _prepare(self, path: Path, groups: tuple[str, ...], report: IngestReport) -> _Pending | None:
        """Loads and chunks one file unless the store already holds this exact version."""
        try:
            content = path.read_bytes()
            stat = path.stat()
        except OSError as exc:
            report.failed.append(Failure(str(path), f"cannot read the file: {exc.strerror or exc}"))
            return None
        doc_id = document_id(path)
        content_hash = hashlib.sha256(content).hexdigest()
        existing = self.store.get_document(doc_id)
        if existing and existing.status == COMPLETE and existing.content_hash == content_hash:
            if existing.groups == groups:
                report.unchanged.append(existing.path)
            else:
                self.store.set_groups(existing, groups)
                report.updated.append(existing.path)
            return None
        try:
            sections = load(path)
        except LoadError as exc:
            report.failed.append(Failure(str(path), str(exc)))
            return None
        except Exception as exc:  # noqa: BLE001 - a loader bug must cost one file, never the batch
            report.failed.append(Failure(str(path), f"unexpected {type(exc).__name__} while reading: {exc}"))
            return None
        chunks = self.chunker.split(sections)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        record = DocumentRecord(
            doc_id=doc_id,
            path=str(path.resolve()),
            content_hash=content_hash,
            groups=groups,
            chunks=len(chunks),
            size=stat.st_size,
            modified=datetime.fromtimestamp(stat.st_mtime, UTC).isoformat(timespec="seconds"),
            ingested_at=now,
        )
        nodes = [
            TextNode(
                id_=chunk_point_id(doc_id, number),
                text=text,
                metadata={
                    "doc_id": doc_id,
                    "path": record.path,
                    "page": where.get("page"),
                    "heading": where.get("heading"),
                    "chunk": number,
                    "content_hash": content_hash,
                    "groups": list(groups),
                    "ingested_at": now,
                },
            )
            for number, (text, where) in enumerate(chunks)
        ]
        return _Pending(record, nodes, previous=existing)

    def _write(self, pending: list[_Pending], report: IngestReport) -> None:
        """Embeds a batch of documents' chunks in one call, then commits the documents together."""
        if not pending:
            return
        # Marked first: from here on a crash leaves a record that tells the next run to redo it.
        self.store.put_documents([replace(item.record, status=WRITING) for item in pending])
        nodes = [node for item in pending for node in item.nodes]
        texts = [embedding_text(node.text, node.metadata.get("heading")) for node in nodes]
        for node, vector in zip(nodes, self.embedder.embed(texts), strict=True):
            node.embedding = vector
        # The lexical vector reads the same text as the dense one, heading included.
        self.store.upsert_chunks(nodes, self.sparse.documents(texts))
        for item in pending:
            # A document without a record never had chunks written (the mark precedes them),
            # so only known documents need the sweep, which scans the collection in embedded mode.
            if item.previous is not None:
                self.store.remove_stale_chunks(item.record.doc_id, item.record.content_hash)
            (report.added if item.is_new else report.updated).append(item.record.path)
            report.chunks += len(item.nodes)
        self.store.put_documents([item.record for item in pending])

    def _prune(self, roots: list[Path], report: IngestReport) -> None:
        resolved = [root.resolve() for root in roots]
        for record in self.store.all_documents():
            path = Path(record.path)
            if any(path.is_relative_to(root) for root in resolved) and not path.exists():
                self.store.delete_document(record)
                report.removed.append(record.path)


def embedding_text(text: str, heading: str | None) -> str:
    """What the embedder, BM25 and the reranker read for a chunk: the heading tells them what a terse passage is
    about ("27 days" under "Annual leave")."""
    return f"{heading}\n{text}" if heading else text
