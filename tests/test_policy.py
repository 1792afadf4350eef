"""The service keeps its own rules (security findings 6 and 7): whoever calls the Assistant, through whichever
interface, cannot delete, read server files into the store, share outside their groups or fill the disk unless the
policy allows it; and what a refusal says names no server path, adapter or group the caller is not in."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from assistant import InvalidRequest, NotPermitted, User
from assistant.service import MAX_COMMENT_CHARS, MAX_QUESTION_CHARS
from assistant.uploads import Upload
from assistant.users import user_from_claims

STAFF = User("ana", ("staff",))
ADMIN = User("root", ("admin",))
LEAVE = "# Leave\n\nEmployees get 28 days of annual leave, including public holidays.\n"


def upload(name: str, data: bytes) -> Upload:
    return Upload(name, len(data), io.BytesIO(data))


@pytest.fixture
def assistant(make_assistant, tmp_path):
    assistant = make_assistant()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "leave.md").write_text(LEAVE)
    assert assistant.ingest([docs / "leave.md"], groups=["staff"]).ok  # the operator's own ingestion
    return assistant


def test_only_administrators_delete_whoever_calls(assistant, tmp_path):
    [leave] = assistant.documents(STAFF)

    with pytest.raises(NotPermitted, match="only administrators"):
        assistant.delete(leave.doc_id, user=STAFF)

    assert assistant.documents(STAFF) == [leave]
    assert assistant.delete(leave.doc_id, user=ADMIN).doc_id == leave.doc_id
    assert assistant.audit.read(events=["delete"])[-1]["user"] == "root"


def test_a_user_cannot_have_a_server_file_read_into_the_store(assistant, tmp_path):
    secret = tmp_path / "service-keys.txt"
    secret.write_text("qdrant api key: 1234-secret\n")

    for user in (STAFF, ADMIN):  # an administrator in the portal is not the operator at the server's shell
        with pytest.raises(NotPermitted, match="upload") as refused:
            assistant.ingest([secret], groups=["staff"], user=user)
        assert str(tmp_path) not in str(refused.value) and str(secret) in refused.value.detail
    assert assistant.search("qdrant api key", ADMIN) == [] or all(
        "1234-secret" not in s.text for s in assistant.search("qdrant api key", ADMIN)
    )

    # An administrator may re-read what the store already holds; anyone may index their own uploads.
    [leave] = assistant.documents(ADMIN)
    assert assistant.ingest([leave.path], groups=["staff"], user=ADMIN).unchanged == [leave.path]
    with pytest.raises(NotPermitted):
        assistant.ingest([leave.path], groups=["staff"], user=STAFF)
    result = assistant.upload([upload("canteen.md", b"# Canteen\n\nThe canteen opens at 07:30.\n")], ["staff"], STAFF)
    assert [row["outcome"] for row in result.files] == ["added"]


def test_a_user_shares_only_with_their_own_groups_and_with_one_at_least(assistant):
    memo = upload("memo.md", b"# Memo\n\nA memo.\n")
    with pytest.raises(NotPermitted, match="not with hr"):
        assistant.upload([memo], ["staff", "hr"], STAFF)
    with pytest.raises(InvalidRequest, match="at least one group"):
        assistant.upload([memo], [], STAFF)
    assert not assistant.upload_folder(STAFF).exists()  # refused before anything was written


def test_uploads_stop_at_the_users_quota_and_a_replacement_frees_what_it_replaces(make_assistant):
    assistant = make_assistant(upload_quota_mb=0.01)  # 10,485 bytes
    page = b"The shuttle leaves every twenty minutes. " * 150  # 6,150 bytes

    first = assistant.upload([upload("shuttle.txt", page)], ["staff"], STAFF)
    second = assistant.upload([upload("shuttle-copy.txt", page)], ["staff"], STAFF)
    again = assistant.upload([upload("shuttle.txt", page + b"Weekends too.")], ["staff"], STAFF)

    assert [row["outcome"] for row in first.files] == ["added"]
    assert second.files == [{"file": "shuttle-copy.txt", "outcome": "refused", "reason": second.files[0]["reason"]}]
    assert "quota" in second.files[0]["reason"]
    assert [row["outcome"] for row in again.files] == ["updated"]
    assert sorted(p.name for p in assistant.upload_folder(STAFF).iterdir()) == ["shuttle.txt"]


def test_a_failed_or_deleted_upload_leaves_nothing_in_the_folder_and_no_path_in_the_answer(assistant):
    result = assistant.upload(
        [upload("broken.pdf", b"%PDF-1.7 not really"), upload("notes.txt", b"The car park closes at 22:00.")],
        ["staff"],
        STAFF,
    )

    outcomes = {row["file"]: row["outcome"] for row in result.files}
    assert outcomes == {"broken.pdf": "failed", "notes.txt": "added"}
    folder = assistant.upload_folder(STAFF)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    said = repr(result.to_dict())
    assert str(assistant.settings.data_dir) not in said and "uploads" not in said

    notes = next(d for d in assistant.documents(STAFF) if d.path.endswith("notes.txt"))
    assistant.delete(notes.doc_id, user=ADMIN)
    assert not (folder / "notes.txt").exists()


def test_free_text_past_its_limit_is_refused_not_stored(assistant):
    with pytest.raises(InvalidRequest, match="over the limit"):
        assistant.ask("leave " * (MAX_QUESTION_CHARS // 6 + 1), STAFF)
    with pytest.raises(InvalidRequest, match="over the limit"):
        assistant.search("x" * (MAX_QUESTION_CHARS + 1), STAFF)
    with pytest.raises(InvalidRequest, match="comment"):
        assistant.feedback(STAFF, "How much leave?", "28 days [1]", 1, "!" * (MAX_COMMENT_CHARS + 1))
    assert assistant.audit.read(events=["ask", "search", "feedback"]) == []


def test_oidc_users_are_who_their_issuer_and_subject_say_not_their_display_name(tmp_path, make_assistant):
    one, _ = user_from_claims({"iss": "https://idp.one", "sub": "1", "email": "ana@corp", "groups": ["staff"]})
    other, _ = user_from_claims({"iss": "https://idp.two", "sub": "1", "email": "ana@corp", "groups": ["staff"]})
    renamed, _ = user_from_claims({"iss": "https://idp.one", "sub": "1", "email": "ana.b@corp", "groups": ["staff"]})

    assert one.name == other.name == "ana@corp" and one.id != other.id and renamed.id == one.id
    assistant = make_assistant()
    assert assistant.upload_folder(one) != assistant.upload_folder(other)
    assert assistant.upload_folder(renamed) == assistant.upload_folder(one)
    assert Path(assistant.upload_folder(one)).parent == assistant.settings.data_dir / "uploads"
    with pytest.raises(ValueError, match="subject"):
        user_from_claims({"iss": "https://idp.one", "email": "ana@corp"})

    assistant.search("leave", one)
    [record] = assistant.audit.read(events=["search"])
    assert record["user"] == one.id and record["name"] == "ana@corp"
