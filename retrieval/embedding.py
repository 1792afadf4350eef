"""Dense embeddings from a local model (retrieval/embedding_models.py says which), behind llama-index's BaseEmbedding.

Two ways to run a model, chosen by ``precision`` (setting ``embedding_precision``):

``"int8"``, the default: an ONNX file with every Linear weight quantised to int8 per output channel
(activations quantised per run, VNNI on x86), run by ONNX Runtime one text at a time, as many texts in parallel
as there are CPUs. The default model's file comes ready-made; a sentence-transformers directory is exported once
from its local weights. ``"fp32"``: sentence-transformers in torch fp32, the reference, for models that come with
their weights. Queries and documents always go through the same path; a question gets the model's query
instruction (``embed_query``), a passage never does.

Why, measured with all-MiniLM-L6-v2 (the model the export path was built on) on SciFact's chunks (mean 204 word
pieces) with a 2-core AMD EPYC (AVX-512, VNNI) shared with other work, each against sentence-transformers fp32 in
the same run (benchmarks/ingest.py has the harness):

    torch bf16 autocast 2.0x (cosine to fp32 0.99998); ONNX fp32, fused 2.0x; torch quantize_dynamic 2.2x but
    cosine 0.93; ONNX int8 with per-tensor weight scales (both quantisers' default) 3.1x but cosine 0.94; with
    per-channel scales 3.6x, cosine 0.995 (0.99 at worst): MiniLM's weight rows differ in range, and one
    scale per matrix leaves the small rows a few levels.
    One text per run instead of batches of 64 sorted by length: 57 against 42 chunks/s (no padding at all),
    and a vector that does not depend on its batch (dynamic int8 scales per run: batched, a text drifted to
    cosine 0.97 of itself alone). onnxruntime's fused Attention and SkipLayerNormalization are slower here
    quantised: 61 texts/s on one thread against 79 without them.
    The whole path, embedding the project's chunks of 300 abstracts in the Ingestor's calls of 64: 142 chunks/s
    against 22.6 for fp32 (6.3x); all 9,066 chunks of SciFact in one call: 145 against 24.6. Assistant.ingest
    of 300 abstracts: 55.8 abstracts/s against 11.7 for fp32 (4.8x) and 23.8 for llama-index's default path
    (2.4x), which embeds a third fewer tokens (each abstract truncated to one 256-token text).
    Quality, nDCG@10 on SciFact's 809 train queries, documents scored by their best chunk: fp32 0.6704, int8
    0.6683 (-0.0021); an fp32 store searched with int8 queries 0.6658, so re-ingest after switching.

retrieval/onnx_export.py exports the int8 file once per model and caches it, checked against fp32 on every
load; retrieval/onnx_encoder.py runs it, or the ready-made file.
"""

import os
from pathlib import Path
from typing import Literal

from llama_index.core.embeddings import BaseEmbedding
from pydantic import PrivateAttr

from retrieval.embedding_models import ModelNotFound, resolve
from retrieval.onnx_encoder import OnnxEncoder
from retrieval.onnx_export import EmbeddingBackendError

# EmbeddingBackendError comes from the int8 path (onnx_encoder, onnx_export); callers catch it from here.
__all__ = [
    "PRECISIONS",
    "EmbeddingBackendError",
    "LocalEmbedding",
    "ModelNotFound",
    "Precision",
    "default_cache_dir",
]

Precision = Literal["int8", "fp32"]
PRECISIONS: tuple[str, ...] = ("int8", "fp32")


def default_cache_dir() -> Path:
    """Where exported models live unless a cache directory is given: the user's cache, as XDG says."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "onprem-assistant" / "embeddings"


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class LocalEmbedding(BaseEmbedding):
    """Normalised embeddings (cosine = dot product) from a model loaded only from disk."""

    model_path: str
    precision: str = "int8"
    query_prefix: str = ""
    answer_similarity: float = 0.25  # see EmbeddingModel
    _model = PrivateAttr(default=None)  # sentence-transformers, fp32 only
    _onnx = PrivateAttr(default=None)  # OnnxEncoder, int8 only

    def __init__(
        self,
        model: str | Path | None = None,
        embed_batch_size: int = 64,
        *,
        precision: Precision = "int8",
        cache_dir: Path | None = None,
        threads: int | None = None,
    ):
        """``model``: a bundled model's name or a local sentence-transformers directory (embedding_models)."""
        if precision not in PRECISIONS:
            raise ValueError(f"embedding precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        spec = resolve(model)
        if precision == "fp32" and spec.ready_int8 is not None:
            raise ModelNotFound(
                f"{spec.name} is installed as an int8 file only: set ASSISTANT_EMBEDDING_PRECISION=int8, or "
                "ASSISTANT_EMBEDDING_MODEL to a sentence-transformers directory for fp32"
            )
        super().__init__(
            model_name=spec.name,
            model_path=str(spec.directory),
            embed_batch_size=embed_batch_size,
            precision=precision,
            query_prefix=spec.query_prefix,
            answer_similarity=spec.answer_similarity,
        )
        if precision == "fp32":
            from sentence_transformers import SentenceTransformer  # heavy: import only when used

            self._model = SentenceTransformer(str(spec.directory), device="cpu", local_files_only=True)
        else:
            self._onnx = OnnxEncoder(
                spec, Path(cache_dir) if cache_dir else default_cache_dir(), threads or _available_cpus()
            )

    @property
    def dimension(self) -> int:
        if self._onnx is not None:
            return self._onnx.dimension
        return self._model.get_embedding_dimension()

    @property
    def max_tokens(self) -> int:
        if self._onnx is not None:
            return self._onnx.max_seq_length
        return self._model.max_seq_length

    @property
    def onnx_file(self) -> Path | None:
        """The cached int8 model this embedder runs, or None in fp32."""
        return self._onnx.file if self._onnx is not None else None

    def count_tokens(self, text: str) -> list[int]:
        """The model's own word pieces, so chunk sizes are measured in what the model reads."""
        # verbose=False: sections longer than the model's window are expected here (that is why
        # they are being split), so the tokenizer's warning about them is noise.
        tokenizer = self._onnx.tokenizer if self._onnx is not None else self._model.tokenizer
        return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        if self._onnx is not None:
            return self._onnx.encode(list(texts)).tolist()
        vectors = self._model.encode(
            texts, batch_size=self.embed_batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        """A question's vector: with the model's query instruction, which passages never get."""
        return self.embed([self.query_prefix + text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self.embed(texts)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self.embed([text])[0]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self.embed_query(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)
