"""Nothing leaves the machine: the suite's egress guard (egress_guard.py), what the product does under it, and the
clients that may connect somewhere (the model server's, Qdrant's) reaching only the host the operator configured.

The figures these tests print (attempts blocked of attempted, attempts during the dedicated run) show with -s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import types
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import streamlit as st
import yaml
from conftest import ROOT, SAMPLES
from egress_guard import CHILD_DIR, GUARD, LOG_VARIABLE, EgressBlocked
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
from pydantic import ValidationError
from streamlit.testing.v1 import AppTest

from assistant import Settings, User, build_assistant
from assistant.service import _openai_health
from assistant.users import UserStore
from model.generators import GeneratorError
from model.generators.openai_server import OpenAICompatibleGenerator
from model.prompt import Passage, build_prompt
from retrieval import ChunkStore, RetrievalSettings

PROMPT = build_prompt("How many days of leave?", [Passage("handbook.md", "27 days")])
GUARD_SAYS = "nothing may leave the machine"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


# --- the guard itself, in a pytest session of its own ----------------------------------------------------------

INNER_TESTS = """
import socket, subprocess, sys
from egress_guard import GUARD

try:  # at import, while pytest collects: no test to blame, so the session fails
    socket.gethostbyname("collected.example")
except OSError:
    pass


def test_swallowed():
    try:  # a library that treats any OSError as "offline" and carries on
        socket.create_connection(("192.0.2.10", 80), timeout=1)
    except OSError:
        pass


def test_on_purpose():
    with GUARD.expecting() as made:
        try:
            socket.getaddrinfo("example.com", 443)
        except OSError:
            pass
    assert [a.target for a in made] == ["example.com:443"]


def test_in_a_child_process():
    code = "import socket\\ntry:\\n    socket.getaddrinfo('child.example', 80)\\nexcept OSError:\\n    pass"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_loopback_and_unix_sockets_are_allowed():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        for host in ("127.0.0.1", "localhost"):
            socket.create_connection((host, port), timeout=2).close()
    a, b = socket.socketpair()
    a.sendall(b"x")
    assert b.recv(1) == b"x"
    a.close(), b.close()
