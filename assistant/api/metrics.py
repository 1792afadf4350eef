"""Prometheus metrics: requests by route and status, their latency, retrieval and generation time, ingestion counts.

Each app has its own registry (tests build many apps in one process). Routes are labelled by their template
(`/v1/documents/{doc_id}`), never by the path a client sent, so a scan of made-up paths cannot grow the label set;
nothing a user typed, and no user name, becomes a label.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistant.types import Answer

# Seconds. Retrieval on 2 CPU cores takes milliseconds; an answer from a large model takes seconds to a minute.
FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SLOW = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120)
UNMATCHED = "unmatched"


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        registry = self.registry
        ProcessCollector(registry=registry)  # memory, CPU time, open files of this process
        self.requests = Counter(
            "assistant_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=registry
        )
        self.latency = Histogram(
            "assistant_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer (a streamed one included)",
            ["method", "route"],
            buckets=SLOW,
            registry=registry,
        )
        self.in_progress = Gauge("assistant_http_requests_in_progress", "Requests being answered", registry=registry)
        self.retrieval = Histogram(
            "assistant_retrieval_seconds",
            "Search time of a question or search",
            ["operation"],
            buckets=FAST,
            registry=registry,
        )
        self.generation = Histogram(
            "assistant_generation_seconds",
            "Time to write an answer from its sources",
            ["model"],
            buckets=SLOW,
            registry=registry,
        )
        self.first_token = Histogram(
            "assistant_first_token_seconds",
            "Time from a question to the first piece of a model's answer",
            ["model"],
            buckets=SLOW,
            registry=registry,
        )
        self.ingested_files = Counter(
            "assistant_ingested_files",
            "Uploaded files by outcome (added, updated, unchanged, failed, refused, ...)",
            ["outcome"],
            registry=registry,
        )
        self.ingested_chunks = Counter("assistant_ingested_chunks", "Chunks written by ingestion", registry=registry)
        self.auth_failures = Counter(
            "assistant_auth_failures",
            "Requests refused for missing or wrong credentials",
            ["reason"],
            registry=registry,
        )
        self.rate_limited = Counter("assistant_rate_limited", "Requests refused by the rate limit", registry=registry)

    def observe_answer(self, answer: Answer, operation: str) -> None:
        self.retrieval.labels(operation).observe(answer.timings.get("retrieve_ms", 0.0) / 1000)
        self.generation.labels(answer.model).observe(answer.timings.get("generate_ms", 0.0) / 1000)
        if "first_token_ms" in answer.timings:
            self.first_token.labels(answer.model).observe(answer.timings["first_token_ms"] / 1000)

    def observe_ingest(self, outcomes: Iterable[str], chunks: int) -> None:
        for outcome in outcomes:
            self.ingested_files.labels(outcome).inc()
        self.ingested_chunks.inc(chunks)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts and times every HTTP request, those refused before any route (401, 413, 429) included."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Iterable):
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app fails before it starts an answer
        started = time.perf_counter()

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_counted)
        finally:
            self.metrics.in_progress.dec()
            method, route = scope["method"], self._route(scope)
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None:
            return route.path
        # Refused before routing (authentication, limits): the route it was meant for, found the way the router would.
        for candidate in self.routes:
            match, _ = candidate.matches(scope)
            if match == Match.FULL:
                return candidate.path
        return UNMATCHED
