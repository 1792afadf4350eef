"""Settings of the retrieval package: where the store is, which embedder, how text is cut."""

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr


class RetrievalSettings(BaseModel):
    # A Qdrant server or cluster by URL; when unset, the embedded store at ``qdrant_path``.
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    # Embedded (local-mode) store directory, or ":memory:" for a throw-away store.
    qdrant_path: str | None = None
    collection: str = "documents"

    # A local sentence-transformers directory; None means the bundled all-MiniLM-L6-v2.
    embedding_model: Path | None = None
    embed_batch_size: int = Field(default=64, ge=1)

    # Measured in the embedding model's own tokens: MiniLM reads at most 256 word pieces and
    # silently truncates the rest, so a longer chunk would be stored but never searchable.
    chunk_size: int = Field(default=256, ge=32)
    chunk_overlap: int = Field(default=32, ge=0)
