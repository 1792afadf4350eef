"""Files -> sections -> chunks -> vectors -> Qdrant, and search over them with access filters."""

import os

# Nothing leaves the machine: the Hugging Face libraries must never reach for a hub, even when
# a model path is wrong. Forced, not defaulted, so an inherited environment cannot turn it off.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

from retrieval.access import ADMIN_GROUP, InvalidGroupName, validate_groups
from retrieval.ingest import Failure, Ingestor, IngestReport
from retrieval.search import Searcher
from retrieval.settings import RetrievalSettings
from retrieval.store import ChunkStore, DocumentRecord, EmbedderMismatch, StoreLockedError, StoreNotFound

__all__ = [
    "ADMIN_GROUP",
    "ChunkStore",
    "DocumentRecord",
    "EmbedderMismatch",
    "Failure",
    "IngestReport",
    "Ingestor",
    "InvalidGroupName",
    "RetrievalSettings",
    "Searcher",
    "StoreLockedError",
    "StoreNotFound",
    "validate_groups",
]
