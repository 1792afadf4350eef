"""The int8 ONNX file of a local sentence-transformers model: exported once, cached, and checked on every load.

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
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

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


class EmbeddingBackendError(RuntimeError):
    """The fast path cannot run here: a package is missing, the model is not supported, or the file is bad."""


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def pooling_mode(model: Path) -> str:
    """Mean or CLS pooling, the two the exported graph implements; anything else needs fp32."""
    modules = read_json(model / "modules.json") if (model / "modules.json").is_file() else None
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules] if isinstance(modules, list) else []
    unsupported = [k for k in kinds if k not in ("Transformer", "Pooling", "Normalize")]
    pooling = next((m for m in modules or [] if m.get("type", "").endswith("Pooling")), None)
    config = read_json(model / pooling["path"] / "config.json") if pooling else {"pooling_mode_mean_tokens": True}
    modes = [k for k, on in config.items() if k.startswith("pooling_mode_") and on]
    if unsupported or modes not in (["pooling_mode_mean_tokens"], ["pooling_mode_cls_token"]):
        raise EmbeddingBackendError(
            f"the embedding model at {model} uses {', '.join(unsupported + modes) or 'no pooling'}, which the int8 "
            "path does not implement (it handles a transformer with mean or CLS pooling): set "
            "ASSISTANT_EMBEDDING_PRECISION=fp32 to run it with sentence-transformers"
        )
    return "mean" if modes == ["pooling_mode_mean_tokens"] else "cls"


# --- the cache -----------------------------------------------------------------------------


def cached_int8_file(model: Path, pooling: str, max_seq_length: int, cache_dir: Path, reference) -> Path:
    """The int8 file of ``model`` in ``cache_dir``, exported first unless an intact one for this key is there.

    ``reference(torch_model)`` gives the fp32 vectors of PROBES that go into the manifest.
    """
    key = _cache_key(model, pooling)
    name = f"{model.name}-{key[:20]}-int8.onnx"
    file = cache_dir / name
    manifest = _read_manifest(file)
    if manifest and file.is_file() and manifest.get("key") == key and sha256_of(file) == manifest.get("sha256"):
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
    log.info("exporting %s to int8 ONNX in %s (once per model and onnxruntime version)", model, file)
    with _quiet_root_logger():
        export_int8(model, pooling, max_seq_length, file, key, reference)
    _remove_stale_exports(model, file)
    return file


def check_against_reference(file: Path, model: Path, encode) -> None:
    """Refuses an int8 file whose vectors of PROBES, from ``encode``, stray from the fp32 ones in its manifest."""
    reference = np.asarray(_read_manifest(file)["probes"], dtype=np.float32)
    cosines = (encode(list(PROBES)) * reference).sum(axis=1)
    if cosines.min() < MIN_PROBE_COSINE:
        raise EmbeddingBackendError(
            f"the int8 model {file} gives vectors too far from {model}'s fp32 ones on this machine "
            f"(cosine {cosines.min():.3f} < {MIN_PROBE_COSINE}): set ASSISTANT_EMBEDDING_PRECISION=fp32"
        )


def _cache_key(model: Path, pooling: str) -> str:
    digest = hashlib.sha256(f"format {EXPORT_FORMAT} pooling {pooling} ".encode())
    digest.update(f"onnxruntime {importlib.metadata.version('onnxruntime')}".encode())
    found = [name for name in _SOURCE_FILES if (model / name).is_file()]
    for name in found:
        digest.update(f"\0{name}\0".encode())
        with open(model / name, "rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _remove_stale_exports(model: Path, current: Path) -> None:
    """Earlier exports of this same model directory (other weights, format or onnxruntime) are dead weight."""
    for other in current.parent.glob(f"{model.name}-*-int8.onnx"):
        if other != current and _read_manifest(other).get("source") == str(model):
            other.unlink(missing_ok=True)
            other.with_suffix(".json").unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


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


# --- the export ----------------------------------------------------------------------------


def export_int8(model: Path, pooling: str, max_seq_length: int, file: Path, key: str, reference) -> None:
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
        "sha256": sha256_of(file),
        "source": str(model),
        "pooling": pooling,
        "max_seq_length": max_seq_length,
        "probes": probes,
    }
    _write_atomically(file.with_suffix(".json"), lambda p: p.write_text(json.dumps(manifest), encoding="utf-8"))
