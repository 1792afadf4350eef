"""Ingestion: paths -> documents -> chunks -> vectors -> store, incremental and idempotent.

A document's id is derived from its absolute path and its content is identified by a hash,
so a second run skips what is unchanged, replaces what changed (leaving no stale chunks) and,
after a crash, finishes what the first run left undone. A file that fails to load is reported
and the rest of the batch goes on; whatever the store already held for it is kept.
"""

import hashlib
import stat
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from llama_index.core.schema import TextNode
from tqdm import tqdm

from retrieval.access import validate_groups
from retrieval.chunking import Chunker
from retrieval.document_info import describe
from retrieval.embedding import LocalEmbedding
from retrieval.files import NOT_REGULAR, Failure, changed_since, list_files, read_reason, sha256_file, shown
from retrieval.loaders import Limits, LoadError, load
from retrieval.loaders.guards import refuse_size
from retrieval.loaders.sections import HEADING_SEPARATOR
from retrieval.redaction import Redactor, redact_documents
from retrieval.sparse import Bm25Encoder
from retrieval.store import COMPLETE, WRITING, ChunkStore, DocumentRecord, chunk_point_id
from retrieval.tables import searchable


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
    # Personal data replaced before chunking (redact_pii), by kind: "email", "phone", "card", ...
    redacted: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        redacted = ", ".join(f"{count} {kind}" for kind, count in sorted(self.redacted.items()) if count)
        return (
            f"added {len(self.added)}, updated {len(self.updated)}, unchanged {len(self.unchanged)}, "
            f"removed {len(self.removed)}, failed {len(self.failed)}, skipped {len(self.skipped)} "
            f"({self.chunks} chunks written in {self.seconds:.1f} s)" + (f"; redacted {redacted}" if redacted else "")
        )

    def to_dict(self) -> dict:
        # asdict rebuilds a Counter from (kind, count) pairs, which counts the pairs themselves.
        return {**asdict(self), "redacted": dict(self.redacted)}


def document_id(path: Path) -> str:
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]


