"""What BM25 statistics per access scope (issue 16) cost: quality and latency, scoped against whole-collection.

    PYTHONPATH=. .venv/bin/python -m benchmarks.idf_scope --data ../shared/data/scifact --split train \\
        --run-file runs/idf_scope.trec [--mode sparse --mode hybrid] [--limit-queries N]
    PYTHONPATH=. .venv/bin/python -m benchmarks.idf_scope --data ../shared/data/scifact --part engine

One ingestion of the BEIR folder into a fresh embedded store (as benchmarks/beir.py does), then every judged query
through ``Assistant.search`` (k = 100, as a member of the corpus's group) twice per mode: with the statistics of
the reader's scope (what the store does) and with the whole collection's (what it did before: the same query
without its IDF corpus, reproduced here by leaving that parameter out). The two arms take turns query by query, so
a slow spell of a shared machine falls on both. Latency is the whole search (query encoding included) and, apart,
the store's query alone. In this benchmark every document is in the reader's group, so both arms count the same
documents and should rank alike: the figures show what the per-query counting costs, not a change of ranking.

``--part engine`` measures the store's sparse query alone, in seconds rather than the half hour an ingestion with
embeddings takes on 2 busy cores: one point per document (BM25 vector, a random 4-d dense one), alternate documents
in groups ``a`` and ``b``, every query as a reader of both groups (the filter selects everything), of ``a`` (half)
and as an admin (no filter), each with scoped and with whole-collection statistics, arms taking turns.
"""

import argparse
import random
import statistics
import tempfile
import time
import uuid
from contextlib import contextmanager, nullcontext
from pathlib import Path

from llama_index.core.schema import TextNode

import retrieval.edge_index
import retrieval.store
from assistant import Assistant, User, build_assistant
from benchmarks.beir import GROUP, evaluate, judged_queries, mode_settings, read_jsonl, write_corpus, write_run
from retrieval import ChunkStore, RetrievalSettings
from retrieval.embedding import LocalEmbedding
from retrieval.points import QueryVectors
from retrieval.sparse import Bm25Encoder

ARMS = ("scoped", "global")


@contextmanager
def whole_collection_statistics():
    """The query as it was before issue 16: no IDF corpus on the sparse branch, so the engine counts every point."""
    scoped = retrieval.edge_index._idf_params
    retrieval.edge_index._idf_params = lambda scope: None
    try:
        yield
    finally:
        retrieval.edge_index._idf_params = scoped


