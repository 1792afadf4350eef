"""Ingestion killed with SIGKILL at random moments converges, when run again, to the store one clean run makes.

Each round ingests a corpus of generated and sample documents into a fresh embedded (qdrant-edge, on disk) store
in a child process, kills it with SIGKILL at a seeded random moment, reopens the store to see what the kill left
(and that the dead process's lock did not outlive it), sometimes kills the next run as well, then runs ingestion
to the end and compares the store with a clean run's: the same point ids, payloads and vectors, no duplicates,
nothing missing, every document record complete, and search still answering.

Children come from a fork server that has imported the project once: a fresh interpreter spends about 7 s
importing torch and friends, a fork a fraction of a second. A fork server rather than forking pytest itself: by
the time this file runs in the whole suite, pytest's process has onnxruntime sessions and qdrant-edge shards
with threads of their own, and a fork inherits their locks but not their threads.

Run with -s to see where the kills landed.
"""

import multiprocessing
import os
import pickle
import random
import shutil
import sys
import time
import types
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLES

# Twelve rounds (fifteen kills), one moment in each twelfth of a run: every phase is still hit, at 40% less of the
# suite's time than twenty rounds took.
ROUNDS = 12
TWICE_EVERY = 4  # every 4th round kills the recovering run too before letting one finish
SEED = 7
# A quarter of the default 64, so that a run of a few seconds commits a dozen batches, each a boundary a kill can
# straddle.
BATCH = 16
FOLDERS = {"staff": ["staff"], "hr": ["hr", "finance"]}
# Fields that say when a run happened, not what it stored.
WHEN = "ingested_at"
NEEDLE = "Relocation allowances are paid with the first salary after the move, up to 4,200 euros."
NEEDLE_QUESTION = "how much is the relocation allowance"
JOIN_S = 120

BEFORE_ANY_WRITE = "before any write"
WRITING_NO_CHUNKS = "'writing' record, its chunks not yet written"
WRITING_WITH_CHUNKS = "'writing' record, chunks (partly) written"
BETWEEN_BATCHES = "between batches (some documents complete)"
ALL_COMPLETE = "all documents complete"
PHASES = (BEFORE_ANY_WRITE, WRITING_NO_CHUNKS, WRITING_WITH_CHUNKS, BETWEEN_BATCHES, ALL_COMPLETE)

WORDS = (  # noqa: SIM905 - a vocabulary reads better as prose than as a column of 51 strings
    "leave salary review invoice approval badge office canteen laptop password backup server incident "
    "report policy travel expense contract vendor audit training safety drill parking holiday remote "
    "equipment manager quarter budget payroll pension insurance onboarding contractor access network "
    "printer visitor archive retention deadline meeting project customer warranty refund shipment "
    "supplier compliance certificate"
).split()


# --- what runs in the children ----------------------------------------------------------------------------------


def _settings(base: Path, cache: Path):
    from assistant import Settings

    return Settings(
        data_dir=base / "data", qdrant_path=str(base / "qdrant"), embedding_cache_dir=cache, embed_batch_size=BATCH
    )


def _ingest(base: Path, cache: Path, corpus: Path, result: Path | None) -> None:
    """Ingests each folder with its groups; with ``result``, then checks the work is done and searches."""
    import threading

    import tqdm

    from assistant import User, build_assistant

    # tqdm's default lock is a multiprocessing semaphore, which a killed child would leave to the resource tracker.
    tqdm.tqdm.set_lock(threading.RLock())
    with build_assistant(_settings(base, cache)) as assistant:
        reports = [assistant.ingest([corpus / folder], groups=groups) for folder, groups in FOLDERS.items()]
        if result is None:
            return
        again = [assistant.ingest([corpus / folder], groups=groups) for folder, groups in FOLDERS.items()]
        hr_hits = assistant.search(NEEDLE_QUESTION, User("hana", ("hr",)), k=3)
        staff_hits = assistant.search(NEEDLE_QUESTION, User("sam", ("staff",)), k=10)
    _put(
        result,
        {
            "reports": [r.to_dict() for r in reports],
            "again": [r.to_dict() for r in again],
            "hr_hits": [(hit.path, hit.text) for hit in hr_hits],
            "staff_paths": [hit.path for hit in staff_hits],
        },
    )


