import errno
import gzip
import hashlib
import json
import multiprocessing
import os
import shutil
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from assistant.audit import MAX_TEXT_CHARS, AuditError, AuditLog
from retrieval.store import chunk_point_id


def test_record_appends_one_line_and_read_filters_newest_first(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl")
    first = audit.record("ask", "ana", question="leave?")
    audit.record("feedback", "ana", rating=1)
    audit.record("ask", "bob", question="phish?")

    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert len(lines) == 3 and json.loads(lines[0]) == first
    assert set(first) == {"time", "event", "user", "question"}
    stamped = datetime.fromisoformat(first["time"])
    assert stamped.tzinfo is not None and stamped.utcoffset() == timedelta(0) and stamped.microsecond == 0

    assert [e["user"] for e in audit.read()] == ["bob", "ana", "ana"]
    assert [e["event"] for e in audit.read(user="ana")] == ["feedback", "ask"]
    assert [e["question"] for e in audit.read(events=["ask"])] == ["phish?", "leave?"]
    assert audit.read(user="ana", events={"ask"}) == [first]


def test_read_by_time(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl")
    lines = [
        {"time": "2025-01-01T10:00:00+00:00", "event": "ask", "user": "ana"},
        {"time": "2025-01-02T10:00:00+00:00", "event": "ask", "user": "ana"},
        {"time": "2025-01-03T10:00:00+00:00", "event": "ask", "user": "ana"},
    ]
    audit.path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    since = datetime(2025, 1, 2, tzinfo=UTC)
    assert [e["time"][:10] for e in audit.read(since=since)] == ["2025-01-03", "2025-01-02"]
    assert [e["time"][:10] for e in audit.read(until=datetime(2025, 1, 2, 12))] == ["2025-01-02", "2025-01-01"]
    assert len(audit.read(since=since, until=since + timedelta(hours=12))) == 1
    assert audit.read(since=datetime.now(UTC) + timedelta(days=1)) == []


def test_rotation_archives_every_file_and_read_spans_them(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl", max_bytes=300)
    for number in range(40):
        audit.record("ask", "ana", number=number)

    archives = _archives(audit)
    assert len(archives) >= 5 and all(p.stat().st_size <= 300 for p in [audit.path])
    assert len(audit.files()) == len(archives) + 1 and audit.files()[0] == audit.path
    # Newest first, without gaps, back to the very first event.
    assert [e["number"] for e in audit.read()] == list(range(39, -1, -1))


def _archives(audit: AuditLog) -> list[Path]:
    return sorted(audit.path.parent.glob(audit.path.name + ".*.gz"))


def _stored_strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _stored_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _stored_strings(item)


def test_a_flood_of_huge_comments_erases_no_one_elses_record(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl", max_bytes=20_000)
    audit.record("ask", "ana", texts={"question": "How many days of annual leave?"}, groups=["staff"])
    comment = "spam " * 200_000  # a million characters, sent sixty times from the portal
    for number in range(60):
        audit.record("feedback", "mallory", texts={"question": "q", "answer": "a", "comment": comment}, n=number)

    [ask] = audit.read(user="ana")
    assert ask["question"] == "How many days of annual leave?"
    assert [e["n"] for e in audit.read(user="mallory")] == list(range(59, -1, -1))
    archives = _archives(audit)
    assert len(archives) >= 10, "many rotations happened"
    for archive in archives:
        assert archive.read_bytes()[:2] == b"\x1f\x8b" and gzip.decompress(archive.read_bytes())
        assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    entries = audit.read()
    assert all(len(text) <= MAX_TEXT_CHARS for entry in entries for text in _stored_strings(entry))
    assert entries[0]["comment"].endswith(f"… [truncated, {len(comment)} characters in all]")
    assert entries[0]["comment"].startswith("spam spam")
    # The flood costs the disk about MAX_TEXT_CHARS per event, compressed; not a million characters each.
    assert sum(p.stat().st_size for p in audit.files()) < 100_000


def test_every_string_field_is_capped_and_a_long_question_is_still_found(tmp_path):
    question = "Which of these " + "x" * 10_000 + " is it?"
    for texts in ("text", "hash"):
        audit = AuditLog(tmp_path / texts / "audit.jsonl", texts=texts)
        entry = audit.record(
            "ingest", "ana", texts={"question": question}, paths=["/srv/" + "d/" * 5_000], reason="r" * 9_000
        )
        assert all(len(text) <= MAX_TEXT_CHARS for text in _stored_strings(entry))
        assert entry["paths"][0].startswith("/srv/d/d/")
        assert entry["paths"][0].endswith("… [truncated, 10005 characters in all]")
        assert audit.read() == [entry]
        # Hashed, the hash covers the whole question; as text, the log keeps (and matches) its truncated form, which
        # a question differing only past the cap shares.
        assert audit.read(question=question) == [entry]
        assert audit.read(question=question.replace("is it", "as it")) == ([] if texts == "hash" else [entry])
    assert entry["question_hmac"] == audit.digest(question)


def test_a_full_disk_refuses_the_event_and_keeps_the_log_as_it_was(tmp_path, monkeypatch):
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.record("ask", "ana", texts={"question": "one"})
    audit.record("ask", "bob", texts={"question": "two"})
    before = audit.path.read_bytes()

    real_write = os.write

    def fills_the_disk(descriptor, data):
        if b'"carol"' not in bytes(data):
            return real_write(descriptor, data)
        real_write(descriptor, bytes(data)[: len(data) // 2])  # the disk fills halfway through the line
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", fills_the_disk)
    with pytest.raises(AuditError, match="No space left on device. Free disk space"):
        audit.record("ask", "carol", texts={"question": "three"})
    monkeypatch.undo()

    assert audit.path.read_bytes() == before, "the half line is taken back"
    assert [e["question"] for e in audit.read()] == ["two", "one"]
    audit.record("ask", "carol", texts={"question": "three"})
    assert [e["question"] for e in audit.read()] == ["three", "two", "one"]


def test_a_disk_that_fills_during_a_rotation_refuses_the_event_and_loses_nothing(tmp_path, monkeypatch):
    audit = AuditLog(tmp_path / "audit.jsonl", max_bytes=1_000)
    for number in range(20):
        audit.record("ask", "ana", number=number)
    archived = _archives(audit)
    written = [e["number"] for e in audit.read()]

    def fills_the_disk(source, target, length=0):
        target.write(source.read(100))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", fills_the_disk)
    with pytest.raises(AuditError, match="No space left on device"):
        for number in range(20, 40):
            audit.record("ask", "ana", number=number)
    refused = number
    monkeypatch.undo()

    assert _archives(audit) == archived, "no half archive under an archive's name"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert [e["number"] for e in audit.read()][-len(written) :] == written
    assert [e["number"] for e in audit.read()] == list(range(refused - 1, -1, -1))
    # With space again, the rotation that failed is finished and the log goes on.
    for number in range(refused, refused + 30):
        audit.record("ask", "ana", number=number)
    assert [e["number"] for e in audit.read()] == list(range(refused + 29, -1, -1))
    assert all(p.suffix == ".gz" for p in audit.files()[1:])


def test_a_rotation_cut_short_by_a_crash_is_finished_by_the_next_writer(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl", max_bytes=1_000)
    for number in range(20):
        audit.record("ask", "ana", number=number)
    newest = _archives(audit)[-1]
    # Killed after the archive was renamed into place, before the moved-aside file was removed ...
    moved = newest.with_name(newest.name.removesuffix(".gz"))
    moved.write_bytes(gzip.decompress(newest.read_bytes()))
    assert [e["number"] for e in audit.read()] == list(range(19, -1, -1)), "read once, not twice"
    # ... and killed mid-way through compressing the next rotation.
    audit.path.rename(audit.path.with_name(audit.path.name + ".20990101T000000Z-999999"))
    stray = tmp_path / ".audit.jsonl.20990101T000000Z-999999.abc.gz.tmp"
    stray.write_bytes(b"\x1f\x8b half")
    assert [e["number"] for e in audit.read()] == list(range(19, -1, -1))

    again = AuditLog(tmp_path / "audit.jsonl", max_bytes=1_000)  # the restarted process
    again.record("ask", "ana", number=20)
    assert not moved.exists() and not stray.exists()
    assert all(p.suffix == ".gz" for p in again.files()[1:])
    assert [e["number"] for e in again.read()] == list(range(20, -1, -1))


def _write_from_another_process(path, writer):
    audit = AuditLog(path, max_bytes=2_000)
    for number in range(60):
        audit.record("ask", f"user{writer}", texts={"question": "x" * 100}, number=number)


def test_processes_rotating_the_same_log_lose_and_repeat_nothing(tmp_path):
    path = tmp_path / "audit.jsonl"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_from_another_process, args=(path, writer)) for writer in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(60)
        assert process.exitcode == 0

    audit = AuditLog(path)
    for writer in range(4):
        assert [e["number"] for e in audit.read(user=f"user{writer}")] == list(range(59, -1, -1))
    sequences = [int(p.name.split("-")[-1].removesuffix(".gz")) for p in _archives(audit)]
    assert sorted(sequences) == list(range(1, len(sequences) + 1)) and len(sequences) > 4


def test_a_torn_last_line_is_skipped_and_the_next_event_starts_a_line(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.record("ask", "ana", question="one")
    with audit.path.open("a") as file:
        file.write('{"time": "2025-01-01T10:00:00+00:00", "event": "as')  # the writer died here

    assert [e["question"] for e in audit.read()] == ["one"]
    audit.record("ask", "ana", question="two")
    assert [e["question"] for e in audit.read()] == ["two", "one"]


def test_concurrent_writers_produce_whole_lines(tmp_path):
    audit = AuditLog(tmp_path / "audit.jsonl", max_bytes=20_000)

    def write(writer):
        for number in range(50):
            audit.record("ask", f"user{writer}", question="x" * 200, number=number)

    threads = [threading.Thread(target=write, args=(writer,)) for writer in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    entries = audit.read()
    assert len(entries) == 400 and all(entry["question"] == "x" * 200 for entry in entries)
    for writer in range(8):
        mine = [e["number"] for e in audit.read(user=f"user{writer}")]
        assert mine == list(range(49, -1, -1))


def test_an_unwritable_log_is_an_error_that_says_what_to_do(tmp_path):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    audit = AuditLog(blocked / "audit.jsonl")
    with pytest.raises(AuditError, match="could not write the audit log .*ASSISTANT_AUDIT_LOG"):
        audit.record("ask", "ana")


def test_the_time_field_cannot_be_forged(tmp_path):
    with pytest.raises(ValueError, match="time"):
        AuditLog(tmp_path / "audit.jsonl").record("ask", "ana", time="2000-01-01T00:00:00+00:00")


# --- what the Assistant records ---------------------------------------------------------------------------------


@pytest.fixture
def handbook(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "leave.md").write_text("# Leave\n\n## Annual leave\n\nEvery employee gets 27 days of annual leave.\n")
    (folder / "secret.md").write_text("# Incident\n\nThe contractor account was phished on 3 March at 09:40.\n")
    return folder


def _uploaded(assistant, user, source: Path) -> Path:
    """`source` copied into `user`'s upload folder: the only files a user (not the operator) may have ingested."""
    folder = assistant.upload_folder(user)
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(source, folder / source.name))


def test_ingest_ask_feedback_delete_are_recorded_with_who_and_what(make_assistant, handbook, tmp_path):
    from assistant import User

    admin, ana = User("root", ("admin",)), User("ana", ("staff",))
    assistant = make_assistant()
    assert assistant.audit.path == tmp_path / "data" / "audit.jsonl"

    uploaded = _uploaded(assistant, admin, handbook / "leave.md")  # someone acting through the portal uploads
    assistant.ingest([uploaded], groups=["staff"], user=admin)
    assistant.ingest(handbook / "secret.md", groups=["security"])  # no user: a command-line ingest, not recorded
    answer = assistant.ask("How many days of annual leave?", ana)
    assistant.feedback(ana, "How many days of annual leave?", answer.text, -1, comment="it is 30 now")
    assistant.delete(uploaded, user=admin)

    delete, feedback, ask, ingest = assistant.audit.read()
    assert ingest["event"] == "ingest" and ingest["user"] == "root"
    assert ingest["paths"] == [str(uploaded)] and ingest["groups"] == ["staff"]
    assert (ingest["added"], ingest["updated"], ingest["failed"], ingest["chunks"]) == (1, 0, 0, 1)

    leave = str(uploaded.resolve())
    assert ask["event"] == "ask" and ask["user"] == "ana" and ask["question"] == "How many days of annual leave?"
    assert ask["sources"] == [
        {"doc_id": s.doc_id, "path": leave, "page": None, "heading": s.heading} for s in answer.sources
    ]
    assert ask["sources"][0]["heading"] == "Leave > Annual leave"
    assert (ask["model"], ask["adapter"]) == ("extractive", None) and 0 <= ask["seconds"] < 60
    assert ask["groups"] == ["staff"] and ask["chunks"] == [chunk_point_id(s.doc_id, s.chunk) for s in answer.sources]

    assert feedback == {
        "time": feedback["time"],
        "event": "feedback",
        "user": "ana",
        "question": "How many days of annual leave?",
        "answer": answer.text,
        "rating": -1,
        "comment": "it is 30 now",
    }
    assert (delete["event"], delete["user"], delete["paths"], delete["chunks"]) == ("delete", "root", [leave], 1)


def test_a_search_is_recorded_with_the_chunks_it_showed(make_assistant, handbook):
    from assistant import User

    assistant = make_assistant()
    assistant.ingest([handbook], groups=["staff"])
    sources = assistant.search("annual leave", User("ana", ("staff", "hr")), k=3)

    (search,) = assistant.audit.read()
    assert (search["event"], search["user"], search["groups"]) == ("search", "ana", ["hr", "staff"])
    assert search["question"] == "annual leave" and 0 <= search["seconds"] < 60
    # The point ids name the exact passages shown, even after the document is re-ingested and rechunked.
    assert search["chunks"] == [chunk_point_id(s.doc_id, s.chunk) for s in sources] and sources
    assert [assistant.store.get_chunk(point).text for point in search["chunks"]] == [s.text for s in sources]


def test_a_hashing_log_keeps_who_and_what_was_shown_but_not_what_was_typed(make_assistant, handbook):
    from assistant import User

    assistant = make_assistant(audit_text="hash")
    assistant.ingest([handbook], groups=["staff"])
    ana = User("ana", ("staff",))
    answer = assistant.ask("How many days of annual leave?", ana)
    assistant.search("phished contractor", ana)
    assistant.feedback(ana, "How many days of annual leave?", answer.text, 1, comment="my manager said 30")

    log = assistant.audit.path.read_text()
    for typed in ("annual leave?", "phished", "my manager", "27 days"):
        assert typed not in log
    feedback, _search, ask = assistant.audit.read()
    assert set(feedback) == {"time", "event", "user", "rating", "question_hmac", "answer_hmac", "comment_hmac"}
    assert ask["chunks"] and ask["sources"][0]["path"].endswith("leave.md") and ask["groups"] == ["staff"]
    # Whoever holds the key can check whether a question was asked; without it the hash says nothing.
    assert [e["event"] for e in assistant.audit.read(question="How many days of annual leave?")] == ["feedback", "ask"]
    assert assistant.audit.read(question="How many days of leave?") == []
    key = assistant.audit.key_path
    assert (
        key.stat().st_mode & 0o777 == 0o600
        and ask["question_hmac"] != hashlib.sha256(b"How many days of annual leave?").hexdigest()
    )


def test_a_stream_is_recorded_before_its_answer_is_handed_over(make_assistant, handbook):
    from assistant import Answer, User

    assistant = make_assistant()
    assistant.ingest([handbook], groups=["staff"])
    for piece in assistant.stream("annual leave days", User("ana", ("staff",))):
        if isinstance(piece, Answer):
            break  # a portal that stops reading at the Answer
    assert [e["event"] for e in assistant.audit.read()] == ["ask"]


def test_refused_questions_and_bad_ratings_record_nothing(make_assistant):
    from assistant import User

    assistant = make_assistant()
    with pytest.raises(ValueError, match="empty"):
        assistant.ask("  ", User("ana", ("staff",)))
    for rating in (0, 2, True, "1"):
        with pytest.raises(ValueError, match=r"\+1 or -1"):
            assistant.feedback(User("ana", ("staff",)), "q", "a", rating)
    assert assistant.audit.read() == []


def test_an_answer_that_cannot_be_recorded_is_an_error(make_assistant, handbook, tmp_path):
    from assistant import User

    blocked = tmp_path / "blocked"
    blocked.write_text("")
    assistant = make_assistant(audit_log=blocked / "audit.jsonl")
    assistant.ingest([handbook], groups=["staff"])
    shown = []
    with pytest.raises(AuditError, match="could not write the audit log"):
        shown.extend(assistant.stream("annual leave days", User("ana", ("staff",))))
    assert shown == []  # refused before any of the answer was shown

    # An audited change is refused before it is made, too.
    with pytest.raises(AuditError):
        assistant.delete(handbook / "leave.md", user=User("root", ("admin",)))
    with pytest.raises(AuditError):
        assistant.ingest([handbook / "new.md"], groups=["staff"], user=User("root", ("admin",)))
    assert len(assistant.documents(User("root", ("admin",)))) == 2


def test_a_user_shares_only_with_their_own_groups(make_assistant, handbook):
    from assistant import User

    assistant, ana = make_assistant(), User("ana", ("staff",))
    uploaded = _uploaded(assistant, ana, handbook / "leave.md")
    with pytest.raises(PermissionError, match="only with your own groups, not with hr"):
        assistant.ingest(uploaded, groups=["staff", "hr"], user=ana)
    assert assistant.store.count_chunks() == 0 and assistant.audit.read() == []
    assistant.ingest(uploaded, groups=["staff"], user=ana)
    assert assistant.store.count_chunks() == 1


def test_a_new_data_directory_is_readable_by_its_owner_only(make_assistant, tmp_path):
    assistant = make_assistant(data_dir=tmp_path / "fresh" / "data")
    assert assistant.settings.data_dir.stat().st_mode & 0o777 == 0o700