@contextmanager
def store_timer(into: list[float]):
    """Adds the milliseconds each ChunkStore.search takes to ``into``."""
    search = retrieval.store.ChunkStore.search

    def timed(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return search(self, *args, **kwargs)
        finally:
            into.append((time.perf_counter() - started) * 1000)

    retrieval.store.ChunkStore.search = timed
    try:
        yield
    finally:
        retrieval.store.ChunkStore.search = search


def run_mode(assistant: Assistant, queries: dict[str, str], stems: dict[str, str], k: int) -> dict[str, dict]:
    user = User("benchmark", (GROUP,))
    assistant.search("warm-up", user, k=k)
    results = {arm: {"ranked": {}, "search": [], "store": []} for arm in ARMS}
    for number, (query_id, text) in enumerate(queries.items()):
        order = ARMS if number % 2 == 0 else ARMS[::-1]
        for arm in order:
            result = results[arm]
            with store_timer(result["store"]), whole_collection_statistics() if arm == "global" else nullcontext():
                started = time.perf_counter()
                sources = assistant.search(text, user, k=k)
                result["search"].append((time.perf_counter() - started) * 1000)
            best: dict[str, float] = {}
            for source in sources:  # best chunk first, so the first score seen is the document's
                best.setdefault(stems[Path(source.path).stem.lower()], source.score)
            result["ranked"][query_id] = list(best.items())
    return results


def engine_latency(data: Path, limit_queries: int | None) -> None:
    corpus = read_jsonl(data / "corpus.jsonl")
    texts = [f"{doc.get('title', '')}\n{doc['text']}" for doc in corpus]
    bm25 = Bm25Encoder()
    generator = random.Random(16)
    nodes = [
        TextNode(
            id_=point_id,
            text=text,
            metadata={"doc_id": str(number), "groups": ["a" if number % 2 == 0 else "b"]},
            embedding=[generator.random() for _ in range(4)],
        )
        for number, (text, point_id) in enumerate(zip(texts, _ids(len(texts)), strict=True))
    ]
    queries = [q["text"] for q in read_jsonl(data / "queries.jsonl")][:limit_queries]
    readers = {"a and b (all)": ["a", "b"], "a (half)": ["a"], "admin": ["admin"]}
    with tempfile.TemporaryDirectory() as work:
        store = ChunkStore(RetrievalSettings(qdrant_path=work, search_mode="sparse"), 4)
        store.upsert_chunks(nodes, bm25.documents(texts))
        vectors = [QueryVectors(sparse=bm25.query(text)) for text in queries]
        timings = {(reader, arm): [] for reader in readers for arm in ARMS}
        for number, vector in enumerate(vectors):
            for reader, groups in readers.items():
                for arm in ARMS if number % 2 == 0 else ARMS[::-1]:
                    with whole_collection_statistics() if arm == "global" else nullcontext():
                        started = time.perf_counter()
                        store.search(vector, groups, k=100)
                        timings[reader, arm].append((time.perf_counter() - started) * 1000)
        store.close()
    print(f"engine only: {len(nodes)} points, {len(vectors)} queries, sparse search k = 100")
    for (reader, arm), values in timings.items():
        print(f"{reader:>14} {arm:>6}: p50 {statistics.median(values):.2f} ms  p95 {percentile(values, 0.95):.2f} ms")


def _ids(count: int) -> list[str]:
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"idf-scope/{number}")) for number in range(count)]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[int(share * (len(ordered) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a BEIR folder: corpus.jsonl, queries.jsonl, qrels/")
    parser.add_argument("--part", choices=("quality", "engine"), default="quality", help="see the module's docstring")
    parser.add_argument("--split", help="the qrels file to score against: qrels/SPLIT.tsv (quality)")
    parser.add_argument("--run-file", type=Path, help="run files go to OUT.MODE.ARM.trec (quality)")
    parser.add_argument("--mode", action="append", choices=("sparse", "hybrid"), help="default: sparse and hybrid")
    parser.add_argument("--k", type=int, default=100, help="chunks asked of the search per query")
    parser.add_argument("--limit-queries", type=int, default=None, help="only the first N judged queries")
    parser.add_argument("--work", type=Path, default=None, help="where the files and store go (default: a temp dir)")
    args = parser.parse_args()
    if args.part == "engine":
        engine_latency(args.data, args.limit_queries)
        return
    if not (args.split and args.run_file):
        parser.error("--split and --run-file are needed for the quality part")
    modes = args.mode or ["sparse", "hybrid"]
    queries, qrels = judged_queries(args.data, args.split, args.limit_queries)

    with tempfile.TemporaryDirectory(dir=args.work) as work:
        work = Path(work)
        corpus = read_jsonl(args.data / "corpus.jsonl")
        stems = write_corpus(corpus, work / "corpus")
        embedder = LocalEmbedding()
        with build_assistant(mode_settings(modes[0], work / "store"), embedder=embedder) as assistant:
            started = time.perf_counter()
            report = assistant.ingest([work / "corpus"], groups=[GROUP], progress=True)
            print(
                f"{len(corpus)} documents, {report.chunks} chunks in {time.perf_counter() - started:.1f} s; "
                f"{len(queries)} judged queries of split {args.split!r}"
            )
        for mode in modes:
            with build_assistant(mode_settings(mode, work / "store"), embedder=embedder) as assistant:
                results = run_mode(assistant, queries, stems, args.k)
            for arm in ARMS:
                result = results[arm]
                run_file = args.run_file.with_suffix(f".{mode}.{arm}.trec")
                write_run(run_file, result["ranked"], tag=f"assistant-{mode}-{arm}")
                scores = evaluate(run_file, qrels)
                print(
                    f"{mode:>6} {arm:>6}: nDCG@10 {scores['nDCG@10']:.4f}  Recall@10 {scores['Recall@10']:.4f}  "
                    f"Recall@100 {scores['Recall@100']:.4f}  search p50 {statistics.median(result['search']):.2f} ms "
                    f"p95 {percentile(result['search'], 0.95):.2f} ms  store query p50 "
                    f"{statistics.median(result['store']):.2f} ms p95 {percentile(result['store'], 0.95):.2f} ms"
                )


if __name__ == "__main__":
    main()
