"""One ingestion in a process of its own, for tests/test_bad_input.py (not a test module itself).

Some bad input can only be shown from outside the test process: a permission failure is real only for a user
who is not root (root reads files whatever their mode), and a peak of memory is measured per process. Given a
JSON spec as its argument, this builds an Assistant, ingests a warm-up batch and searches once, optionally drops
to another user for good, notes its resident memory, ingests the batch, searches, and prints one JSON line: the
report, the hits of each query and the memory before the batch.

The user is dropped only after the warm-up because this interpreter's standard library lives under /root, which
no other user may enter: everything the batch needs is imported by then.
"""

import json
import os
import sys
from pathlib import Path


def _resident_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _become(uid: int, gid: int, data_dir: Path) -> None:
    # The audit log and its lock were created by root during the warm-up; the new user must go on writing them.
    for path in [data_dir, *data_dir.rglob("*")]:
        os.chown(path, uid, gid)
    # Groups first, then the gid, then the uid (real, effective and saved): after that nothing can be taken back.
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def main() -> None:
    spec = json.loads(sys.argv[1])

    from assistant import Settings, User, build_assistant

    settings = Settings(**spec["settings"])
    reader = User("reader", tuple(spec["groups"]))
    with build_assistant(settings) as assistant:
        assistant.ingest(spec["warm_up"], groups=spec["groups"])
        assistant.search("warm up", reader)
        if spec.get("user"):
            _become(*spec["user"], settings.data_dir)
        resident_before = _resident_kb()
        report = assistant.ingest(spec["batch"], groups=spec["groups"])
        hits = {query: [[s.path, s.text] for s in assistant.search(query, reader, k=3)] for query in spec["queries"]}
    print(json.dumps({"report": report.to_dict(), "hits": hits, "resident_before_kb": resident_before}))


if __name__ == "__main__":
    main()