CHANGED = "changed while being read, so its text may not match its hash: ingest it again once nobody is writing it"


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
        redact_pii: bool = False,
        pii_region: str = "US",
        limits: Limits | None = None,
    ):
        self.store = store
        self.embedder = embedder
        self.sparse = sparse
        self.chunker = chunker
        self.batch_size = batch_size
        self.redactor = Redactor(pii_region) if redact_pii else None
        # What one file may cost (size on disk, characters of text); None: the loaders' defaults.
        self.limits = limits

    def ingest(
        self, paths: Iterable[str | Path], groups: Iterable[str] = (), prune: bool = False, progress: bool = False
    ) -> IngestReport:
        groups = validate_groups(groups)
        self.store.require_embedder()  # before anything is read: no file's vectors may join another model's
        started = time.perf_counter()
        report = IngestReport()
        roots = [Path(p).expanduser() for p in paths]
        listing = list_files(roots)
        report.failed += listing.failed
        report.skipped += listing.skipped
        for root, failure in listing.missing.items():
            if prune and (record := self.store.get_document(document_id(root))):
                self.store.delete_document(record)
                report.removed.append(record.path)
            else:
                report.failed.append(failure)
        files = listing.files
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

    def _prepare(self, path: Path, groups: tuple[str, ...], report: IngestReport) -> _Pending | None:
        """Loads and chunks one file unless the store already holds this exact version."""
        try:
            before = path.stat()
            if not stat.S_ISREG(before.st_mode):
                raise LoadError(NOT_REGULAR)
            # From the size alone: a file over the limit is never read, not even to hash it.
            refuse_size(before.st_size, self.limits)
            content_hash = sha256_file(path)
        except LoadError as exc:
            report.failed.append(Failure(shown(path), str(exc)))
            return None
        except OSError as exc:
            report.failed.append(Failure(shown(path), read_reason(exc)))
            return None
        doc_id = document_id(path)
        existing = self.store.get_document(doc_id)
        redacting = self.redactor is not None
        # Redaction switched on (or off) since this version was stored: its chunks hold the wrong text, so it is
        # read again, and the rewrite replaces every chunk (their content hash is the same; see _write).
        same = existing and existing.content_hash == content_hash and existing.redacted == redacting
        if same and existing.status == COMPLETE:
            if existing.groups == groups:
                report.unchanged.append(existing.path)
            else:
                self.store.set_groups(existing, groups)
                report.updated.append(existing.path)
            return None
        try:
            sections = load(path, self.limits)
        except LoadError as exc:
            report.failed.append(Failure(shown(path), str(exc)))
            return None
        except Exception as exc:  # noqa: BLE001 - a loader bug must cost one file, never the batch
            report.failed.append(Failure(shown(path), f"unexpected {type(exc).__name__} while reading: {exc}"))
            return None
        # The hash came from one read and the text from another: stored together, they must be of one version.
        if changed_since(path, before, content_hash):
            report.failed.append(Failure(shown(path), CHANGED))
            return None
        if self.redactor is not None:  # before chunking: nothing stored, embedded or searched holds the originals
            sections, found = redact_documents(sections, self.redactor)
            report.redacted += found
        info = describe(sections, path)
        # The document's line is read with every chunk, so it comes out of the chunk's budget; unless it is the
        # top heading the chunk was always read with (embedding_text then names it once).
        top = (sections[0].metadata.get("heading") or "").split(HEADING_SEPARATOR)[0] if sections else ""
        reserve = 0 if info.context == top else len(self.embedder.count_tokens(info.context))
        chunks = self.chunker.split(sections, reserve=reserve)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        record = DocumentRecord(
            doc_id=doc_id,
            path=str(path.resolve()),
            content_hash=content_hash,
            groups=groups,
            chunks=len(chunks),
            size=before.st_size,
            modified=datetime.fromtimestamp(before.st_mtime, UTC).isoformat(timespec="seconds"),
            ingested_at=now,
            redacted=redacting,
            title=info.title,
            period=info.period.label if info.period else None,
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
                    "table": bool(where.get("table")),
                    **info.payload(),
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
        for item in pending:
            # Same content read again (redaction switched): the stale-chunk sweep tells versions apart by content
            # hash, which has not changed, so the old chunks go first; the mark above covers a crash from here.
            if item.previous is not None and item.previous.content_hash == item.record.content_hash:
                self.store.remove_chunks(item.record.doc_id)
        nodes = [node for item in pending for node in item.nodes]
        texts = [embedding_text(node.text, node.metadata) for node in nodes]
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

    def reembed(self, progress: bool = False) -> int:
        """Gives every stored chunk this embedder's vectors, from the text and metadata the store keeps, so a change
        of embedding model needs no original file. The store names the new model only once all are done: a run
        cut short leaves it refusing searches as before, and running again starts over. Returns the chunks done."""
        done, offset = 0, None
        with tqdm(total=self.store.count_chunks(), desc="re-embedding", unit="chunk", disable=not progress) as bar:
            while True:
                nodes, offset = self.store.scroll_chunks(limit=self.batch_size * 4, offset=offset)
                texts = [embedding_text(node.text, node.metadata) for node in nodes]
                for node, vector in zip(nodes, self.embedder.embed(texts), strict=True):
                    node.embedding = vector
                self.store.upsert_chunks(nodes, self.sparse.documents(texts), reembedding=True)
                done += len(nodes)
                bar.update(len(nodes))
                if offset is None:
                    break
        self.store.record_embedder(self.embedder.model_name)
        return done

    def _prune(self, roots: list[Path], report: IngestReport) -> None:
        resolved = [root.resolve() for root in roots]
        for record in self.store.all_documents():
            path = Path(record.path)
            if any(path.is_relative_to(root) for root in resolved) and not path.exists():
                self.store.delete_document(record)
                report.removed.append(record.path)


def embedding_text(text: str, metadata: Mapping) -> str:
    """What the embedder, BM25 and the reranker read for a chunk: whose document and which period it is from
    ("Office of Personnel Management Annual Performance Report (FY 2019)"), its section ("27 days" under
    "Annual leave"), then its text, a table's rows as ``column: value`` records."""
    context = metadata.get("context")
    heading = metadata.get("heading")
    title = metadata.get("title")
    if heading and title and (heading == title or heading.startswith(title + HEADING_SEPARATOR)):
        heading = heading[len(title) + len(HEADING_SEPARATOR) :] or None  # the context line names it already
    return "\n".join(part for part in (context, heading, searchable(text)) if part)
