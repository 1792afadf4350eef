"""Two-turn conversations: is the second question searched for what it asks, whether it follows up or changes topic?

    .venv/bin/python -m benchmarks.follow_ups [--k 5] [--json OUT]

`samples/` (its three group folders) and ../shared/data/corpus/github_site_policy are ingested through
``Assistant.ingest`` into a fresh embedded store (hybrid search, the default). For each conversation of
benchmarks/conversations/two_turns.jsonl the first question is asked (``Assistant.ask``, extractive: no model), then
the second with the first turn as history, and hit@k is whether a passage of the second question's expected document
is among its k sources, share@k the share of the k that come from it (what a change of topic costs shows here: the
old topic's passages crowd out the new one's). Three ways of searching the second question are compared:

- joined: the previous question and this one, always (the assistant before issue 19);
- alone: this question only;
- assistant: what ``Assistant.ask`` now does (assistant/follow_ups.py).

By kind: "follow" (the second question depends on the first) and "switch" (it changes topic). The set and how it was
written are in benchmarks/conversations/README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from assistant import User, build_assistant
from assistant.follow_ups import joined
from benchmarks.beir import mode_settings
from model.prompt import Turn

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = [ROOT / "samples" / name for name in ("public", "hr", "security")]
POLICIES = ROOT.parent / "shared" / "data" / "corpus" / "github_site_policy"
CONVERSATIONS = ROOT / "benchmarks" / "conversations" / "two_turns.jsonl"
GROUP = "benchmark"
WAYS = ("joined", "alone", "assistant")


def hit(sources, expected: list[str]) -> float:
    return float(any(Path(source.path).name in expected for source in sources))


def share(sources, expected: list[str]) -> float:
    return sum(Path(source.path).name in expected for source in sources) / len(sources) if sources else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="per-conversation results")
    args = parser.parse_args()
    if not POLICIES.is_dir():
        raise SystemExit(f"the GitHub site policies are missing at {POLICIES} (see ../shared/data/README.md)")
    conversations = [json.loads(line) for line in CONVERSATIONS.read_text().splitlines() if line.strip()]
    user = User("benchmark", (GROUP,))
    results = []
    with tempfile.TemporaryDirectory() as work, build_assistant(mode_settings("hybrid", Path(work))) as assistant:
        report = assistant.ingest([*FOLDERS, POLICIES], groups=[GROUP])
        print(f"ingested {len(report.added)} files, {report.chunks} chunks; {len(conversations)} conversations")
        for conversation in conversations:
            first = assistant.ask(conversation["first"], user, k=args.k)
            second = conversation["second"]
            answer = assistant.ask(second, user, k=args.k, history=[Turn(conversation["first"], first.text)])
            found = {
                "joined": assistant.search(joined(second, conversation["first"]), user, k=args.k),
                "alone": assistant.search(second, user, k=args.k),
                "assistant": answer.sources,
            }
            results.append(
                {
                    **conversation,
                    "first_hit": hit(first.sources, conversation["first_expected"]),
                    "hits": {way: hit(found[way], conversation["expected"]) for way in WAYS},
                    "shares": {way: share(found[way], conversation["expected"]) for way in WAYS},
                    "found": {way: [Path(s.path).name for s in found[way]] for way in WAYS},
                }
            )
    print(f"hit@{args.k} / share@{args.k} of the second question's sources")
    print("| kind | n | " + " | ".join(WAYS) + " |")
    print("| --- | --- |" + " --- |" * len(WAYS))
    for kind in ("follow", "switch", "all"):
        rows = [r for r in results if kind in (r["kind"], "all")]
        cells = [
            f"{statistics.fmean(r['hits'][way] for r in rows):.2f} / {statistics.fmean(r['shares'][way] for r in rows):.2f}"
            for way in WAYS
        ]
        print(f"| {kind} | {len(rows)} | " + " | ".join(cells) + " |")
    print(f"first questions: hit@{args.k} {statistics.fmean(r['first_hit'] for r in results):.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
