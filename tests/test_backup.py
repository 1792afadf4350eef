"""Backups of the assistant's state and restores from them (scripts/backup.py).

The embedded store is backed up for real: documents ingested into an on-disk store, backed up, the whole data
directory destroyed, restored, and the same search finds the same passages, with the audit log, its hashing key,
the accounts and the uploads back byte for byte.

No Qdrant server runs here. For the server path, a loopback HTTP server answering as Qdrant's snapshot API does
stands in for it and records every request: those tests check the calls the script makes (which endpoints, in what
order, with the API key, to that host and no other) and what it does with the answers, not what Qdrant itself does
with a snapshot.
"""

import email
import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def _load_script():
    spec = importlib.util.spec_from_file_location("backup_script", ROOT / "scripts" / "backup.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


backup = _load_script()
# The loopback stand-in for Qdrant speaks plain HTTP; qdrant-client warns about the API key on it, rightly, elsewhere.
pytestmark = pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")


def _settings_env(monkeypatch, **values):
    """Only the given ASSISTANT_* variables, as the script reads its settings from the environment."""
    for name in list(os.environ):
        if name.startswith("ASSISTANT_"):
            monkeypatch.delenv(name)
    for name, value in values.items():
        monkeypatch.setenv(f"ASSISTANT_{name.upper()}", str(value))


def _tree(directory: Path) -> dict[str, str]:
    """Every file under `directory` by relative path, with its SHA-256."""
    if not directory.exists():
        return {}
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def _copytree(source: Path, target: Path) -> None:
    # Sparse, like the store's own files (mostly preallocated holes): a dense copy would write 300 MB per test.
    subprocess.run(["cp", "-a", "--sparse=always", str(source), str(target)], check=True)


def _run(*argv: str) -> int:
    return backup.main([str(arg) for arg in argv])


STAFF = ("ana", ("staff",))
QUESTION = "How many days of annual leave do employees get?"


@pytest.fixture(scope="module")
def embedded(embedder, tmp_path_factory):
    """An installation with an embedded store (samples ingested, a question asked and audited with hashed text, an
    account, an upload), and a backup of it. Tests work on copies of either."""
    from assistant import Settings, User, build_assistant
    from assistant.users import UserStore

    root = tmp_path_factory.mktemp("embedded")
    data = root / "data"
    with pytest.MonkeyPatch.context() as monkeypatch:
        _settings_env(monkeypatch, data_dir=data, qdrant_path=data / "qdrant", audit_text="hash")
        settings = Settings()
        with build_assistant(settings, embedder=embedder) as assistant:
            admin = User("root", ("admin",))
            # As the operator does (`assistant ingest`): files outside an upload folder are not a user's to index.
            assistant.ingest([SAMPLES / "public"], groups=["staff"])
            assistant.ingest([SAMPLES / "hr"], groups=["hr"])
            ana = User(*STAFF)
            searched = [(source.path, source.text) for source in assistant.search(QUESTION, ana)]
            assistant.ask(QUESTION, ana)
            documents = [(doc.path, doc.groups) for doc in assistant.documents(admin)]
            question = {"question": QUESTION, "expected": ["public/employee-handbook.md"], "groups": ["staff"]}
            run = assistant.evaluate(json.dumps(question), "questions.jsonl", admin, k=3, answers=False)
        UserStore(settings.users_file).add("ana", "correct horse battery", ["staff"])
        upload = data / "uploads" / "ana" / "notes.txt"
        upload.parent.mkdir(parents=True)
        upload.write_text("an uploaded file\n")
        assert _run("create", root / "backup") == 0
    return {
        "root": root,
        "data": data,
        "backup": root / "backup",
        "searched": searched,
        "documents": documents,
        "evaluation": run.id,
    }


def _restore_env(monkeypatch, data: Path) -> None:
    _settings_env(monkeypatch, data_dir=data, qdrant_path=data / "qdrant", audit_text="hash")


def test_an_embedded_store_comes_back_whole_with_its_audit_log_accounts_and_uploads(
    embedded, embedder, tmp_path, monkeypatch
):
    from assistant import Settings, User, build_assistant
    from assistant.audit import AuditLog
    from assistant.users import UserStore

    original = embedded["data"]
    # The installation as it was when it was backed up, then lost entirely.
    data = tmp_path / "data"
    _copytree(original, data)
    before = _tree(data)
    shutil.rmtree(data)

    _restore_env(monkeypatch, data)
    assert _run("restore", embedded["backup"]) == 0

    # Every file the backup holds is back as it was (lock files are not state, and are not backed up), and as private.
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "audit.jsonl").stat().st_mode) == 0o600
    after = _tree(data)
    assert {name: digest for name, digest in before.items() if not name.endswith(".lock")} == {
        name: digest for name, digest in after.items() if not name.endswith(".lock")
    }
    settings = Settings()
    # The hashing key came back with the log: the question asked before the backup is found by its keyed hash.
    asked = AuditLog(settings.audit_log, texts="hash").read(question=QUESTION)
    assert sorted(entry["event"] for entry in asked) == ["ask", "search"]
    with build_assistant(settings, embedder=embedder) as assistant:
        assert [(source.path, source.text) for source in assistant.search(QUESTION, User(*STAFF))] == embedded[
            "searched"
        ]
        assert [(doc.path, doc.groups) for doc in assistant.documents(User("root", ("admin",)))] == embedded[
            "documents"
        ]
    assert UserStore(settings.users_file).authenticate("ana", "correct horse battery") is not None
    assert (data / "uploads" / "ana" / "notes.txt").read_text() == "an uploaded file\n"
    with build_assistant(settings, embedder=embedder) as assistant:
        # the kept evaluation, the baseline an upgrade's `assistant eval --compare` needs
        assert assistant.evaluation_run(embedded["evaluation"], User("root", ("admin",))).metrics["hit"].n == 1


