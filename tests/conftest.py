import shutil
import tempfile
from pathlib import Path

import pytest
from egress_guard import GUARD, describe, extend_to_children, install

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
SHARED_DATA = ROOT.parent / "shared" / "data"


# Nothing leaves the machine, and the suite proves it: from here on, any attempt to reach past loopback (a connection,
# a datagram, a DNS lookup) in this process or a Python process it starts is blocked and recorded, and fails the test
# that made it, even where a library caught the error and carried on (egress_guard.py says how).
install()


def pytest_configure(config):
    config._egress_dir = Path(tempfile.mkdtemp(prefix="egress-guard-"))
    extend_to_children(config._egress_dir / "children.jsonl")


def pytest_unconfigure(config):
    shutil.rmtree(getattr(config, "_egress_dir", ""), ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    GUARD.test = item.nodeid  # setup, call and teardown: attempts in a fixture count against the test that asked
    try:
        return (yield)
    finally:
        GUARD.test = None


@pytest.fixture(autouse=True)
def no_egress(request):
    """The guard, for tests that count attempts. Torn down after the test's other fixtures, so it fails the test for
    an unexpected attempt in its body or in any of their set-ups and teardowns."""
    yield GUARD
    GUARD.collect_children()
    unexpected = GUARD.unreported(request.node.nodeid)
    if unexpected:
        pytest.fail(describe(unexpected), pytrace=False)


def pytest_sessionfinish(session):
    GUARD.collect_children()
    stray = GUARD.unreported(everywhere=True)  # during collection, or after a test's own check
    if stray:
        session.config._egress_stray = stray
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    stray = getattr(config, "_egress_stray", [])
    if stray:
        terminalreporter.section("egress outside any test", red=True)
        terminalreporter.write_line(describe(stray))
    on_purpose = sum(attempt.expected for attempt in GUARD.attempts)
    terminalreporter.write_line(
        f"egress guard: {len(GUARD.attempts)} attempt(s) past loopback blocked, {on_purpose} of them made on purpose "
        f"by tests of the guard; {GUARD.allowed} loopback or local operation(s) allowed"
    )


@pytest.fixture(scope="session")
def embedder(tmp_path_factory):
    from assistant import Settings
    from assistant.assembly import shared_embedder

    # The int8 export goes to a fresh cache: the suite builds it as a first run on a new machine does. It is the
    # process's shared embedder, so every Assistant the CLI, the portal or the API builds in a test uses it too.
    cache = tmp_path_factory.mktemp("embeddings")
    return shared_embedder(Settings(data_dir=cache / "data", embedding_cache_dir=cache))


@pytest.fixture
def make_assistant(embedder, tmp_path):
    """Assistants over in-memory stores (or an embedded one when given a path), sharing one embedder."""
    from assistant import Settings, build_assistant

    opened = []

    def make(**overrides):
        settings = Settings(**{"data_dir": tmp_path / "data", "qdrant_path": ":memory:", **overrides})
        assistant = build_assistant(settings, embedder=embedder)
        opened.append(assistant)
        return assistant

    yield make
    for assistant in opened:
        assistant.close()