def _inspect(base: Path, result: Path) -> None:
    """Everything the store holds, read the way a process starting after the kill reads it."""
    import qdrant_edge as qe

    from retrieval import ChunkStore, RetrievalSettings

    root = base / "qdrant"
    if not all((root / name / "edge_config.json").is_file() for name in ("documents", "documents_documents")):
        # Killed before the store's two shards were made (shard creation writes its config atomically, last).
        _put(result, {"created": False, "chunks": [], "records": []})
        return
    store = ChunkStore(RetrievalSettings(qdrant_path=str(root)), None)
    chunks, offset = [], None
    while True:
        batch, offset = store.chunks.shard.scroll(
            qe.ScrollRequest(offset=offset, limit=256, with_payload=True, with_vector=True)
        )
        for record in batch:
            sparse = record.vector.get("sparse")
            chunks.append(
                {
                    "id": str(record.id),
                    "payload": record.payload,
                    "dense": record.vector["dense"],
                    "sparse": dict(zip(sparse.indices, sparse.values, strict=True)) if sparse else {},
                }
            )
        if offset is None:
            break
    state = {
        "created": True,
        "chunks": chunks,
        "chunk_count": store.count_chunks(),
        "records": [asdict(record) for record in store.all_documents()],
    }
    store.close()
    _put(result, state)


def _nothing() -> None:
    pass


def _put(path: Path, value) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(pickle.dumps(value))
    os.replace(temporary, path)


# --- corpus -----------------------------------------------------------------------------------------------------


def _paragraph(rng: random.Random, low: int, high: int) -> str:
    sentences = []
    for _ in range(rng.randint(low, high)):
        words = [rng.choice(WORDS) for _ in range(rng.randint(6, 18))]
        sentences.append(" ".join(words).capitalize() + ".")
    return " ".join(sentences)


def _make_corpus(root: Path) -> int:
    """44 generated documents, from one paragraph to eight sections long, and the sample files."""
    rng = random.Random(SEED)
    count = 0
    for folder, number in (("staff", 30), ("hr", 14)):
        target = root / folder
        target.mkdir(parents=True)
        for n in range(number):
            sections = [_paragraph(rng, 1, 3)] if n % 5 == 0 else []
            for s in range(rng.randint(0 if sections else 1, 8)):
                body = "\n\n".join(_paragraph(rng, 2, 6) for _ in range(rng.randint(1, 3)))
                sections.append(f"## Section {s}\n\n{body}" if n % 3 else body)
            if folder == "hr" and n == 7:
                sections.insert(1, f"## Relocation\n\n{NEEDLE}")
            suffix = ".md" if n % 3 else ".txt"
            (target / f"{folder}-{n:02}{suffix}").write_text(f"# {folder} document {n}\n\n" + "\n\n".join(sections))
            count += 1
    for sample, folder in (("public", "staff"), ("security", "staff"), ("hr", "hr")):
        for path in sorted((SAMPLES / sample).iterdir()):
            shutil.copy(path, root / folder / path.name)
            count += 1
    return count


# --- the parent ---------------------------------------------------------------------------------------------------


