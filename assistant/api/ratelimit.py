"""Requests per caller: a moving window per API key (or per user signed in by token), from the `limits` library.

Counted in this process's memory. That is enough because the API runs as one process (the embedded store admits one);
with several replicas behind a balancer, each would allow the full rate.
"""

from __future__ import annotations

import math
import time

from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


class RateLimiter:
    def __init__(self, rate: str):
        self.rate = rate
        self._items = parse_many(rate)
        # A moving window, not fixed ones: a caller cannot send a whole minute's worth at 0:59 and again at 1:00.
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def hit(self, identity: str) -> int | None:
        """Counts one request for `identity`; None when allowed, else the seconds to wait before the next one."""
        # Checked before any is counted: a request refused by one window must not use up another.
        for item in self._items:
            if not self._limiter.test(item, identity):
                reset = self._limiter.get_window_stats(item, identity).reset_time
                return max(1, math.ceil(reset - time.time()))
        for item in self._items:
            self._limiter.hit(item, identity)
        return None
