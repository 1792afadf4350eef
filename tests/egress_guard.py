"""The suite's egress guard: nothing a test runs may reach past this machine's loopback interface.

An audit hook (PEP 578) sees every way Python code leaves the machine, whatever library does it: connect and
connect_ex (TCP, or a UDP socket being aimed), sendto and sendmsg with an address (UDP, a DNS query made by hand),
and name resolution (getaddrinfo, gethostbyname, gethostbyaddr, getnameinfo), which asks a DNS server and so is
itself a packet out. Loopback (127.0.0.0/8, ::1, the name localhost) and Unix sockets stay allowed: the portal's
browser test and Streamlit's server use them; so do lookups /etc/hosts answers, such as this machine's own name.

A blocked attempt raises EgressBlocked, a PermissionError, as a host firewall would, so code under test meets the
same failure an air-gapped deployment gives it. Libraries that catch OSError and carry on (falling back to a cache,
retrying, logging) would hide that, so every attempt is also recorded, and the suite fails the test that made it
(conftest.py) unless the test said it makes such attempts on purpose (`with GUARD.expecting():`).

Child Python processes (`streamlit run`, `accelerate launch`, the CLI run as a command) get the same hook through
egress_child/sitecustomize.py, which PYTHONPATH names; they append their attempts to the file named by
ASSISTANT_TEST_EGRESS_LOG, which the suite reads back. What this cannot see: sockets opened by native code without
the Python socket module (a C or Rust library's own networking), and non-Python programs (the browser).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

LOG_VARIABLE = "ASSISTANT_TEST_EGRESS_LOG"
CHILD_DIR = Path(__file__).resolve().parent / "egress_child"

_ADDRESSED = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg"})
_LOOKUPS = frozenset({"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo"})
_WATCHED = _ADDRESSED | _LOOKUPS


class EgressBlocked(PermissionError):
    pass


@dataclass(frozen=True)
class Attempt:
    event: str  # the audit event: socket.connect, socket.getaddrinfo, ...
    target: str  # the address or name it was aimed at
    test: str | None  # the test running at the time (None: collection, session fixtures)
    expected: bool  # inside GUARD.expecting(): a test making it on purpose
    pid: int  # another pid: a child process


class Guard:
    def __init__(self) -> None:
        self.active = False
        self.test: str | None = None
        self.attempts: list[Attempt] = []
        self.allowed = 0  # loopback and Unix-socket operations let through
        self.log: Path | None = None  # where child processes append their attempts
        self.owner: int | None = None  # the process that reads the log; any other one writes to it
        self._log_read = 0
        self._expecting = 0  # not per thread: a library's worker thread acts for the test that started it
        self._lock = threading.Lock()
        self._reported: set[int] = set()

    @contextmanager
    def expecting(self) -> Iterator[list[Attempt]]:
        """Attempts made inside are the test's purpose, not a failure; yields the list they are added to."""
        made: list[Attempt] = []
        start = len(self.attempts)
        with self._lock:
            self._expecting += 1
        try:
            yield made
        finally:
            self.collect_children()
            with self._lock:
                self._expecting -= 1
            made.extend(self.attempts[start:])

    def record(self, event: str, target: str) -> Attempt:
        attempt = Attempt(event, target, self.test, self._expecting > 0, os.getpid())
        with self._lock:
            self.attempts.append(attempt)
        if self.log is not None and attempt.pid != self.owner:
            with open(self.log, "a", encoding="utf-8") as log:
                log.write(json.dumps(asdict(attempt)) + "\n")
        return attempt

    def collect_children(self) -> None:
        """Adds the attempts child processes logged since the last call (only in the process that owns the log)."""
        if self.log is None or os.getpid() != self.owner or not self.log.exists():
            return
        with open(self.log, encoding="utf-8") as log:
            log.seek(self._log_read)
            lines = log.readlines()
            self._log_read = log.tell()
        for line in lines:
            child = json.loads(line)
            with self._lock:
                self.attempts.append(
                    Attempt(child["event"], child["target"], self.test, self._expecting > 0, child["pid"])
                )

    def unreported(self, test: str | None = None, everywhere: bool = False) -> list[Attempt]:
        """Unexpected attempts (of `test`, or of any test with everywhere) not yet reported; marks them reported."""
        found = []
        with self._lock:
            for i, attempt in enumerate(self.attempts):
                if attempt.expected or i in self._reported or not (everywhere or attempt.test == test):
                    continue
                self._reported.add(i)
                found.append(attempt)
        return found


