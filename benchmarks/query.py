"""Search latency (p50 / p95) and, since the judgments are at hand, SciFact train nDCG@10 and Recall@100.

    .venv/bin/python benchmarks/query.py [--queries N]

Runs over the store benchmarks/ingest.py leaves in benchmarks/.cache (run that first), as a
user of the group the corpus was ingested for, so the access filter is part of every query.
"""

import argparse
import math
import statistics
import time
from pathlib import Path

from scifact import CACHE, GROUP, qrels, queries

from assistant import Assistant, Settings, User


def ndcg_at_10(ranked: list[str], relevant: dict[str, int]) -> float:
    gain = sum(relevant.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:10]))
    ideal = sum(score / math.log2(rank + 2) for rank, score in enumerate(sorted(relevant.values(), reverse=True)[:10]))
    return gain / ideal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=None, help="only the first N judged queries")
    args = parser.parse_args()
    store = CACHE / "scifact-store"
    if not (store / "qdrant").is_dir():
        raise SystemExit(f"no store at {store}: run benchmarks/ingest.py first")

    judged = qrels()
    texts = queries()
    ids = [q for q in texts if q in judged][: args.queries]
    user = User("benchmark", (GROUP,))
    latencies, ndcg, recall = [], [], []
    with Assistant(Settings(data_dir=store)) as assistant:
        assistant.search("warm-up", user, k=10)
        for query_id in ids:
            started = time.perf_counter()
            sources = assistant.search(texts[query_id], user, k=100)
            latencies.append((time.perf_counter() - started) * 1000)
            ranked = list(dict.fromkeys(Path(s.path).stem for s in sources))
            ndcg.append(ndcg_at_10(ranked, judged[query_id]))
            recall.append(len(set(ranked) & set(judged[query_id])) / len(judged[query_id]))

    latencies.sort()
    p95 = latencies[max(0, math.ceil(0.95 * len(latencies)) - 1)]
    print(f"queries: {len(ids)} (k=100, access filter on)")
    print(f"search latency: p50 {statistics.median(latencies):.1f} ms, p95 {p95:.1f} ms")
    print(f"SciFact train nDCG@10 {statistics.mean(ndcg):.3f}, Recall@100 {statistics.mean(recall):.3f}")


if __name__ == "__main__":
    main()
