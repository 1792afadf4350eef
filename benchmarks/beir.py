"""Retrieval quality on any BEIR-format folder, through the project's own ingestion and search.

    .venv/bin/python -m benchmarks.beir --data ../shared/data/scifact --split train --run-file runs/scifact.trec \\
        [--mode dense|sparse|hybrid|hybrid+rerank ...] [--limit-queries N] [--work DIR | --keep DIR]
        [--embedding-model NAME_OR_DIR]

DIR holds ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/NAME.tsv``. Each corpus document becomes a Markdown
file (its title as the heading, so title and text are both indexed), ingested into a fresh embedded store the way
an organisation's files are. Every query of the split that has judgments then goes through ``Assistant.search``
with k = 100, as a member of the group the corpus was shared with, so the access filter is part of every query.
Chunks are folded into documents (a document ranks where its best chunk does), written as a standard TREC run
file (``qid Q0 docid rank score tag``, ids as in the corpus), and nDCG@10, Recall@10 and Recall@100 are computed
from that file with pytrec_eval (the evaluator BEIR itself uses). Several ``--mode`` values share one ingestion;
each writes its own run file (``OUT.MODE.trec``). Relevance judgments are read only to score the run file.
``--keep DIR`` keeps the files and the store in DIR: a second run over it re-reads nothing that is unchanged, so
settings that act only on queries are compared without ingesting again.
"""

import argparse
import contextlib
import csv
import json
import re
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytrec_eval

from assistant import Assistant, Settings, User, build_assistant
from retrieval.embedding import LocalEmbedding

GROUP = "benchmark"
MODES = ("dense", "sparse", "hybrid", "hybrid+rerank")
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,100}")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    judged: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as rows:
        reader = csv.reader(rows, delimiter="\t")
        header = next(reader)
        if header[0].isdigit():  # some BEIR sets ship without the header row
            reader = iter([header, *reader])
        for query_id, doc_id, score in (row[:3] for row in reader if row):
            judged.setdefault(query_id, {})[doc_id] = int(score)
    return judged


def judged_queries(data: Path, split: str, limit: int | None) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """The judged queries of a BEIR split (the first `limit` of them when given) and their judgements."""
    qrels_file = data / "qrels" / f"{split}.tsv"
    for needed in (data / "corpus.jsonl", data / "queries.jsonl", qrels_file):
        if not needed.is_file():
            raise SystemExit(f"{needed} is missing: --data must be a BEIR folder and --split one of its qrels files")
    qrels = read_qrels(qrels_file)
    texts = {str(q["_id"]): q["text"] for q in read_jsonl(data / "queries.jsonl")}
    queries = {q: texts[q] for q in qrels if q in texts}
    if limit:
        queries = dict(list(queries.items())[:limit])
    return queries, {q: qrels[q] for q in queries}