GUARD = Guard()


def describe(attempts: list[Attempt]) -> str:
    lines = [
        f"  {a.event} -> {a.target}" + (f" (child process {a.pid})" if a.pid != GUARD.owner else "") for a in attempts
    ]
    return (
        f"{len(attempts)} attempt(s) to reach past loopback were blocked; nothing may leave the machine. Find the "
        "code that made them (a library reaching for a hub, telemetry, or a host nobody configured) and stop it, or "
        "wrap a deliberate attempt in `with GUARD.expecting():`\n" + "\n".join(lines)
    )


def _is_loopback_address(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])  # an IPv6 scope (%eth0) is not part of the address
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    # Linux delivers a connection to 0.0.0.0 (or ::) to this host itself.
    return address.is_loopback or address.is_unspecified


def _is_numeric(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _hosts_file(path: str = "/etc/hosts") -> frozenset[str]:
    """The names and addresses /etc/hosts lists: lookups of them are answered from the file, sending nothing."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return frozenset()
    entries = set()
    for line in lines:
        entries.update(word.rstrip(".").lower() for word in line.split("#", 1)[0].split())
    return frozenset(entries)


# With the usual `hosts: files ...` in nsswitch.conf. This is how this machine's own name passes, which
# torch.distributed's launcher looks up (socket.getfqdn); glibc sends any other name, "x.localhost" included, to the
# DNS server.
_HOSTS_FILE = _hosts_file() | {"localhost"}


def _is_local_name(host: str) -> bool:
    return host.rstrip(".").lower() in _HOSTS_FILE


def _host_text(host) -> str | None:
    if host is None:
        return None
    return host.decode("ascii", "replace") if isinstance(host, (bytes, bytearray)) else str(host)


def _target(event: str, args: tuple) -> str | None:
    """Where the operation would go when that is past loopback; None when it stays on this machine."""
    if event in _ADDRESSED:
        sock, address = args
        if address is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None  # sendmsg on a connected socket (its connect was checked), a Unix socket
        host = _host_text(address[0])
        if _is_loopback_address(host) or host.rstrip(".").lower() == "localhost":
            return None
        return f"{host}:{address[1]}"
    if event == "socket.getaddrinfo":
        host = _host_text(args[0])
        # A numeric address resolves without asking anyone (a bind to 0.0.0.0, a URL with an IP): what matters is
        # whether something then connects to it, and that is checked there.
        if not host or _is_numeric(host) or _is_local_name(host):
            return None
        return f"{host}:{args[1]}" if args[1] is not None else host
    if event == "socket.gethostbyname":
        host = _host_text(args[0])
        return None if not host or _is_numeric(host) or _is_local_name(host) else host
    # gethostbyaddr and getnameinfo: a reverse lookup asks the DNS server unless /etc/hosts answers it.
    host = _host_text(args[0][0] if event == "socket.getnameinfo" else args[0])
    return None if not host or _is_loopback_address(host) or _is_local_name(host) else host


def _audit(event: str, args: tuple) -> None:
    if event not in _WATCHED or not GUARD.active:
        return
    target = _target(event, args)
    if target is None:
        GUARD.allowed += 1
        return
    GUARD.record(event, target)
    raise EgressBlocked(errno.EPERM, f"{event} to {target} was blocked: nothing may leave the machine")


def install(log: Path | None = None, child: bool = False) -> Guard:
    """Turns the guard on in this process (once: an audit hook cannot be removed, GUARD.active switches it).

    The suite's process reads `log` (child False); a child process appends to it. A process forked from the suite's
    inherits the hook and, having another pid, appends to the log too.
    """
    if not getattr(sys, "_egress_guard_installed", False):
        sys.addaudithook(_audit)
        sys._egress_guard_installed = True
    GUARD.log = log
    GUARD.owner = None if child else os.getpid()
    GUARD.active = True
    return GUARD


def extend_to_children(log: Path) -> None:
    """Child Python processes started from here on install the guard at start-up and log to `log`, read back here."""
    log.touch()
    GUARD.log = log
    os.environ[LOG_VARIABLE] = str(log)
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(CHILD_DIR) + (os.pathsep + path if path else "")
