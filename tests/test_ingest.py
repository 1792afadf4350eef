"""Incremental, idempotent ingestion on the real embedder and an in-memory Qdrant."""

import pytest

from retrieval.ingest import document_id
from retrieval.store import COMPLETE


@pytest.fixture
def admin():
    from assistant import User

    return User("root", ("admin",))


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def handbook(days=27, extra_sections=0):
    text = f"# Handbook\n\n## Annual leave\n\nEvery employee gets {days} days of annual leave per calendar year.\n"
    for n in range(extra_sections):
        text += f"\n## Topic {n}\n\n" + " ".join(f"Sentence {n}.{i} about topic number {n}." for i in range(60)) + "\n"
    return text


def store_state(assistant):
    """Every chunk point as (id, doc_id, chunk, content_hash), sorted: the store's whole content."""
    points, offset = [], None
    while True:
        batch, offset = assistant.store.scroll_chunks(limit=256, offset=offset)
        points += [(n.id_, n.metadata["doc_id"], n.metadata["chunk"], n.metadata["content_hash"]) for n in batch]
        if offset is None:
            return sorted(points)


def test_ingest_then_search_finds_the_passage_with_its_metadata(make_assistant, tmp_path, admin):
    docs = tmp_path / "docs"
    write(docs / "handbook.md", handbook())
    write(docs / "notes.txt", "The cafeteria opens at 8 am and closes at 3 pm on weekdays.")
    assistant = make_assistant()

    report = assistant.ingest([docs], groups=["staff"])

    assert sorted(report.added) == sorted(str(p.resolve()) for p in docs.iterdir())
    assert report.ok and report.chunks >= 2
    hit = assistant.search("how many vacation days do I get", admin, k=1)[0]
    assert "27 days" in hit.text
    assert hit.path == str((docs / "handbook.md").resolve())
    assert hit.heading == "Handbook > Annual leave"
    assert hit.doc_id == document_id(docs / "handbook.md")
    payload = assistant.store.get_chunk(hit_id(assistant, hit)).metadata
    assert payload["groups"] == ["staff"] and payload["chunk"] == 0 and len(payload["content_hash"]) == 64
    assert payload["ingested_at"]


def hit_id(assistant, source):
    from retrieval.store import chunk_point_id

    return chunk_point_id(source.doc_id, source.chunk)


def test_second_run_changes_nothing(make_assistant, tmp_path):
    docs = tmp_path / "docs"
    write(docs / "a.md", handbook(extra_sections=3))
    write(docs / "b.txt", "Parking permits are issued by the facilities desk on the ground floor.")
    assistant = make_assistant()
    assistant.ingest([docs], groups=["staff"])
    before = store_state(assistant)

    again = assistant.ingest([docs], groups=["staff"])

    assert again.added == again.updated == [] and len(again.unchanged) == 2 and again.chunks == 0
    assert store_state(assistant) == before


def test_changed_file_replaces_its_chunks_and_leaves_no_stale_ones(make_assistant, tmp_path, admin):
    doc = write(tmp_path / "handbook.md", handbook(days=27, extra_sections=4))
    assistant = make_assistant()
    assistant.ingest([doc], groups=["staff"])
    long_count = assistant.store.count_chunks()
    assert long_count > 3

    write(doc, handbook(days=30))  # shorter: its old tail chunks must go
    report = assistant.ingest([doc], groups=["staff"])

    assert report.updated == [str(doc.resolve())]
    record = assistant.store.get_document(document_id(doc))
    assert record.status == COMPLETE and assistant.store.count_chunks() == record.chunks < long_count
    texts = " ".join(s.text for s in assistant.search("annual leave days", admin, k=10))
    assert "30 days" in texts and "27 days" not in texts


def test_regrouping_takes_effect_in_the_next_search(make_assistant, tmp_path):
    from assistant import User

    doc = write(tmp_path / "pay.md", "# Pay\n\nSalaries are paid on the 25th day of each month.")
    assistant = make_assistant()
    assistant.ingest([doc], groups=["hr"])
    hr, staff = User("h", ("hr",)), User("s", ("staff",))
    assert assistant.search("when are salaries paid", hr) and not assistant.search("when are salaries paid", staff)

    report = assistant.ingest([doc], groups=["staff"])

    assert report.updated == [str(doc.resolve())]
    assert assistant.search("when are salaries paid", staff) and not assistant.search("when are salaries paid", hr)
    assert [d.groups for d in assistant.documents(staff)] == [("staff",)]


def test_prune_removes_documents_whose_files_are_gone(make_assistant, tmp_path, admin):
    docs = tmp_path / "docs"
    keep = write(docs / "keep.md", "# Keep\n\nThe office plants are watered on Mondays by the facilities team.")
    gone = write(
        docs / "gone.md", "# Gone\n\nThe old coffee machine on floor two is out of order until further notice."
    )
    elsewhere = write(tmp_path / "other" / "x.md", "# Other\n\nThis file lives outside the pruned folder entirely.")
    assistant = make_assistant()
    assistant.ingest([docs, elsewhere], groups=["staff"])
    gone.unlink()
    elsewhere.unlink()

    without = assistant.ingest([docs], groups=["staff"])
    assert without.removed == [] and len(assistant.documents(admin)) == 3

    report = assistant.ingest([docs], groups=["staff"], prune=True)

    # Only documents under the named folder are pruned; a file elsewhere is not this run's business.
    assert report.removed == [str(gone.resolve())]
    assert sorted(d.path for d in assistant.documents(admin)) == sorted([str(keep.resolve()), str(elsewhere.resolve())])
    assert all(s.doc_id != document_id(gone) for s in assistant.search("coffee machine", admin, k=10))


