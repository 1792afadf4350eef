"""BEIR SciFact from ../shared/data as files on disk, the way an organisation's documents arrive."""

import json
import shutil
from pathlib import Path

from beir import read_jsonl, read_qrels

ROOT = Path(__file__).resolve().parents[1]
SCIFACT = ROOT.parent / "shared" / "data" / "scifact"
CACHE = ROOT / "benchmarks" / ".cache"
GROUP = "research"


def require_scifact() -> Path:
    if not (SCIFACT / "corpus.jsonl").is_file():
        raise SystemExit(f"SciFact is missing: expected {SCIFACT}/corpus.jsonl (see ../shared/data/README.md)")
    return SCIFACT


def write_corpus(folder: Path, limit: int | None = None) -> int:
    """One Markdown file per abstract, the title as its heading; returns how many were written."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    count = 0
    with open(require_scifact() / "corpus.jsonl", encoding="utf-8") as lines:
        for line in lines:
            if limit is not None and count >= limit:
                break
            doc = json.loads(line)
            (folder / f"{doc['_id']}.md").write_text(f"# {doc['title']}\n\n{doc['text']}\n", encoding="utf-8")
            count += 1
    return count


def queries() -> dict[str, str]:
    return {q["_id"]: q["text"] for q in read_jsonl(require_scifact() / "queries.jsonl")}


def qrels() -> dict[str, dict[str, int]]:
    return read_qrels(require_scifact() / "qrels" / "train.tsv")
