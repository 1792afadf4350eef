"""The int8 ONNX embedders: the default model's ready file, and a sentence-transformers model exported once (close to
fp32, normalised, in input order, its cached export handled safely)."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from retrieval import onnx_export
from retrieval.embedding import EmbeddingBackendError, LocalEmbedding, ModelNotFound
from retrieval.embedding_models import DEFAULT_MODEL, EARLIER_DEFAULT, resolve
from retrieval.onnx_encoder import OnnxEncoder

SENTENCES = [
    "Employees receive 27 days of annual leave per year, in addition to public holidays.",
    "The reactor's secondary cooling loop was shut down for inspection after a pressure drop.",
    "Vitamin D supplementation reduced the incidence of acute respiratory infections in children.",
    "Invoices above 10,000 euros need the approval of the finance director before payment.",
    "how do I reset my password",
]


@pytest.fixture(scope="module")
def fp32():
    return LocalEmbedding(EARLIER_DEFAULT, precision="fp32")


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """The exported path, as a first run on a new machine makes it."""
    return LocalEmbedding(EARLIER_DEFAULT, cache_dir=tmp_path_factory.mktemp("embeddings"))


def cosines(a, b) -> np.ndarray:
    return (np.asarray(a) * np.asarray(b)).sum(axis=1)


def test_the_default_embedder_runs_the_bundled_int8_file(embedder):
    assert embedder.model_name == DEFAULT_MODEL and embedder.precision == "int8"
    assert embedder.onnx_file is not None and embedder.onnx_file.name == "model.onnx"
    assert embedder.dimension == 384 and embedder.max_tokens == 512


def test_the_default_model_has_no_fp32_weights_to_run():
    with pytest.raises(ModelNotFound, match="int8 file only.*ASSISTANT_EMBEDDING_PRECISION=int8"):
        LocalEmbedding(precision="fp32")


@pytest.mark.parametrize("name", ["default", "exported"])
def test_vectors_are_normalised_and_a_related_sentence_outranks_unrelated_ones(name, embedder, minilm):
    model = embedder if name == "default" else minilm
    vectors = model.embed(SENTENCES)
    assert np.asarray(vectors).shape == (len(SENTENCES), 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    query = model.get_query_embedding("How many days of holiday do staff get each year?")
    scores = np.asarray(model.get_text_embedding_batch(SENTENCES)) @ np.asarray(query)
    assert int(np.argmax(scores)) == 0
    assert scores[0] > scores[1:].max() + 0.1


def test_a_question_gets_the_models_query_instruction_and_a_passage_does_not(embedder, minilm):
    question = "how do I reset my password"
    assert embedder.query_prefix.startswith("Represent this sentence")
    assert np.allclose(embedder.embed_query(question), embedder.embed([embedder.query_prefix + question])[0])
    assert cosines([embedder.embed_query(question)], [embedder.embed([question])[0]])[0] < 0.999
    assert minilm.query_prefix == "" and np.allclose(minilm.embed_query(question), minilm.embed([question])[0])


def test_int8_vectors_are_close_to_fp32(minilm, fp32):
    assert cosines(minilm.embed(SENTENCES), fp32.embed(SENTENCES)).min() >= 0.99


def test_int8_tokenises_like_fp32(minilm, fp32):
    text = "  Über-long words, numbers (3.14) and CAPITALS\tare split the same way.  "
    assert minilm.count_tokens(text) == fp32.count_tokens(text)
    assert minilm.max_tokens == fp32.max_tokens == 256


@pytest.mark.parametrize("name", ["default", "exported"])
def test_a_vector_does_not_depend_on_what_is_embedded_with_it(name, embedder, minilm):
    # Dynamic int8 scales activations per run: batched with other texts, a text's vector would drift (to 0.97).
    model = embedder if name == "default" else minilm
    texts = [SENTENCES[1], "leave", SENTENCES[0] * 12, "", SENTENCES[3]]
    together = model.embed(texts)
    alone = [model.embed([text])[0] for text in texts]
    assert cosines(together, alone).min() > 0.99999
    assert model.embed([]) == []


def test_precision_is_checked():
    with pytest.raises(ValueError, match="int8, fp32"):
        LocalEmbedding(precision="int4")


# --- the cache -----------------------------------------------------------------------------


@pytest.fixture
def cached(minilm, tmp_path, monkeypatch):
    """A copy of the session's export in a fresh cache directory, and exports counted (and faked) from now on."""
    cache = tmp_path / "cache"
    cache.mkdir()
    good = minilm.onnx_file
    for source in (good, good.with_suffix(".json")):
        shutil.copy(source, cache / source.name)
    exports = []

    def fake_export(model, pooling, max_seq_length, file, key, reference):
        exports.append(file)
        shutil.copy(good, file)
        shutil.copy(good.with_suffix(".json"), file.with_suffix(".json"))

    monkeypatch.setattr(onnx_export, "export_int8", fake_export)
    return cache, cache / good.name, exports