def test_a_run_killed_halfway_converges_on_rerun(make_assistant, tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    for n in range(6):
        write(docs / f"doc{n}.md", handbook(days=20 + n, extra_sections=2))
    clean = make_assistant(collection="clean")
    clean.ingest([docs], groups=["staff"])

    crashed = make_assistant(collection="crashed", embed_batch_size=4)
    real_embed = crashed.ingestor.embedder.embed
    calls = {"n": 0}

    class Killed(BaseException):  # not an Exception: nothing may swallow it, like a SIGKILL
        pass

    def embed_then_die(texts):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Killed()
        return real_embed(texts)

    monkeypatch.setattr(crashed.ingestor, "embedder", type("E", (), {"embed": staticmethod(embed_then_die)})())
    with pytest.raises(Killed):
        crashed.ingest([docs], groups=["staff"])
    half = store_state(crashed)
    assert 0 < len(half) < len(store_state(clean))
    monkeypatch.undo()

    report = crashed.ingest([docs], groups=["staff"])

    assert report.ok and len(report.unchanged) + len(report.added) == 6
    assert store_state(crashed) == store_state(clean)
    assert {d.status for d in crashed.store.all_documents()} == {COMPLETE}
    assert len(crashed.ingest([docs], groups=["staff"]).unchanged) == 6


def test_bad_input_is_reported_per_file_and_the_rest_goes_on(make_assistant, tmp_path, admin):
    docs = tmp_path / "docs"
    good = write(docs / "good.md", "# Good\n\nThe badge office is on the third floor next to reception.")
    (docs / "empty.txt").write_bytes(b"")
    (docs / "corrupt.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\nthis is not really a pdf")
    (docs / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (docs / "image.xyz").write_bytes(b"\x89PNG\r\n")
    assistant = make_assistant()

    named = tmp_path / "notes.xyz"
    named.write_text("a file named explicitly is a failure, not a skip")

    report = assistant.ingest([docs, tmp_path / "missing.md", named], groups=["staff"])

    assert report.added == [str(good.resolve())]
    reasons = {f.path.rsplit("/", 1)[-1]: f.reason for f in report.failed}
    assert set(reasons) == {"empty.txt", "corrupt.pdf", "binary.txt", "missing.md", "notes.xyz"}
    assert "unsupported" in reasons["notes.xyz"] and ".docx" in reasons["notes.xyz"]
    assert "empty" in reasons["empty.txt"]
    assert "PDF" in reasons["corrupt.pdf"]
    assert "binary" in reasons["binary.txt"]
    assert reasons["missing.md"] == "no such file or directory"
    assert [s.path.rsplit("/", 1)[-1] for s in report.skipped] == ["image.xyz"]
    assert assistant.search("where is the badge office", admin, k=1)[0].path == str(good.resolve())


def test_a_file_that_turns_corrupt_keeps_its_stored_version(make_assistant, tmp_path, admin):
    doc = write(tmp_path / "policy.md", "# Policy\n\nVisitors must sign in at the front desk and wear a badge.")
    assistant = make_assistant()
    assistant.ingest([doc], groups=["staff"])
    before = store_state(assistant)
    doc.write_bytes(b"\x00\xff\xfe" * 500)

    report = assistant.ingest([doc], groups=["staff"])

    assert [f.path for f in report.failed] == [str(doc)] and "binary" in report.failed[0].reason
    assert store_state(assistant) == before
    assert "front desk" in assistant.search("visitors sign in", admin, k=1)[0].text


def test_delete_by_path_and_by_id(make_assistant, tmp_path, admin):
    from assistant import NotFound

    a = write(tmp_path / "a.md", "# A\n\nThe library lends laptops for up to two weeks at a time.")
    b = write(tmp_path / "b.md", "# B\n\nThe gym in the basement is open to staff from 6 am.")
    assistant = make_assistant()
    assistant.ingest([a, b], groups=["staff"])

    assert assistant.delete(a).path == str(a.resolve())
    assert assistant.delete(document_id(b)).path == str(b.resolve())
    assert assistant.documents(admin) == [] and assistant.store.count_chunks() == 0
    with pytest.raises(NotFound, match="assistant documents"):
        assistant.delete(a)


def test_embedded_store_persists_and_refuses_a_second_holder(embedder, tmp_path, admin):
    from assistant import Settings, build_assistant
    from retrieval import StoreLockedError

    doc = write(tmp_path / "a.md", "# A\n\nThe fire assembly point is the north car park.")
    settings = Settings(data_dir=tmp_path / "data")
    assert settings.qdrant_path == str(tmp_path / "data" / "qdrant")
    with build_assistant(settings, embedder=embedder) as first:
        first.ingest([doc], groups=["staff"])
        with pytest.raises(StoreLockedError, match="one process at a time.*ASSISTANT_QDRANT_URL"):
            build_assistant(settings, embedder=embedder)
    with build_assistant(settings, embedder=embedder) as reopened:
        assert "north car park" in reopened.search("where do we gather in a fire", admin, k=1)[0].text
        assert reopened.ingest([doc], groups=["staff"]).unchanged == [str(doc.resolve())]


def test_a_file_linked_inside_the_folder_is_read_once_under_its_real_path(make_assistant, tmp_path):
    docs = tmp_path / "docs"
    real = write(docs / "real.md", "# Post\n\nThe post room sorts the mail twice a day.")
    (docs / "alias.md").symlink_to("real.md")

    report = make_assistant().ingest([docs, real], groups=["staff"])

    assert report.added == [str(real.resolve())] and report.ok and not report.skipped