def write_corpus(corpus: list[dict], folder: Path) -> dict[str, str]:
    """One Markdown file per document; returns file stem -> corpus id (ids need not be valid file names)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    stems = {}
    for number, doc in enumerate(corpus):
        doc_id = str(doc["_id"])
        stem = doc_id if _SAFE_NAME.fullmatch(doc_id) and doc_id.lower() not in stems else f"doc-{number:08d}"
        stems[stem.lower()] = doc_id
        title = " ".join(doc.get("title", "").split())
        text = f"# {title}\n\n{doc['text']}\n" if title else f"{doc['text']}\n"
        (folder / f"{stem}.md").write_text(text, encoding="utf-8")
    return stems


def mode_settings(mode: str, store: Path) -> Settings:
    search_mode, _, rerank = mode.partition("+")
    return Settings(
        data_dir=store, search_mode=search_mode, reranker="bundled" if rerank else None, generator="extractive"
    )


def run_queries(
    assistant: Assistant, queries: dict[str, str], stems: dict[str, str], k: int
) -> tuple[dict[str, list[tuple[str, float]]], list[float]]:
    user = User("benchmark", (GROUP,))
    assistant.search("warm-up", user, k=k)
    ranked, latencies = {}, []
    for query_id, text in queries.items():
        started = time.perf_counter()
        sources = assistant.search(text, user, k=k)
        latencies.append((time.perf_counter() - started) * 1000)
        best: dict[str, float] = {}
        for source in sources:  # best chunk first, so the first score seen is the document's
            best.setdefault(stems[Path(source.path).stem.lower()], source.score)
        ranked[query_id] = list(best.items())
    return ranked, latencies


def write_run(path: Path, ranked: dict[str, list[tuple[str, float]]], tag: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as out:
        for query_id, docs in ranked.items():
            out.writelines(
                f"{query_id} Q0 {doc_id} {rank} {score:.6f} {tag}\n"
                for rank, (doc_id, score) in enumerate(docs, start=1)
            )


def read_run(path: Path) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            query_id, _, doc_id, _, score, _ = line.split()
            run.setdefault(query_id, {})[doc_id] = float(score)
    return run


def evaluate(run_file: Path, qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "recall.100"})
    per_query = evaluator.evaluate(read_run(run_file))
    # Queries the run has nothing for count as zero, as in BEIR.
    return {
        measure: sum(per_query.get(q, {}).get(key, 0.0) for q in qrels) / len(qrels)
        for measure, key in (("nDCG@10", "ndcg_cut_10"), ("Recall@10", "recall_10"), ("Recall@100", "recall_100"))
    }


@contextlib.contextmanager
def _work_dir(parent: Path | None, keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(dir=parent) as work:
        yield Path(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="a BEIR folder: corpus.jsonl, queries.jsonl, qrels/")
    parser.add_argument("--split", required=True, help="the qrels file to score against: qrels/SPLIT.tsv")
    parser.add_argument("--run-file", type=Path, required=True, help="where the TREC run file goes")
    parser.add_argument("--mode", action="append", choices=MODES, help="search mode(s); default: hybrid")
    parser.add_argument("--k", type=int, default=100, help="chunks asked of the search per query")
    parser.add_argument("--limit-queries", type=int, default=None, help="only the first N judged queries")
    parser.add_argument("--work", type=Path, default=None, help="where the files and store go (default: a temp dir)")
    parser.add_argument("--keep", type=Path, default=None, help="a folder for the files and store, kept for next time")
    parser.add_argument("--embedding-model", default=None, help="a bundled model's name or a local directory")
    args = parser.parse_args()
    modes = args.mode or ["hybrid"]
    queries, qrels = judged_queries(args.data, args.split, args.limit_queries)

    with _work_dir(args.work, args.keep) as work:
        corpus = read_jsonl(args.data / "corpus.jsonl")
        stems = write_corpus(corpus, work / "corpus")
        embedder = LocalEmbedding(args.embedding_model)
        with build_assistant(mode_settings(modes[0], work / "store"), embedder=embedder) as assistant:
            started = time.perf_counter()
            report = assistant.ingest([work / "corpus"], groups=[GROUP], progress=True)
            ingest_s = time.perf_counter() - started
        if not report.ok:
            print(f"{len(report.failed)} documents failed to ingest, e.g. {report.failed[0]}")
        print(
            f"{args.data.name}: {len(corpus)} documents, {report.chunks} chunks ingested in {ingest_s:.1f} s "
            f"({len(corpus) / ingest_s:.1f} documents/s); {len(queries)} judged queries of split {args.split!r}"
        )
        for mode in modes:
            with build_assistant(mode_settings(mode, work / "store"), embedder=embedder) as assistant:
                ranked, latencies = run_queries(assistant, queries, stems, args.k)
            run_file = args.run_file if len(modes) == 1 else args.run_file.with_suffix(f".{mode}.trec")
            write_run(run_file, ranked, tag=f"assistant-{mode}")
            scores = evaluate(run_file, qrels)
            latencies.sort()
            print(
                f"{mode:>14}: nDCG@10 {scores['nDCG@10']:.4f}  Recall@10 {scores['Recall@10']:.4f}  "
                f"Recall@100 {scores['Recall@100']:.4f}  search p50 {statistics.median(latencies):.1f} ms, "
                f"p95 {latencies[int(0.95 * (len(latencies) - 1))]:.1f} ms  -> {run_file}"
            )


if __name__ == "__main__":
    main()