class Children:
    """Starts the children, kills them, and reads what they leave behind."""

    def __init__(self, base: Path, cache: Path, corpus: Path):
        self.base, self.cache, self.corpus = base, cache, corpus
        self.context = multiprocessing.get_context("forkserver")
        # The heavy imports happen once, in the server; each child is a fork of it. nltk is what llama-index's
        # sentence splitter imports on first use: 1.4 s a child otherwise.
        self.context.set_forkserver_preload([__name__, "assistant", "retrieval.embedding", "transformers", "nltk"])
        self.serial = 0

    def _start(self, target, *args) -> multiprocessing.Process:
        process = self.context.Process(target=target, args=args, daemon=True)
        process.start()
        return process

    def _result_path(self) -> Path:
        self.serial += 1
        return self.base.parent / f"result-{self.serial}.pickle"

    def _finish(self, process: multiprocessing.Process, result: Path, what: str):
        process.join(JOIN_S)
        if process.exitcode is None:
            process.kill()
            process.join()
            raise AssertionError(f"{what} did not finish within {JOIN_S} s (a lock left behind would do that)")
        assert process.exitcode == 0, f"{what} failed with exit code {process.exitcode} (its stderr is above)"
        value = pickle.loads(result.read_bytes())
        result.unlink()  # each store's full contents, vectors included: a megabyte, fifty times
        return value

    def warm(self) -> None:
        """Starts the fork server, so that its imports are not counted in the first run's time."""
        process = self._start(_nothing)
        process.join(JOIN_S)
        assert process.exitcode == 0

    def fresh_store(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)
        self.base.mkdir(parents=True)

    def ingest(self) -> tuple[dict, float]:
        result = self._result_path()
        started = time.monotonic()
        process = self._start(_ingest, self.base, self.cache, self.corpus, result)
        process.join(JOIN_S)
        seconds = time.monotonic() - started
        return self._finish(process, result, "an ingestion run"), seconds

    def ingest_and_kill(self, moment: float) -> dict:
        started = time.monotonic()
        process = self._start(_ingest, self.base, self.cache, self.corpus, None)
        time.sleep(max(0.0, started + moment - time.monotonic()))
        held_lock = _holds_store_lock(process.pid, self.base / "qdrant")
        alive = process.exitcode is None
        process.kill()
        process.join(JOIN_S)
        return {"moment": moment, "alive": alive, "held_lock": held_lock, "exitcode": process.exitcode}

    def inspect(self) -> dict:
        result = self._result_path()
        return self._finish(self._start(_inspect, self.base, result), result, "reopening the store")


def _holds_store_lock(pid: int, root: Path) -> bool:
    """Whether ``pid`` holds the flock qdrant-edge takes on a shard's write-ahead log directory."""
    inodes = set()
    for name in ("documents", "documents_documents"):
        try:
            inodes.add((root / name / "wal").stat().st_ino)
        except FileNotFoundError:
            pass
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if (
            len(fields) > 5
            and fields[1] == "FLOCK"
            and fields[4] == str(pid)
            and int(fields[5].split(":")[2]) in inodes
        ):
            return True
    return False


def _comparable(state: dict) -> tuple[dict, dict]:
    chunks = {c["id"]: {**c, "payload": {k: v for k, v in c["payload"].items() if k != WHEN}} for c in state["chunks"]}
    records = {r["doc_id"]: {k: v for k, v in r.items() if k != WHEN} for r in state["records"]}
    return chunks, records


def _same_chunk(found: dict, expected: dict) -> bool:
    return (
        found["payload"] == expected["payload"]
        and np.allclose(found["dense"], expected["dense"], rtol=0, atol=1e-6)
        and found["sparse"].keys() == expected["sparse"].keys()
        and all(abs(found["sparse"][i] - value) <= 1e-6 for i, value in expected["sparse"].items())
    )


