import io
import os
import stat

import pytest
import yaml

from assistant import User, cli
from assistant.users import UserStore, UserStoreError


@pytest.fixture
def store(tmp_path):
    return UserStore(tmp_path / "data" / "users.yaml")


def test_add_then_authenticate_with_the_right_password_only(store):
    store.add("ana", "correct horse", ["staff", "hr"])

    assert store.authenticate("ana", "correct horse") == User("ana", ("hr", "staff"))
    assert store.authenticate("ana", "wrong horse!") is None
    assert store.authenticate("bob", "correct horse") is None
    assert store.users() == [User("ana", ("hr", "staff"))]


def test_the_file_holds_hashes_not_passwords(store):
    store.add("ana", "correct horse", ["staff"])
    data = yaml.safe_load(store.path.read_text())
    assert set(data["users"]["ana"]) == {"password_hash", "groups"}
    assert data["users"]["ana"]["password_hash"].startswith("$argon2id$")
    assert "correct horse" not in store.path.read_text()


def test_add_replaces_password_and_groups_and_users_are_sorted(store):
    store.add("zoe", "first password", ["staff"])
    store.add("ana", "first password", ["staff"])
    store.add("zoe", "second password", ["security"])

    assert store.authenticate("zoe", "first password") is None
    assert store.authenticate("zoe", "second password") == User("zoe", ("security",))
    assert [user.name for user in store.users()] == ["ana", "zoe"]


def test_remove(store):
    store.add("ana", "correct horse", ["staff"])
    store.remove("ana")
    assert store.users() == [] and store.authenticate("ana", "correct horse") is None
    with pytest.raises(UserStoreError, match="no user 'ana'"):
        store.remove("ana")


@pytest.mark.parametrize(
    ("name", "password", "groups", "message"),
    [
        ("", "long enough", ["staff"], "invalid user name"),
        ("ana maria", "long enough", ["staff"], "invalid user name"),
        ("ana", "short", ["staff"], "at least 8"),
        ("ana", "long enough", ["hr*"], "invalid group name 'hr\\*'"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(store, name, password, groups, message):
    with pytest.raises(UserStoreError, match=message):
        store.add(name, password, groups)
    assert not store.path.exists()


def test_a_missing_file_means_no_users(store):
    assert store.users() == [] and store.authenticate("ana", "whatever1") is None


@pytest.mark.parametrize(
    "text",
    ["users: [ana, bob]\n", "users: {ana: {groups: [staff]}}\n", "ana: {password_hash: x, groups: []}\n", "{{{\n"],
)
def test_a_corrupt_file_is_an_error_naming_the_file(store, text):
    store.path.parent.mkdir(parents=True)
    store.path.write_text(text)
    with pytest.raises(UserStoreError, match=f"{store.path}.*(fix it|move it away)"):
        store.users()
    with pytest.raises(UserStoreError):
        store.authenticate("ana", "whatever1")


def test_the_file_is_private_and_replaced_whole(store, monkeypatch):
    store.add("ana", "correct horse", ["staff"])
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600

    # A write that fails half way leaves the previous file as it was, and no temporary file behind.
    before = store.path.read_bytes()

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space"):
        store.add("bob", "correct horse", ["staff"])
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["users.yaml", "users.yaml.lock"]


def test_an_outdated_hash_is_upgraded_at_sign_in(store):
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("correct horse")
    store.path.parent.mkdir(parents=True)
    store.path.write_text(yaml.safe_dump({"users": {"ana": {"password_hash": weak, "groups": ["staff"]}}}))

    assert store.authenticate("ana", "correct horse") == User("ana", ("staff",))
    upgraded = yaml.safe_load(store.path.read_text())["users"]["ana"]["password_hash"]
    assert upgraded != weak and not store._hasher.check_needs_rehash(upgraded)
    assert store.authenticate("ana", "correct horse") is not None


def test_cli_add_list_remove(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse\n"))
    assert cli.main(["users", "add", "ana", "--group", "staff", "--group", "hr", "--password-stdin"]) == 0
    assert "added ana" in capsys.readouterr().out

    store = UserStore(tmp_path / "data" / "users.yaml")
    assert store.authenticate("ana", "correct horse") == User("ana", ("hr", "staff"))

    assert cli.main(["users", "list"]) == 0
    assert "ana  groups=hr,staff" in capsys.readouterr().out
    assert cli.main(["users", "remove", "ana"]) == 0
    assert store.users() == []


def test_cli_errors_exit_2_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["users", "add", "ana", "--group", "staff", "--password-stdin"]) == 2
    assert "at least 8" in capsys.readouterr().err
    assert cli.main(["users", "remove", "nobody"]) == 2
    assert "no user 'nobody'" in capsys.readouterr().err


def test_cli_prompts_twice_and_refuses_a_mismatch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(tmp_path / "data"))
    answers = iter(["correct horse", "correct hose"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert cli.main(["users", "add", "ana", "--group", "staff"]) == 2
    assert "differ" in capsys.readouterr().err and not (tmp_path / "data" / "users.yaml").exists()


def test_an_unknown_name_costs_a_password_check_too(store, monkeypatch):
    # Otherwise how long a refusal takes tells an attacker which names have accounts.
    store.add("ana", "correct horse", ["staff"])
    checked = []
    real_verify = store._verify
    monkeypatch.setattr(
        store,
        "_verify",
        lambda password_hash, password: checked.append(password_hash) or real_verify(password_hash, password),
    )

    assert store.authenticate("bob", "correct horse") is None
    assert len(checked) == 1 and checked[0].startswith("$argon2id$")
