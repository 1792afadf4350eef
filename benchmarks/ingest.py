"""Ingestion speed against llama-index's default path, and what the int8 embedder costs in retrieval quality.

    .venv/bin/python benchmarks/ingest.py [--limit N] [--repeat R] [--arms a,b,c,d,e,f]
    .venv/bin/python benchmarks/ingest.py --quality [--limit N]

All arms run all-MiniLM-L6-v2, the model whose int8 export the project makes itself (the default bge-small-en-v1.5
comes as a ready int8 file: benchmarks/beir.py compares the two models).

Speed, in one run on the same SciFact abstracts (arms alternate when repeated; medians reported):
  (a) llama-index's default path: VectorStoreIndex.from_documents(docs, embed_model=HuggingFaceEmbedding(<the
      local MiniLM directory>)), everything else its defaults (SentenceSplitter, in-memory vector store), one
      Document per abstract, text = title + "\\n\\n" + abstract. Needs llama-index-embeddings-huggingface.
  (b) the project: the abstracts written as Markdown files (title as heading), Assistant.ingest into a fresh
      embedded store, with the default (int8) embedder.
  (c) the same as (b) with the fp32 embedder.
  (f) the same as (b) with a dense-only index (no BM25 vectors): what the hybrid index costs at ingestion.
  (d), (e) the embedding alone: the project's chunks of the abstracts (cut beforehand, untimed) embedded with
      the int8 (d) or fp32 (e) embedder, in the Ingestor's calls of embed_batch_size: no loaders, no store.
Models are loaded before the clock starts; each arm times only the ingestion. The project embeds more than
(a): it cuts abstracts into chunks of at most 256 word pieces (with the title) where (a) truncates them.

Quality (--quality), independent of the store: SciFact's abstracts chunked as the project does, embedded
with fp32 and with int8, the 809 train queries scored by cosine (numpy), a document's score the best of its
chunks; nDCG@10 for each, their difference, and the mixed cases (fp32 store, int8 queries and the reverse).
"""

import argparse
import json
import shutil
import statistics
import time

import numpy as np
from scifact import CACHE, GROUP, qrels, queries, require_scifact, write_corpus

from assistant import Settings, build_assistant
from retrieval.embedding import LocalEmbedding
from retrieval.embedding_models import EARLIER_DEFAULT, resolve
from retrieval.points import SparseVector


def abstracts(limit: int | None) -> list[dict]:
    docs = []
    with open(require_scifact() / "corpus.jsonl", encoding="utf-8") as lines:
        for line in lines:
            if limit is not None and len(docs) >= limit:
                break
            docs.append(json.loads(line))
    return docs


def chunk_texts(docs: list[dict], count_tokens) -> tuple[list[str], list[int]]:
    """What the project embeds for each abstract: its chunks (default size and overlap), title as heading."""
    from llama_index.core import Document

    from retrieval.chunking import Chunker
    from retrieval.ingest import embedding_text

    settings = Settings()
    chunker = Chunker(count_tokens, settings.chunk_size, settings.chunk_overlap)
    texts, owners = [], []
    for number, doc in enumerate(docs):
        for text, _ in chunker.split([Document(text=doc["text"])]):
            texts.append(embedding_text(text, {"heading": doc["title"]}))
            owners.append(number)
    return texts, owners


# --- speed ---------------------------------------------------------------------------------


def llama_index_default(docs: list[dict]):
    """Arm (a): returns a function that ingests the abstracts the way llama-index does by default."""
    try:
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    except ImportError as exc:
        raise SystemExit("arm (a) needs llama-index-embeddings-huggingface: pip install -e '.[dev]'") from exc
    from llama_index.core import Document, VectorStoreIndex

    embed_model = HuggingFaceEmbedding(model_name=str(resolve(EARLIER_DEFAULT).directory))
    documents = [Document(text=f"{doc['title']}\n\n{doc['text']}") for doc in docs]
    VectorStoreIndex.from_documents(documents[:4], embed_model=embed_model)  # warm-up, untimed

    def run() -> tuple[int, float]:
        started = time.perf_counter()
        index = VectorStoreIndex.from_documents(documents, embed_model=embed_model)
        return len(index.index_struct.nodes_dict), time.perf_counter() - started

    return run