def _chunk_problems(state: dict, reference: dict) -> list[str]:
    """Duplicates, and chunk points that no clean run makes or that differ from a clean run's."""
    problems = []
    ids = [c["id"] for c in state["chunks"]]
    if len(ids) != len(set(ids)) or len(ids) != state.get("chunk_count", len(ids)):
        problems.append(
            f"duplicate points: {len(ids)} scrolled, {len(set(ids))} ids, {state.get('chunk_count')} counted"
        )
    places = Counter((c["payload"]["doc_id"], c["payload"]["chunk"]) for c in state["chunks"])
    if doubled := [place for place, n in places.items() if n > 1]:
        problems.append(f"several points for one chunk: {doubled[:3]}")
    chunks, _ = _comparable(state)
    reference_chunks, _ = _comparable(reference)
    if strangers := sorted(chunks.keys() - reference_chunks.keys()):
        problems.append(f"{len(strangers)} points a clean run does not make, e.g. {strangers[0]}")
    if differing := [
        i for i in chunks.keys() & reference_chunks.keys() if not _same_chunk(chunks[i], reference_chunks[i])
    ]:
        problems.append(f"{len(differing)} points differ from a clean run's, e.g. {chunks[differing[0]]['payload']}")
    return problems


def _after_kill(state: dict, reference: dict) -> tuple[str, list[str]]:
    """Where the kill landed, and any breach of the commit protocol: what a complete record promises must be there."""
    if not state["created"]:
        return BEFORE_ANY_WRITE, []
    problems = _chunk_problems(state, reference)
    chunks, records = _comparable(state)
    reference_chunks, reference_records = _comparable(reference)
    statuses = Counter(r["status"] for r in records.values())
    if set(statuses) - {"writing", "complete"}:
        problems.append(f"unexpected statuses {dict(statuses)}")
    owners = {c["payload"]["doc_id"] for c in chunks.values()}
    if orphans := owners - records.keys():
        problems.append(f"chunks of {len(orphans)} documents without a record (the mark must precede chunks)")
    for doc_id, record in records.items():
        expected = {k: v for k, v in reference_records.get(doc_id, {}).items() if k != "status"}
        if {k: v for k, v in record.items() if k != "status"} != expected:
            problems.append(f"record of {record['path']} differs from a clean run's")
        if record["status"] == "complete":
            have = {i for i, c in chunks.items() if c["payload"]["doc_id"] == doc_id}
            want = {i for i, c in reference_chunks.items() if c["payload"]["doc_id"] == doc_id}
            if have != want:
                problems.append(f"{record['path']} is complete with {len(have)} of its {len(want)} chunks")
    writing = {doc_id for doc_id, r in records.items() if r["status"] == "writing"}
    if not records and not chunks:
        phase = BEFORE_ANY_WRITE
    elif writing:
        phase = WRITING_WITH_CHUNKS if writing & owners else WRITING_NO_CHUNKS
    elif len(records) < len(reference_records):
        phase = BETWEEN_BATCHES
    else:
        phase = ALL_COMPLETE
    return phase, problems


def _converged(state: dict, reference: dict, run: dict, documents: int, corpus: Path) -> list[str]:
    problems = _chunk_problems(state, reference)
    chunks, records = _comparable(state)
    reference_chunks, reference_records = _comparable(reference)
    if missing := reference_chunks.keys() - chunks.keys():
        problems.append(f"{len(missing)} chunk points missing")
    if records != reference_records:
        problems.append(f"document records differ: {len(records)} against {len(reference_records)}")
    if incomplete := [r["path"] for r in records.values() if r["status"] != "complete"]:
        problems.append(f"records left incomplete: {incomplete[:3]}")
    if (
        any(r["failed"] for r in run["reports"])
        or sum(len(r["added"]) + len(r["unchanged"]) for r in run["reports"]) != documents
    ):
        problems.append(f"the rerun did not account for every document: {[r['failed'] for r in run['reports']]}")
    if sum(len(r["unchanged"]) for r in run["again"]) != documents or any(r["chunks"] for r in run["again"]):
        problems.append("a further run still had work to do")
    needle = str((corpus / "hr" / "hr-07.md").resolve())
    if not run["hr_hits"] or run["hr_hits"][0][0] != needle or NEEDLE not in run["hr_hits"][0][1]:
        problems.append(f"search no longer finds the relocation passage: {run['hr_hits'][:1]}")
    if any("/hr/" in path for path in run["staff_paths"]):
        problems.append("search shows staff an hr document")
    return problems