"""


def test_the_guard_fails_whoever_attempts_egress_even_when_the_error_is_swallowed(tmp_path):
    """An inner pytest session, with the suite's conftest, runs tests that attempt egress in each way it can go."""
    here = Path(__file__).resolve().parent
    for name in ("conftest.py", "egress_guard.py"):
        shutil.copy(here / name, tmp_path / name)
    shutil.copytree(CHILD_DIR, tmp_path / CHILD_DIR.name)
    (tmp_path / "test_inner.py").write_text(INNER_TESTS)
    # The inner session installs its own guard and log: it must not report into this session's.
    env = {k: v for k, v in os.environ.items() if k not in (LOG_VARIABLE, "PYTHONPATH")}
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the project's settings
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_inner.py"]
    done = subprocess.run(command, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr

    assert done.returncode == 1, out
    assert "4 passed, 2 errors" in out, out  # each offender errors at teardown, after its own body passed
    assert "ERROR at teardown of test_swallowed" in out and "socket.connect -> 192.0.2.10:80" in out
    assert "ERROR at teardown of test_in_a_child_process" in out
    assert "socket.getaddrinfo -> child.example:80 (child process" in out
    assert "nothing may leave the machine" in out
    assert "egress outside any test" in out and "socket.gethostbyname -> collected.example" in out
    assert "test_on_purpose" not in out.split("short test summary")[-1]
    assert "egress guard: 4 attempt(s) past loopback blocked, 1 of them made on purpose" in out


# --- deliberate attempts, each of which must be blocked and counted ---------------------------------------------


def _aim(address, family=socket.AF_INET, kind=socket.SOCK_STREAM, send=None, ex=False):
    """Connects a fresh socket to `address` (connect_ex with ex), or sends `send` to it through sendto / sendmsg."""
    with socket.socket(family, kind) as sock:
        if send == "sendto":
            return sock.sendto(DNS_QUERY, address)
        if send == "sendmsg":
            return sock.sendmsg([DNS_QUERY], [], 0, address)
        return sock.connect_ex(address) if ex else sock.connect(address)


DNS_QUERY = bytes.fromhex("abcd01000001000000000000076578616d706c6503636f6d0000010001")  # A? example.com


def _hf_download(cache: Path):
    from huggingface_hub import hf_hub_download

    return hf_hub_download("sentence-transformers/all-MiniLM-L6-v2", "config.json", cache_dir=cache)


def _child_process():
    code = "import socket; socket.create_connection(('example.net', 80), timeout=2)"
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 and GUARD_SAYS in done.stderr:
        raise EgressBlocked(done.stderr.strip().splitlines()[-1])


async def _asyncio_connection():
    await asyncio.open_connection("example.com", 80)  # resolved in the loop's executor thread


def _attempts(tmp_path):
    """(what, how, the error it must end in, where the guard must have stopped it)."""
    return [
        ("TCP to a public address", lambda: socket.create_connection(("1.1.1.1", 443), timeout=2), EgressBlocked,
         "1.1.1.1:443"),
        ("connect_ex, which reports errors as numbers", lambda: _aim(("9.9.9.9", 443), ex=True), EgressBlocked,
         "9.9.9.9:443"),
        ("a UDP socket aimed at a public address (how Streamlit finds its network IP)",
         lambda: _aim(("8.8.8.8", 1), kind=socket.SOCK_DGRAM), EgressBlocked, "8.8.8.8:1"),
        ("a DNS query sent by hand (sendto)", lambda: _aim(("8.8.8.8", 53), kind=socket.SOCK_DGRAM, send="sendto"),
         EgressBlocked, "8.8.8.8:53"),
        ("a datagram through sendmsg", lambda: _aim(("8.8.4.4", 53), kind=socket.SOCK_DGRAM, send="sendmsg"),
         EgressBlocked, "8.8.4.4:53"),
        ("IPv6 to a public address", lambda: _aim(("2606:4700:4700::1111", 443), family=socket.AF_INET6),
         EgressBlocked, "2606:4700:4700::1111:443"),
        ("name resolution (getaddrinfo)", lambda: socket.getaddrinfo("example.com", 443), EgressBlocked,
         "example.com:443"),
        ("name resolution (gethostbyname)", lambda: socket.gethostbyname("pypi.org"), EgressBlocked, "pypi.org"),
        ("a reverse lookup", lambda: socket.gethostbyaddr("8.8.8.8"), EgressBlocked, "8.8.8.8"),
        ("httpx", lambda: httpx.get("https://huggingface.co/api/models", timeout=2), httpx.ConnectError,
         "huggingface.co:443"),
        ("urllib", lambda: urllib.request.urlopen("http://example.org/", timeout=2), urllib.error.URLError,
         "example.org:80"),
        ("asyncio, from its executor thread", lambda: asyncio.run(_asyncio_connection()), EgressBlocked,
         "example.com:80"),
        # It reports "cannot find the file in the cache", not why.
        ("huggingface_hub's hf_hub_download, its offline mode switched off", lambda: _hf_download(tmp_path / "hf"),
         LocalEntryNotFoundError, "huggingface.co:443"),
        ("a child Python process", _child_process, EgressBlocked, "example.net:80"),
    ]  # fmt: skip


def test_every_deliberate_attempt_is_blocked_and_counted(tmp_path, monkeypatch, capsys, caplog):
    import huggingface_hub.utils._http
    from huggingface_hub import constants

    caplog.set_level(logging.ERROR, logger="huggingface_hub")  # a warning per retry

    # As shipped the hub is offline, so hf_hub_download refuses before opening any socket (the next test); here
    # offline mode is off, as if an operator's environment had undone it, and the guard is what stops it.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # It retries a failed connection five times, 23 s of back-off in all; the retries are blocked as the first was.
    monkeypatch.setattr(huggingface_hub.utils._http, "time", types.SimpleNamespace(sleep=lambda seconds: None))
    cases = _attempts(tmp_path)
    stopped, failed, sockets = [], [], 0
    for what, attempt, error, target in cases:
        raised = None
        with GUARD.expecting() as made:
            try:
                attempt()
            except error as exc:
                raised = exc
        sockets += len(made)
        # Blocked: the operation failed, because of the guard (its message, where the client passes it on), and the
        # guard counted it at the address or name it was aimed at.
        said = raised is not None and (error is LocalEntryNotFoundError or GUARD_SAYS in _chain(raised))
        (stopped if said and made and {a.target for a in made} == {target} else failed).append((what, raised, made))
    with capsys.disabled():
        print(
            f"\negress attempts blocked: {len(stopped)} of {len(cases)} attempted "
            f"({'; '.join(what for what, _, _ in stopped)}); {sockets} socket operations refused in all (a client's "
            "retries each count)"
        )
    assert not failed


def _chain(error: BaseException | None) -> str:
    text = []
    while error is not None:
        text.append(str(error))
        error = error.__cause__ or error.__context__
    return " | ".join(text)


def test_the_hub_clients_refuse_before_any_socket_as_shipped(tmp_path):
    from huggingface_hub import constants
    from transformers import AutoConfig

    assert constants.HF_HUB_OFFLINE and constants.HF_HUB_DISABLE_TELEMETRY
    with GUARD.expecting() as made:
        with pytest.raises((LocalEntryNotFoundError, OfflineModeIsEnabled)):
            _hf_download(tmp_path / "hf")
        with pytest.raises(OSError, match="offline|cached|local"):
            AutoConfig.from_pretrained("gpt2", cache_dir=tmp_path / "hf")
    assert made == []  # offline mode stopped both: the guard had nothing to block


# --- the product under the guard: not one attempt --------------------------------------------------------------

PASSWORD = "correct horse battery"


def test_ingest_search_ask_finetune_and_every_portal_page_attempt_nothing(tmp_path, embedder, monkeypatch, capsys):
    from tiny_models import write_model

    from finetune import cli
    from model.loading import smollm2_gguf

    started, allowed = len(GUARD.attempts), GUARD.allowed
    timings = {}

    # Ingest, search and ask with the in-process model, on the embedded store the portal will open next.
    data = tmp_path / "data"
    directory, filename = smollm2_gguf()
    settings = Settings(data_dir=data, generator="local", model_path=directory, gguf_file=filename, max_new_tokens=8)
    clock = time.perf_counter()
    with build_assistant(settings, embedder=embedder) as assistant:
        for folder, group in (("public", "staff"), ("hr", "hr"), ("security", "security")):
            report = assistant.ingest([SAMPLES / folder], groups=[group])
            assert report.added and not report.failed
        timings["ingest"] = time.perf_counter() - clock
        clock = time.perf_counter()
        ana = User("ana", ("staff",))
        assert assistant.search("paid annual leave", ana)
        answer = assistant.ask("How many days of paid annual leave does a full-time employee get?", ana)
        assert answer.model == "SmolLM2-135M-Instruct.Q4_1" and answer.text.strip() and answer.sources
    timings["search and ask (SmolLM2 loaded from its GGUF file)"] = time.perf_counter() - clock

    # Fine-tuning through the CLI, into the runs directory the portal's fine-tuning page lists.
    clock = time.perf_counter()
    base = write_model(tmp_path / "tiny-grok")
    prepared = tmp_path / "prepared"
    argv = ["prepare", "--model", str(base), "--source", str(SAMPLES / "public"), "--out", str(prepared)]
    assert cli.main([*argv, "--seq-len", "64"]) == 0
    run = data / "runs" / "egress-lora"
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"path": str(base), "dtype": "float32"},
                "data": str(prepared),
                "output_dir": str(run),
                "train": {"max_steps": 2, "micro_batch": 2, "checkpoint_every": 2},
            }
        )
    )
    assert cli.main(["train", "--config", str(config), "--no-progress"]) == 0
    assert (run / "adapter" / "adapter_config.json").is_file()
    timings["fine-tuning"] = time.perf_counter() - clock

    # Every page of the portal, as an administrator (who sees them all).
    clock = time.perf_counter()
    UserStore(data / "users.yaml").add("root", PASSWORD, ["admin", "staff"])
    for name in ("ASSISTANT_CONFIG", "ASSISTANT_QDRANT_URL", "ASSISTANT_QDRANT_PATH", "ASSISTANT_GENERATOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ASSISTANT_DATA_DIR", str(data))
    # `embedder` is the process\'s shared one: the Assistant built here uses it (assistant.assembly).
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(ROOT / "ui" / "app.py"), default_timeout=60).run()
        at.text_input(key="sign-in:name").input("root")
        at.text_input(key="sign-in:password").input(PASSWORD)
        at.button(key="sign-in:submit").click().run()
        at.chat_input[0].set_value("How many days of paid annual leave do employees get?").run()
        assert not at.exception and not at.error and "27 days" in at.chat_message[1].html[0].value
        shown = {}
        for page in ("views/documents.py", "views/models.py", "views/finetuning.py", "views/audit.py"):
            at.switch_page(page).run()
            assert not at.exception and not at.error, page
            shown[page] = at.dataframe[0].value.to_dict("records")
        assert "employee-handbook.md" in {row["document"] for row in shown["views/documents.py"]}
        assert [row["run"] for row in shown["views/finetuning.py"]] == ["egress-lora"]
        assert any(row["event"] == "ask" for row in shown["views/audit.py"])
    finally:
        st.cache_resource.clear()  # closes the portal's Assistant and its store
    timings["portal pages"] = time.perf_counter() - clock

    attempts = GUARD.attempts[started:]
    with capsys.disabled():
        spent = ", ".join(f"{step} {seconds:.1f} s" for step, seconds in timings.items())
        print(
            f"\ndedicated run ({spent}): {len(attempts)} attempts past loopback; "
            f"{GUARD.allowed - allowed} loopback or local socket operations"
        )
    assert attempts == []


