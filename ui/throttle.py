"""Growing delays after wrong passwords, per user name and per client, shared by every session of the process.

A few mistakes cost nothing; after FREE failures on a key, each next attempt must wait 2^(failures - FREE) seconds
after the last failure, up to CAP. Attempts inside the wait are refused before any password is checked, so guessing
one account from many clients, or many accounts from one client, is slowed alike.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

FREE = 3
CAP = 300.0  # seconds: an owner who mistyped is never locked out for longer than this at a time
FORGET = 24 * 3600.0  # seconds without a failure after which a key starts afresh
MAX_KEYS = 100_000  # beyond this, keys whose wait is over are dropped: memory stays bounded whatever names arrive


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0


class Throttle:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock  # swapped by tests: no test sleeps
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()  # sessions run in threads of one process

    def begin(self, keys: Iterable[str]) -> float:
        """0 when an attempt may go ahead, else how many seconds are left to wait.

        An allowed attempt counts as a failure from this moment on, before its password is checked: parallel
        attempts (many sessions at once) cannot all slip through before the first failure is recorded.
        `succeeded` takes it back.
        """
        keys = list(keys)
        with self._lock:
            now = self.clock()
            wait = max((self._wait(key, now) for key in keys), default=0.0)
            if wait > 0:
                return wait
            self._prune(now)
            for key in keys:
                record = self._records.setdefault(key, _Record())
                record.failures += 1
                record.last = now
            return 0.0

    def succeeded(self, reset: Iterable[str], release: Iterable[str] = ()) -> None:
        """After a right password: the keys in `reset` (the user's name) start afresh; those in `release` (the
        client) lose the failure `begin` counted, but keep earlier ones, so one's own account does not wash away
        guesses at others."""
        with self._lock:
            for key in reset:
                self._records.pop(key, None)
            for key in release:
                record = self._records.get(key)
                if record is not None:
                    record.failures = max(0, record.failures - 1)

    def _wait(self, key: str, now: float) -> float:
        record = self._records.get(key)
        if record is None or record.failures < FREE:
            return 0.0
        if now - record.last >= FORGET:
            del self._records[key]
            return 0.0
        delay = min(2.0 ** (record.failures - FREE), CAP)
        return max(0.0, record.last + delay - now)

    def _prune(self, now: float) -> None:
        if len(self._records) < MAX_KEYS:
            return
        for key in [key for key, record in self._records.items() if now - record.last >= CAP]:
            del self._records[key]
        # Still full (a flood of fresh names from many clients): the longest-idle keys go first.
        excess = len(self._records) - MAX_KEYS + 1
        for key in sorted(self._records, key=lambda key: self._records[key].last)[: max(0, excess)]:
            del self._records[key]


def wait_message(seconds: float) -> str:
    seconds = math.ceil(seconds)
    if seconds >= 90:
        amount = f"{math.ceil(seconds / 60)} minutes"
    else:
        amount = f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"Too many failed sign-ins: wait {amount}, then try again."