@pytest.fixture(scope="module")
def children(embedder, tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    corpus = root / "corpus"
    documents = _make_corpus(corpus)
    with pytest.MonkeyPatch.context() as patch:
        # Each child re-imports the parent's __main__ by its path. Streamlit's AppTest (the portal's tests) leaves
        # ui/app.py there, which cannot run outside Streamlit: the children get a bare __main__ instead.
        patch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
        # The int8 export the session's embedder made is the children's too: exporting takes seconds.
        yield Children(root / "store", embedder.onnx_file.parent, corpus), documents


def test_ingestion_killed_at_random_moments_converges_to_a_clean_run(children):
    children, documents = children
    children.warm()
    children.fresh_store()
    run, _ = children.ingest()
    reference = children.inspect()
    assert _converged(reference, reference, run, documents, children.corpus) == []
    # A second clean run must match the first, so that a difference after a kill is the kill's doing; it is the
    # one timed, the first having warmed the page cache.
    children.fresh_store()
    run, clean_s = children.ingest()
    assert _converged(children.inspect(), reference, run, documents, children.corpus) == []
    assert len(reference["records"]) == documents and len(reference["chunks"]) > 2 * documents

    rng = random.Random(SEED)
    kills, problems = [], []
    for round_ in range(ROUNDS):
        children.fresh_store()
        # One moment in each ROUNDS-th part of a clean run, from the child's start to its exit.
        moments = [(round_ + rng.random()) * clean_s / ROUNDS]
        if round_ % TWICE_EVERY == TWICE_EVERY - 1:
            moments.append(rng.random() * clean_s)
        for moment in moments:
            kill = children.ingest_and_kill(moment)
            state = children.inspect()
            kill["phase"], found = _after_kill(state, reference)
            complete = sum(record["status"] == "complete" for record in state["records"])
            kill["partial"] = 0 < complete < documents
            kills.append(kill)
            problems += [f"round {round_}, killed at {moment:.2f} s: {p}" for p in found]
        run, _ = children.ingest()
        problems += [
            f"round {round_}, after the rerun: {p}"
            for p in _converged(children.inspect(), reference, run, documents, children.corpus)
        ]

    summary = _summary(kills, clean_s, documents, len(reference["chunks"]), problems)
    print(summary)
    assert not problems, summary
    phases = Counter(kill["phase"] for kill in kills)
    # The moments span the whole run, so most kills land mid-write (embedding a batch takes most of a run's time),
    # not only before the first write or after the last.
    assert phases[WRITING_NO_CHUNKS] + phases[WRITING_WITH_CHUNKS] + phases[BETWEEN_BATCHES] >= ROUNDS // 4, summary


def _summary(kills: list[dict], clean_s: float, documents: int, chunks: int, problems: list[str]) -> str:
    phases = Counter(kill["phase"] for kill in kills)
    lines = [
        (
            f"\ncrash recovery: {len(kills)} SIGKILLs over {ROUNDS} rounds; a clean run of {documents} documents "
            f"({chunks} chunks) takes {clean_s:.2f} s from start to exit"
        ),
        *(f"  {phases[phase]:3d}  {phase}" for phase in PHASES),
        f"  {sum(k['partial'] for k in kills):3d}  of them with some documents complete and others not",
        f"  {sum(k['held_lock'] for k in kills):3d}  while the victim held the store's lock (each reopened at once)",
        f"  {sum(not k['alive'] for k in kills):3d}  after the run had ended",
        "  moments (s): " + ", ".join(f"{k['moment']:.2f}" for k in kills),
        f"  divergences: {len(problems)}",
        *(f"    {problem}" for problem in problems),
    ]
    return "\n".join(lines)
