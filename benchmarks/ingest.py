"""Ingestion speed: the whole pipeline against the embedding model alone on the same chunks.

    .venv/bin/python benchmarks/ingest.py [--limit N]

Writes SciFact's abstracts as Markdown files, ingests them into the default embedded Qdrant
store (on disk, under benchmarks/.cache), then embeds the very chunks the pipeline stored with
the same model and batch size. On a CPU the embedding is the bound: the ratio says how much
the loaders, chunking and Qdrant add on top of it.
"""

import argparse
import shutil
import time

from scifact import CACHE, GROUP, write_corpus

from assistant import Assistant, Settings
from retrieval.ingest import embedding_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N abstracts")
    args = parser.parse_args()

    corpus = CACHE / "scifact-files"
    count = write_corpus(corpus, args.limit)
    shutil.rmtree(CACHE / "scifact-store", ignore_errors=True)
    settings = Settings(data_dir=CACHE / "scifact-store")

    with Assistant(settings) as assistant:
        started = time.perf_counter()
        report = assistant.ingest([corpus], groups=[GROUP], progress=True)
        pipeline_s = time.perf_counter() - started
        assert report.ok, report.failed

        points, offset, texts = None, None, []
        while True:
            points, offset = assistant.store.client.scroll(assistant.store.chunks, limit=1024, offset=offset)
            texts += [embedding_text(p.payload["text"], p.payload["heading"]) for p in points]
            if offset is None:
                break
        started = time.perf_counter()
        for start in range(0, len(texts), settings.embed_batch_size):
            assistant.embedder.embed(texts[start : start + settings.embed_batch_size])
        embed_s = time.perf_counter() - started

    chunks = report.chunks
    print(f"documents: {count}, chunks: {chunks}")
    print(f"pipeline:        {chunks / pipeline_s:7.1f} chunks/s ({pipeline_s:.1f} s)")
    print(f"embedding alone: {chunks / embed_s:7.1f} chunks/s ({embed_s:.1f} s)")
    print(f"pipeline / embedding-alone time: {pipeline_s / embed_s:.2f}x")


if __name__ == "__main__":
    main()
