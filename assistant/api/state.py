"""What the routes share: the Assistant, the settings, the metrics, and two small pieces of coordination."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from fastapi import Request

from assistant.api.metrics import Metrics
from assistant.service import Assistant
from assistant.settings import Settings
from assistant.types import Health

READINESS_MAX_AGE_S = 5.0


class CachedHealth:
    """Assistant.health(), asked at most every few seconds.

    /readyz needs no credentials, and a health check counts the store's chunks and may ask the model server: without
    this, anyone who can reach the port could make the service do that as fast as they can send requests.
    """

    def __init__(self, assistant: Assistant, max_age_s: float = READINESS_MAX_AGE_S):
        self.assistant = assistant
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._health: Health | None = None
        self._checked_at = 0.0

    def get(self) -> Health:
        with self._lock:
            if self._health is None or time.monotonic() - self._checked_at > self.max_age_s:
                self._health = self.assistant.health()
                self._checked_at = time.monotonic()
            return self._health


@dataclass
class ApiState:
    assistant: Assistant
    settings: Settings
    metrics: Metrics
    health: CachedHealth
    # One ingestion at a time. Ingestions compete for the same cores (embedding uses them all), and two uploads of one
    # file name by one user would write the same file, and the same document's chunks, at once.
    ingest_lock: threading.Lock = field(default_factory=threading.Lock)


async def api_state(request: Request) -> ApiState:
    return request.app.state.api
