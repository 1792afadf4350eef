"""The Assistant put together from its parts, in one place: the CLI, the portal, the HTTP API and the tests all build
it here, so a test swaps a part by passing it instead of patching a module."""

from __future__ import annotations

import threading
from pathlib import Path

from assistant.audit import AuditLog
from assistant.conversations import ConversationStore
from assistant.evaluation.records import RunStore
from assistant.service import Assistant
from assistant.settings import Settings
from retrieval import ChunkStore, Ingestor
from retrieval.chunking import Chunker
from retrieval.embedding import LocalEmbedding
from retrieval.rerank import CrossEncoderReranker, bundled_reranker_path
from retrieval.search import Searcher
from retrieval.sparse import Bm25Encoder

_embedders: dict[tuple, LocalEmbedding] = {}
_embedders_lock = threading.Lock()


def build_assistant(settings: Settings | None = None, *, embedder: LocalEmbedding | None = None) -> Assistant:
    """An Assistant over the store `settings` name; `embedder` replaces the process's shared one."""
    settings = settings or Settings()
    # The data directory holds every document's text (the store), the accounts and the audit log: made readable
    # by its owner only. An existing one is left as the operator set it (a shared group may be intended).
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    embedder = embedder or shared_embedder(settings)
    store = ChunkStore(settings, embedder.dimension, embedder.model_name)
    chunker = Chunker(embedder.count_tokens, settings.chunk_size, settings.chunk_overlap)
    sparse = Bm25Encoder(avg_len=settings.bm25_avg_len)
    ingestor = Ingestor(
        store,
        embedder,
        sparse,
        chunker,
        settings.embed_batch_size,
        redact_pii=settings.redact_pii,
        pii_region=settings.pii_region,
        limits=settings.loader_limits(),
    )
    searcher = Searcher(
        store, embedder, sparse, _reranker(settings.reranker), settings.rerank_candidates, settings.rerank_weight
    )
    audit = AuditLog(settings.audit_log, texts=settings.audit_text)
    conversations = ConversationStore(settings.conversations_dir, settings.conversation_retention_days)
    return Assistant(
        settings,
        embedder=embedder,
        store=store,
        ingestor=ingestor,
        searcher=searcher,
        audit=audit,
        conversations=conversations,
        evaluations=RunStore(settings.evaluations_dir),
    )


def shared_embedder(settings: Settings) -> LocalEmbedding:
    """One embedder per model and precision in a process: loading one costs seconds and hundreds of MB, and every
    Assistant of the process (the portal's, a test's, the CLI's) embeds alike with it. Where its int8 export is
    cached does not change the embedder, so the first caller's cache directory serves the rest."""
    key = (
        settings.embedding_model,
        settings.embedding_precision,
        settings.embed_batch_size,
        settings.embedding_threads,
    )
    with _embedders_lock:
        if key not in _embedders:
            _embedders[key] = LocalEmbedding(
                settings.embedding_model,
                settings.embed_batch_size,
                precision=settings.embedding_precision,
                # The int8 export is made once, from the local weights, and kept with the assistant's other state.
                cache_dir=settings.embedding_cache_dir or settings.data_dir / "models" / "embeddings",
                threads=settings.embedding_threads,
            )
        return _embedders[key]


def _reranker(setting: str | None) -> CrossEncoderReranker | None:
    if setting is None:
        return None
    return CrossEncoderReranker(bundled_reranker_path() if setting == "bundled" else Path(setting).expanduser())