def test_the_backup_is_private_and_lists_every_file_with_its_hash(embedded):
    directory = embedded["backup"]
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["store"] == {
        "kind": "embedded",
        "collections": {"chunks": "documents", "records": "documents_documents"},
    }
    files = manifest["files"]
    kept = {"state/audit.jsonl", "state/audit.jsonl.key", "state/users.yaml", "uploads/ana/notes.txt"}
    assert kept | {f"evaluations/{embedded['evaluation']}.json"} <= set(files)
    assert any(name.startswith("store/chunks/segments/") for name in files)
    assert any(name.startswith("store/records/wal/") for name in files)
    for name, entry in files.items():
        path = directory / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _run("verify", directory) == 0


def test_a_backup_refuses_while_another_process_holds_the_store_and_holds_it_while_copying(
    embedded, embedder, tmp_path, monkeypatch, capsys
):
    from assistant import Settings, build_assistant
    from retrieval import StoreLockedError

    data = tmp_path / "data"
    _copytree(embedded["data"], data)
    _restore_env(monkeypatch, data)
    with build_assistant(Settings(), embedder=embedder):  # the portal, say
        assert _run("create", tmp_path / "backup") == 1
    assert "is open in another process" in capsys.readouterr().err
    assert not (tmp_path / "backup").exists() and not (tmp_path / "backup.partial").exists()

    # The other way round: while the backup holds the shards, the store does not open.
    installation = backup.load_installation()
    with backup.edge_locks(list(backup._shards(installation).values())), pytest.raises(StoreLockedError):
        build_assistant(Settings(), embedder=embedder)
    assert _run("create", tmp_path / "backup") == 0


def _tamper_flip(directory: Path, manifest: dict) -> str:
    name = next(name for name in manifest["files"] if name.startswith("store/chunks/segments/"))
    path = directory / name
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    return "damaged"


def _tamper_remove(directory: Path, manifest: dict) -> str:
    (directory / "state" / "users.yaml").unlink()
    return "missing: state/users.yaml"


def _tamper_add(directory: Path, manifest: dict) -> str:
    (directory / "state" / "extra.sh").write_text("#!/bin/sh\n")
    return "not in the manifest: state/extra.sh"


def _tamper_link(directory: Path, manifest: dict) -> str:
    (directory / "uploads" / "ana" / "notes.txt").unlink()
    (directory / "uploads" / "ana" / "notes.txt").symlink_to("/etc/passwd")
    return "not regular files: uploads/ana/notes.txt"


def _manifest_edit(change):
    def tamper(directory: Path, manifest: dict) -> str:
        expected = change(manifest)
        (directory / "manifest.json").write_text(json.dumps(manifest))
        return expected

    return tamper


def _escape(manifest: dict) -> str:
    manifest["files"]["uploads/../../../outside"] = manifest["files"].pop("uploads/ana/notes.txt")
    return "is not a plain relative path"


def _unknown_role(manifest: dict) -> str:
    manifest["files"]["state/authorized_keys"] = manifest["files"].pop("state/users.yaml")
    return "state/authorized_keys is not part of a backup"