def test_a_second_embedder_reuses_the_cached_file(cached, minilm):
    cache, file, exports = cached
    again = LocalEmbedding(EARLIER_DEFAULT, cache_dir=cache)
    assert again.onnx_file == file and exports == []
    assert cosines(again.embed(SENTENCES), minilm.embed(SENTENCES)).min() > 0.9999


def test_a_damaged_cached_file_is_exported_again(cached, minilm):
    cache, file, exports = cached
    data = bytearray(file.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\0" * 64
    file.write_bytes(bytes(data))
    rebuilt = LocalEmbedding(EARLIER_DEFAULT, cache_dir=cache)
    assert exports == [file]
    assert cosines(rebuilt.embed(SENTENCES), minilm.embed(SENTENCES)).min() > 0.9999


def test_a_damaged_or_missing_manifest_means_a_new_export(cached):
    cache, file, exports = cached
    file.with_suffix(".json").write_text("{not json", encoding="utf-8")
    LocalEmbedding(EARLIER_DEFAULT, cache_dir=cache)
    file.with_suffix(".json").unlink()
    LocalEmbedding(EARLIER_DEFAULT, cache_dir=cache)
    assert exports == [file, file]


def test_int8_vectors_that_stray_from_fp32_are_refused(cached):
    cache, file, _ = cached
    manifest = json.loads(file.with_suffix(".json").read_text(encoding="utf-8"))
    manifest["probes"] = np.roll(np.asarray(manifest["probes"]), 1, axis=0).tolist()  # each probe, another's vector
    file.with_suffix(".json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(EmbeddingBackendError, match="too far from .*fp32.*ASSISTANT_EMBEDDING_PRECISION=fp32"):
        LocalEmbedding(EARLIER_DEFAULT, cache_dir=cache)


def test_an_unwritable_cache_directory_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    with pytest.raises(EmbeddingBackendError, match=f"{blocker / 'cache'}.*ASSISTANT_EMBEDDING_CACHE_DIR"):
        LocalEmbedding(EARLIER_DEFAULT, cache_dir=blocker / "cache")


def test_a_model_the_int8_path_cannot_run_says_to_use_fp32(tmp_path):
    model = tmp_path / "with-dense"
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
    ]
    (model / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    with pytest.raises(EmbeddingBackendError, match=f"{model}.*Dense.*ASSISTANT_EMBEDDING_PRECISION=fp32"):
        LocalEmbedding(model, cache_dir=tmp_path / "cache")


def test_a_new_export_removes_the_old_ones_of_the_same_model(cached, minilm):
    cache, file, exports = cached
    stale = cache / f"{Path(minilm.model_path).name}-0123456789abcdef0123-int8.onnx"
    stale.write_bytes(b"an export from an older format")
    stale.with_suffix(".json").write_text(json.dumps({"source": minilm.model_path}), encoding="utf-8")
    unrelated = cache / "notes.txt"
    unrelated.write_text("kept", encoding="utf-8")
    file.unlink()
    LocalEmbedding(EARLIER_DEFAULT, cache_dir=cache)
    assert exports == [file] and file.is_file()
    assert not stale.exists() and not stale.with_suffix(".json").exists() and unrelated.is_file()


def test_a_ready_file_with_other_bytes_than_the_named_model_is_refused(tmp_path):
    # The store records the model by name, so the name must keep meaning the same file.
    spec = resolve(DEFAULT_MODEL)
    changed = tmp_path / "model.onnx"
    data = bytearray(spec.ready_int8.read_bytes())
    data[-1] ^= 1
    changed.write_bytes(bytes(data))
    with pytest.raises(EmbeddingBackendError, match=f"not the {DEFAULT_MODEL} file.*constraints.txt"):
        OnnxEncoder(replace(spec, ready_int8=changed), tmp_path, threads=1)