class _NoSparse:
    """Arm (f)'s lexical encoder: no terms, so the store holds dense vectors only."""

    def documents(self, texts: list[str]) -> list[SparseVector]:
        return [SparseVector([], []) for _ in texts]


def project(docs: list[dict], embedder: LocalEmbedding, name: str, dense_only: bool = False):
    """Arms (b), (c) and (f): Assistant.ingest of the abstracts as Markdown files into a fresh embedded store."""
    corpus, warm_up = CACHE / "scifact-files", CACHE / "scifact-warm-up"
    if not corpus.is_dir() or len(list(corpus.iterdir())) != len(docs):
        write_corpus(corpus, len(docs))
    write_corpus(warm_up, 4)
    with build_assistant(Settings(data_dir=CACHE / "scifact-store-warm-up"), embedder=embedder) as assistant:
        assistant.ingest([warm_up], groups=[GROUP])  # untimed: first calls pay for lazy imports
    shutil.rmtree(CACHE / "scifact-store-warm-up", ignore_errors=True)

    def run() -> tuple[int, float]:
        data_dir = CACHE / f"scifact-store-{name}"
        shutil.rmtree(data_dir, ignore_errors=True)
        with build_assistant(Settings(data_dir=data_dir), embedder=embedder) as assistant:
            if dense_only:
                assistant.ingestor.sparse = _NoSparse()
            started = time.perf_counter()  # the ingestion alone, not opening the store
            report = assistant.ingest([corpus], groups=[GROUP])
            elapsed = time.perf_counter() - started
        assert report.ok, report.failed
        shutil.rmtree(data_dir, ignore_errors=True)
        return report.chunks, elapsed

    return run


def embedding_alone(docs: list[dict], embedder: LocalEmbedding):
    """Arms (d) and (e): the project's chunks of the abstracts (cut untimed) embedded as the Ingestor does."""
    texts, _ = chunk_texts(docs, embedder.count_tokens)
    step = Settings().embed_batch_size
    embedder.embed(texts[:8])  # warm-up, untimed

    def run() -> tuple[int, float]:
        started = time.perf_counter()
        for start in range(0, len(texts), step):
            embedder.embed(texts[start : start + step])
        return len(texts), time.perf_counter() - started

    return run


ARMS = {
    "a": "(a) llama-index default",
    "b": "(b) project, int8",
    "c": "(c) project, fp32",
    "d": "(d) embedding alone, int8",
    "e": "(e) embedding alone, fp32",
    "f": "(f) project, int8, dense only",
}


def speed(args) -> None:
    docs = abstracts(args.limit)
    wanted = sorted(set(args.arms.replace(",", "")))
    if "a" not in wanted or not set(wanted) <= set(ARMS):
        raise SystemExit(f"--arms: letters from {''.join(ARMS)}, with a (the baseline), e.g. a,b")
    embedders = {}
    if set(wanted) & {"b", "d", "f"}:
        embedders["int8"] = LocalEmbedding(EARLIER_DEFAULT)
    if set(wanted) & {"c", "e"}:
        embedders["fp32"] = LocalEmbedding(EARLIER_DEFAULT, precision="fp32")
    build = {
        "a": lambda: llama_index_default(docs),
        "b": lambda: project(docs, embedders["int8"], "int8"),
        "c": lambda: project(docs, embedders["fp32"], "fp32"),
        "d": lambda: embedding_alone(docs, embedders["int8"]),
        "e": lambda: embedding_alone(docs, embedders["fp32"]),
        "f": lambda: project(docs, embedders["int8"], "dense-only", dense_only=True),
    }
    arms = {ARMS[letter]: build[letter]() for letter in wanted}
    seconds: dict[str, list[float]] = {name: [] for name in arms}
    pieces: dict[str, int] = {}
    for repeat in range(args.repeat):
        # Alternating the order too, so neither arm always runs right after the other.
        for name in arms if repeat % 2 == 0 else reversed(list(arms)):
            pieces[name], elapsed = arms[name]()
            seconds[name].append(elapsed)
            print(f"  {name}: {len(docs) / seconds[name][-1]:.1f} abstracts/s ({seconds[name][-1]:.1f} s)", flush=True)

    print(f"\n{len(docs)} SciFact abstracts, {args.repeat} run(s) per arm, medians:")
    baseline = seconds[ARMS["a"]]
    for name, times in seconds.items():
        rate = len(docs) / statistics.median(times)
        line = f"{name:32s} {rate:7.1f} abstracts/s  {pieces[name]:6d} nodes/chunks embedded"
        if name != ARMS["a"]:
            # Per round, against the baseline of the same round: other work on the machine moves both together.
            ratios = [base / own for base, own in zip(baseline, times, strict=True)]
            line += f"   / (a): {statistics.median(ratios):.2f}x (rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
        print(line)