@pytest.mark.parametrize(
    "tamper",
    [
        _tamper_flip,
        _tamper_remove,
        _tamper_add,
        _tamper_link,
        _manifest_edit(_escape),
        _manifest_edit(_unknown_role),
    ],
    ids=["flipped-byte", "missing-file", "extra-file", "symlink", "path-escape", "unknown-role"],
)
def test_a_damaged_backup_is_refused_before_anything_is_touched(embedded, tmp_path, monkeypatch, capsys, tamper):
    directory = tmp_path / "backup"
    _copytree(embedded["backup"], directory)
    expected = tamper(directory, json.loads((directory / "manifest.json").read_text()))
    # A target with state of its own, which must come through untouched.
    data = tmp_path / "data"
    _copytree(embedded["data"], data)
    (data / "audit.jsonl").write_text('{"event": "later"}\n')
    before = _tree(data)
    _restore_env(monkeypatch, data)

    assert _run("verify", directory) == 1
    assert expected in capsys.readouterr().err
    assert _run("restore", directory, "--replace") == 1
    assert expected in capsys.readouterr().err
    assert _tree(data) == before


def test_restoring_over_a_store_needs_replace_and_moves_what_it_replaces_aside(embedded, tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    _copytree(embedded["data"], data)
    later = '{"event": "after the backup"}\n'
    with (data / "audit.jsonl").open("a") as log:
        log.write(later)
    (data / "audit.jsonl.1").write_text('{"event": "an older rotation the backup never saw"}\n')
    _restore_env(monkeypatch, data)

    assert _run("restore", embedded["backup"]) == 1
    assert "restore with --replace" in capsys.readouterr().err
    assert (data / "audit.jsonl").read_text().endswith(later)

    assert _run("restore", embedded["backup"], "--replace") == 0
    # Nothing is lost: the replaced shards, the newer log and the rotation that did not belong to the restored
    # history sit beside the restored ones.
    aside = sorted(path.name.split(".pre-restore-")[0] for path in data.rglob("*.pre-restore-*"))
    assert aside == ["audit.jsonl", "audit.jsonl.1", "documents", "documents_documents"]
    assert next(data.glob("audit.jsonl.pre-restore-*")).read_text().endswith(later)
    assert not (data / "audit.jsonl.1").exists()
    assert (data / "audit.jsonl").read_bytes() == (embedded["backup"] / "state" / "audit.jsonl").read_bytes()
    # A file identical to the backup's is left alone rather than moved aside.
    assert not list(data.glob("users.yaml.pre-restore-*"))


def test_a_backup_goes_only_into_a_new_directory_and_back_into_the_same_kind_of_store(
    embedded, tmp_path, monkeypatch, capsys
):
    data = tmp_path / "data"
    _copytree(embedded["data"], data)
    _restore_env(monkeypatch, data)
    (tmp_path / "taken").mkdir()
    assert _run("create", tmp_path / "taken") == 1
    assert "a backup goes into a new directory" in capsys.readouterr().err
    (tmp_path / "crashed.partial").mkdir()
    assert _run("create", tmp_path / "crashed") == 1
    assert "did not finish" in capsys.readouterr().err

    # Port 9 (discard) on loopback: the kind is compared before anything is contacted.
    _settings_env(monkeypatch, data_dir=data, qdrant_url="http://127.0.0.1:9")
    assert _run("restore", embedded["backup"]) == 1
    assert "the backup is of an embedded store" in capsys.readouterr().err


# --- a Qdrant server, as far as the calls go ------------------------------------------------------------------------


class FakeQdrant:
    """Answers the snapshot calls as Qdrant's REST API documents them, and records each request."""

    def __init__(self, collections=("documents", "documents_documents"), checksum_ok=True, redirect_to=None):
        self.collections = set(collections)
        self.checksum_ok = checksum_ok
        self.redirect_to = redirect_to
        self.requests: list[dict] = []
        self.snapshots: dict[str, bytes] = {}
        self.made = 0
        self.uploaded: dict[str, bytes] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status: int, body: bytes, content_type="application/json", headers=()):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _json(self, result, status=200):
                self._answer(status, json.dumps({"result": result, "status": "ok", "time": 0.001}).encode())

            def _handle(self):
                url = urlsplit(self.path)
                parts = [unquote(part) for part in url.path.strip("/").split("/")]
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fake.requests.append(
                    {
                        "method": self.command,
                        "path": url.path,
                        "query": {key: values[0] for key, values in parse_qs(url.query).items()},
                        "api-key": self.headers.get("api-key"),
                    }
                )
                if len(parts) < 2 or parts[0] != "collections":
                    return self._json(None, 404)
                collection = parts[1]
                tail = parts[2:]
                if self.command == "GET" and tail == ["exists"]:
                    return self._json({"exists": collection in fake.collections})
                if self.command == "POST" and tail == ["snapshots"]:
                    content = f"snapshot of {collection}\n".encode() * 5000
                    name = f"{collection}-{fake.made}.snapshot"
                    fake.made += 1
                    fake.snapshots[name] = content
                    digest = hashlib.sha256(content).hexdigest() if fake.checksum_ok else "0" * 64
                    created = "2026-11-23T10:00:00"
                    return self._json(
                        {"name": name, "creation_time": created, "size": len(content), "checksum": digest}
                    )
                if self.command == "GET" and len(tail) == 2 and tail[0] == "snapshots":
                    if fake.redirect_to:
                        return self._answer(302, b"", headers=[("Location", fake.redirect_to + url.path)])
                    return self._answer(200, fake.snapshots[tail[1]], "application/octet-stream")
                if self.command == "DELETE" and len(tail) == 2 and tail[0] == "snapshots":
                    fake.snapshots.pop(tail[1], None)
                    return self._json(True)
                if self.command == "POST" and tail == ["snapshots", "upload"]:
                    message = email.message_from_bytes(
                        b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + body
                    )
                    (part,) = message.get_payload()
                    assert part.get_param("name", header="content-disposition") == "snapshot"
                    fake.uploaded[collection] = part.get_payload(decode=True)
                    fake.collections.add(collection)
                    return self._json(True)
                return self._json(None, 404)

            do_GET = do_POST = do_DELETE = do_PUT = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def calls(self) -> list[tuple[str, str]]:
        return [(request["method"], request["path"]) for request in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers():
    started = []

    def start(**options):
        server = FakeQdrant(**options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


KEY = "test-api-key-not-a-secret"


def _server_env(monkeypatch, url: str, data: Path, proxy: str | None = None) -> None:
    _settings_env(monkeypatch, data_dir=data, qdrant_url=url, qdrant_api_key=KEY)
    # A client that honoured the environment would send everything to this other server instead.
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        if proxy:
            monkeypatch.setenv(name, proxy)


def _state(data: Path) -> None:
    data.mkdir()
    (data / "audit.jsonl").write_text('{"event": "ask", "user": "ana"}\n')
    (data / "api_keys.yaml").write_text("keys: {}\n")


def test_a_server_backup_snapshots_records_then_chunks_downloads_and_deletes_each_with_the_key(
    servers, tmp_path, monkeypatch
):
    qdrant, elsewhere = servers(), servers()
    data = tmp_path / "data"
    _state(data)
    _server_env(monkeypatch, qdrant.url, data, proxy=elsewhere.url)
    assert _run("create", tmp_path / "backup") == 0

    def calls(collection):
        snapshot = f"/collections/{collection}/snapshots"
        return [
            ("GET", f"/collections/{collection}/exists"),
            ("POST", snapshot),
            ("GET", f"{snapshot}/{collection}-{0 if collection.endswith('_documents') else 1}.snapshot"),
            ("DELETE", f"{snapshot}/{collection}-{0 if collection.endswith('_documents') else 1}.snapshot"),
        ]

    assert qdrant.calls() == calls("documents_documents") + calls("documents")
    assert {request["api-key"] for request in qdrant.requests} == {KEY}
    assert qdrant.snapshots == {}  # nothing left on the server's disk
    assert elsewhere.requests == []

    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["store"]["kind"] == "server"
    for role, collection in (("chunks", "documents"), ("records", "documents_documents")):
        content = (tmp_path / "backup" / "store" / f"{role}.snapshot").read_bytes()
        assert content == f"snapshot of {collection}\n".encode() * 5000
        assert manifest["files"][f"store/{role}.snapshot"]["sha256"] == hashlib.sha256(content).hexdigest()
    assert {"state/audit.jsonl", "state/api_keys.yaml"} <= set(manifest["files"])


def test_the_audit_logs_archives_are_backed_up_and_restored_as_one_history(servers, tmp_path, monkeypatch):
    from assistant.audit import AuditLog

    data = tmp_path / "data"
    _state(data)
    log = AuditLog(data / "audit.jsonl", max_bytes=500)
    for number in range(30):
        log.record("ask", "bo", number=number)
    archives = sorted(path.name for path in data.glob("audit.jsonl.*.gz"))
    assert len(archives) >= 3
    _server_env(monkeypatch, servers().url, data)
    assert _run("create", tmp_path / "backup") == 0

    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert {f"state/{name}" for name in archives} <= set(manifest["files"])
    assert _run("verify", tmp_path / "backup") == 0
    _server_env(monkeypatch, servers(collections=()).url, tmp_path / "new-data")
    assert _run("restore", tmp_path / "backup") == 0
    restored = AuditLog(tmp_path / "new-data" / "audit.jsonl")
    assert restored.read() == log.read()
    assert [e["number"] for e in restored.read(user="bo")] == list(range(29, -1, -1))
    assert restored.read(user="ana") == [{"event": "ask", "user": "ana"}]  # the first line, in the oldest archive
    assert sorted(path.name for path in (tmp_path / "new-data").glob("audit.jsonl.*.gz")) == archives


def test_a_server_restore_uploads_chunks_then_records_and_replaces_only_when_told(
    servers, tmp_path, monkeypatch, capsys
):
    source = servers()
    data = tmp_path / "data"
    _state(data)
    _server_env(monkeypatch, source.url, data)
    assert _run("create", tmp_path / "backup") == 0
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())

    # A fresh server: nothing to replace.
    fresh, elsewhere = servers(collections=()), servers()
    _server_env(monkeypatch, fresh.url, tmp_path / "new-data", proxy=elsewhere.url)
    assert _run("restore", tmp_path / "backup") == 0
    uploads = [request for request in fresh.requests if request["method"] == "POST"]
    assert [request["path"] for request in uploads] == [
        "/collections/documents/snapshots/upload",
        "/collections/documents_documents/snapshots/upload",
    ]
    for request, role in zip(uploads, ("chunks", "records"), strict=True):
        assert request["query"] == {
            "wait": "true",
            "priority": "snapshot",
            "checksum": manifest["files"][f"store/{role}.snapshot"]["sha256"],
        }
    assert fresh.uploaded == {
        "documents": (tmp_path / "backup" / "store" / "chunks.snapshot").read_bytes(),
        "documents_documents": (tmp_path / "backup" / "store" / "records.snapshot").read_bytes(),
    }
    assert {request["api-key"] for request in fresh.requests} == {KEY}
    assert elsewhere.requests == []
    assert (tmp_path / "new-data" / "audit.jsonl").read_bytes() == (data / "audit.jsonl").read_bytes()

    # A server that holds the collections: refused without --replace, before any upload.
    held = servers()
    _server_env(monkeypatch, held.url, tmp_path / "held-data")
    assert _run("restore", tmp_path / "backup") == 1
    assert "restore with --replace" in capsys.readouterr().err
    assert [method for method, _ in held.calls()] == ["GET", "GET"]
    assert not (tmp_path / "held-data").exists()
    assert _run("restore", tmp_path / "backup", "--replace") == 0
    assert set(held.uploaded) == {"documents", "documents_documents"}


def test_a_snapshot_damaged_on_the_way_fails_the_backup_and_leaves_nothing(servers, tmp_path, monkeypatch, capsys):
    qdrant = servers(checksum_ok=False)
    data = tmp_path / "data"
    _state(data)
    _server_env(monkeypatch, qdrant.url, data)
    assert _run("create", tmp_path / "backup") == 1
    assert "the transfer was damaged" in capsys.readouterr().err
    assert not (tmp_path / "backup").exists() and not (tmp_path / "backup.partial").exists()
    assert qdrant.calls()[-1][0] == "DELETE" and qdrant.snapshots == {}


def test_a_redirect_is_refused_not_followed(servers, tmp_path, monkeypatch, capsys):
    elsewhere = servers()
    qdrant = servers(redirect_to=elsewhere.url)
    data = tmp_path / "data"
    _state(data)
    _server_env(monkeypatch, qdrant.url, data)
    assert _run("create", tmp_path / "backup") == 1
    assert "HTTP 302" in capsys.readouterr().err
    assert elsewhere.requests == []
    assert not (tmp_path / "backup").exists() and not (tmp_path / "backup.partial").exists()


def test_a_missing_collection_is_named(servers, tmp_path, monkeypatch, capsys):
    qdrant = servers(collections=("documents",))
    data = tmp_path / "data"
    _state(data)
    _server_env(monkeypatch, qdrant.url, data)
    assert _run("create", tmp_path / "backup") == 1
    assert "no collection 'documents_documents'" in capsys.readouterr().err
    assert [method for method, _ in qdrant.calls()] == ["GET"]
