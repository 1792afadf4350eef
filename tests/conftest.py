import ipaddress
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
SHARED_DATA = ROOT.parent / "shared" / "data"


# Nothing leaves the machine, and the suite proves it: any connection to a non-loopback
# address fails the test that opened it.
_real_connect = socket.socket.connect


def _loopback_only(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            allowed = ipaddress.ip_address(host).is_loopback
        except ValueError:
            allowed = host == "localhost"
        if not allowed:
            raise AssertionError(f"test tried to connect to {address!r}: nothing may leave the machine")
    return _real_connect(sock, address)


@pytest.fixture(autouse=True, scope="session")
def no_egress():
    socket.socket.connect = _loopback_only
    yield
    socket.socket.connect = _real_connect


@pytest.fixture(scope="session")
def embedder(tmp_path_factory):
    from retrieval.embedding import LocalEmbedding

    # The int8 export goes to a fresh cache: the suite builds it as a first run on a new machine does.
    return LocalEmbedding(cache_dir=tmp_path_factory.mktemp("embeddings"))


@pytest.fixture
def make_assistant(embedder, tmp_path):
    """Assistants over in-memory stores (or an embedded one when given a path), sharing one embedder."""
    from assistant import Assistant, Settings

    opened = []

    def make(**overrides):
        settings = Settings(**{"data_dir": tmp_path / "data", "qdrant_path": ":memory:", **overrides})
        assistant = Assistant(settings, embedder=embedder)
        opened.append(assistant)
        return assistant

    yield make
    for assistant in opened:
        assistant.close()