# --- quality -------------------------------------------------------------------------------


def ndcg_at_10(query_vectors: np.ndarray, chunk_vectors: np.ndarray, owners: np.ndarray, doc_ids, judged) -> float:
    """Mean nDCG@10 over the queries; a document scores the best cosine of its chunks."""
    order = np.argsort(owners, kind="stable")
    grouped = chunk_vectors[order]
    starts = np.r_[0, np.flatnonzero(np.diff(owners[order])) + 1]
    ranked_docs = owners[order][starts]
    total = 0.0
    for row, relevant in zip(query_vectors, judged, strict=True):
        scores = np.maximum.reduceat(grouped @ row, starts)
        top = ranked_docs[np.argsort(-scores, kind="stable")[:10]]
        dcg = sum(relevant.get(doc_ids[d], 0) / np.log2(rank + 2) for rank, d in enumerate(top))
        ideal = sorted(relevant.values(), reverse=True)[:10]
        total += dcg / sum(gain / np.log2(rank + 2) for rank, gain in enumerate(ideal))
    return total / len(judged)


def quality(args) -> None:
    int8, fp32 = LocalEmbedding(EARLIER_DEFAULT), LocalEmbedding(EARLIER_DEFAULT, precision="fp32")
    docs = abstracts(args.limit)
    texts, owners = chunk_texts(docs, int8.count_tokens)
    doc_ids = [doc["_id"] for doc in docs]
    known = set(doc_ids)
    judged = {q: rel for q, rel in qrels().items() if set(rel) & known}
    question = queries()
    query_texts = [question[q] for q in judged]
    print(f"{len(doc_ids)} abstracts, {len(texts)} chunks, {len(judged)} train queries")

    vectors = {}
    for name, embedder in (("fp32", fp32), ("int8", int8)):
        started = time.perf_counter()
        chunks = np.asarray(embedder.embed(texts), dtype=np.float32)
        elapsed = time.perf_counter() - started
        vectors[name] = chunks, np.asarray(embedder.embed(query_texts), dtype=np.float32)
        print(f"{name}: embedded the chunks at {len(texts) / elapsed:.1f} chunks/s ({elapsed:.0f} s)", flush=True)

    owners_array = np.asarray(owners)
    relevance = list(judged.values())
    score = {
        (docs, asked): ndcg_at_10(vectors[asked][1], vectors[docs][0], owners_array, doc_ids, relevance)
        for docs in vectors
        for asked in vectors
    }
    cosines = (vectors["fp32"][0] * vectors["int8"][0]).sum(axis=1)
    print(f"chunk cosine int8 vs fp32: mean {cosines.mean():.4f}, min {cosines.min():.4f}")
    print(f"nDCG@10 fp32: {score['fp32', 'fp32']:.4f}")
    difference = score["int8", "int8"] - score["fp32", "fp32"]
    print(f"nDCG@10 int8: {score['int8', 'int8']:.4f}  (int8 - fp32: {difference:+.4f})")
    print(f"nDCG@10 fp32 store, int8 queries: {score['fp32', 'int8']:.4f}")
    print(f"nDCG@10 int8 store, fp32 queries: {score['int8', 'fp32']:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N abstracts")
    parser.add_argument("--repeat", type=int, default=1, help="runs per arm, alternating (speed)")
    parser.add_argument("--arms", default="a,b", help="speed arms to run, a (the baseline) and any of b-e: a,b,c,d,e")
    parser.add_argument("--quality", action="store_true", help="nDCG@10 of fp32 and int8 instead of speed")
    args = parser.parse_args()
    if args.quality:
        quality(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