# --- only the configured host: redirects and proxies ------------------------------------------------------------


class Recorder(ThreadingHTTPServer):
    """A server on 127.0.0.1 that records every request it gets (a proxy's too) and answers with `reply`."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, reply=None):
        super().__init__(("127.0.0.1", 0), _Recording)
        self.requests: list[tuple[str, str]] = []
        self.reply = reply or (lambda method, path: (503, {"Content-Type": "application/json"}, b'{"status": "no"}'))
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Recording(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: a reply needs no length

    def log_message(self, *args):
        pass

    def _answer(self):
        self.server.requests.append((self.command, self.path))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        status, headers, body = self.server.reply(self.command, self.path)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_CONNECT = _answer


@pytest.fixture
def serve():
    started = []

    def serve(reply=None) -> Recorder:
        server = Recorder(reply)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        started.append(server)
        return server

    yield serve
    for server in started:
        server.shutdown()
        server.server_close()


def _model_server(method, path):
    if method == "GET":  # the health check's model list
        return 200, {"Content-Type": "application/json"}, json.dumps({"data": [{"id": "m"}]}).encode()
    chunk = {"choices": [{"delta": {"content": "27 days"}}]}
    return 200, {"Content-Type": "text/event-stream"}, f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()


def _redirect_to(url):
    return lambda method, path: (302, {"Location": url + path}, b"")


@pytest.fixture
def proxy(serve, monkeypatch):
    """A proxy on loopback that every proxy variable names: whatever reaches it went to a host nobody configured."""
    server = serve()
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    return server


def _openai_settings(tmp_path, url) -> Settings:
    return Settings(data_dir=tmp_path, generator="openai", openai_base_url=url + "/v1", openai_model="m")


def test_a_redirect_to_another_host_is_refused_and_that_host_never_hears_of_it(serve, tmp_path):
    elsewhere = serve(_model_server)
    configured = serve(_redirect_to(elsewhere.url))

    generator = OpenAICompatibleGenerator(configured.url + "/v1", "m")
    with pytest.raises(GeneratorError) as raised:
        list(generator.stream(PROMPT))
    generator.close()
    message = str(raised.value)
    assert f"model server at {configured.url}/v1/chat/completions redirected to '{elsewhere.url}/v1" in message
    assert "not followed" in message and "configure the final URL" in message

    ok, message = _openai_health(_openai_settings(tmp_path, configured.url))
    assert not ok and f"redirected to '{elsewhere.url}/v1/models'" in message
    assert "not followed" in message and "ASSISTANT_OPENAI_BASE_URL" in message

    assert [method for method, _ in configured.requests] == ["POST", "GET"]
    assert elsewhere.requests == []


def test_the_model_server_clients_ignore_proxy_variables(serve, proxy, tmp_path):
    server = serve(_model_server)
    # The environment does divert an ordinary client: without trust_env=False the request would go to the proxy.
    httpx.get(server.url + "/v1/models")
    assert proxy.requests == [("GET", server.url + "/v1/models")]

    generator = OpenAICompatibleGenerator(server.url + "/v1", "m")
    assert list(generator.stream(PROMPT)) == ["27 days"]
    generator.close()
    ok, message = _openai_health(_openai_settings(tmp_path, server.url))
    assert ok, message

    assert server.requests == [("POST", "/v1/chat/completions"), ("GET", "/v1/models")]
    assert len(proxy.requests) == 1  # still only the ordinary client's


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")
def test_the_qdrant_client_connects_only_to_the_configured_url(serve, proxy):
    from qdrant_client import QdrantClient
    from qdrant_client.http.exceptions import UnexpectedResponse

    qdrant = serve()  # answers 503: enough to see who asks it, and the store's error ends the test quickly
    # qdrant-client as it comes honours proxy variables, for its requests and for its version check alike.
    plain = QdrantClient(url=qdrant.url)
    with pytest.raises(UnexpectedResponse):
        plain.collection_exists("documents")
    _wait_for(lambda: len(proxy.requests) == 2)
    plain.close()
    assert {path for _, path in proxy.requests} == {qdrant.url + "/", qdrant.url + "/collections/documents/exists"}
    assert qdrant.requests == []

    with pytest.raises(UnexpectedResponse):
        ChunkStore(RetrievalSettings(qdrant_url=qdrant.url), 4)
    time.sleep(0.3)  # time enough for a background request (a version check) to have gone out
    # The store's own version check (per-reader BM25 statistics need Qdrant 1.19) goes to the configured host only.
    assert qdrant.requests == [("GET", "/")]
    assert len(proxy.requests) == 2  # only the plain client's


def _wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("url", ["qdrant.internal:6333", "grpc://qdrant.internal:6334", "http://", "/var/qdrant"])
def test_a_qdrant_url_must_be_http_and_name_its_host(url, monkeypatch):
    monkeypatch.setenv("ASSISTANT_QDRANT_URL", url)
    with pytest.raises(ValidationError, match=f"ASSISTANT_QDRANT_URL must be an http.s. URL .*not '{url}'"):
        Settings()
    assert RetrievalSettings(qdrant_url="https://qdrant.internal:6333").qdrant_url == "https://qdrant.internal:6333"
