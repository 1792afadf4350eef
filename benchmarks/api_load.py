"""Load on the HTTP API: `assistant serve` in a second process on 127.0.0.1, N concurrent clients for D seconds.

    .venv/bin/python benchmarks/api_load.py [--clients 20] [--duration 30] [--max-requests 100000]

The server runs with the in-memory store (ASSISTANT_QDRANT_PATH=:memory:) and extractive answers, so it is the API,
retrieval and the audit log that are measured, not a language model. With `:memory:` the store lives in the server
process, so samples/ is ingested through the API (POST /v1/ingest), as a client would. Each client then asks
(POST /v1/ask) and searches (POST /v1/search) in turn, with the questions of samples/questions.jsonl, as a member of
staff. The rate limit is lifted for the run (ASSISTANT_API_RATE_LIMIT): it is the service that is measured, and one
key stands for every client. Prints requests, errors, throughput and p50 / p95 / p99 latency per route.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
FOLDER_GROUPS = {"public": "staff", "security": "security", "hr": "hr"}
STARTUP_TIMEOUT_S = 180


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load")
    parser.add_argument("--max-requests", type=int, default=100_000, help="stop earlier after this many requests")
    args = parser.parse_args()

    from assistant.api.keys import ApiKeyStore  # here: --help needs no assistant

    with tempfile.TemporaryDirectory(prefix="api-load-") as data_dir:
        keys = ApiKeyStore(Path(data_dir) / "api_keys.yaml")
        admin, staff = keys.add("loader", ["admin"]), keys.add("client", ["staff"])
        port = _free_port()
        env = {
            **os.environ,
            "ASSISTANT_DATA_DIR": data_dir,
            "ASSISTANT_QDRANT_PATH": ":memory:",
            "ASSISTANT_GENERATOR": "extractive",
            "ASSISTANT_API_ADDRESS": "127.0.0.1",
            "ASSISTANT_API_PORT": str(port),
            "ASSISTANT_API_RATE_LIMIT": "10000000/minute",
            "ASSISTANT_API_MAX_CONCURRENCY": str(max(64, 2 * args.clients)),
        }
        log_path = Path(data_dir) / "server.log"
        with open(log_path, "w") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "assistant.cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
            try:
                base = f"http://127.0.0.1:{port}"
                _wait_until_up(base, server, log_path)
                _ingest_samples(base, admin)
                results, seconds = asyncio.run(_load(base, staff, args.clients, args.duration, args.max_requests))
                server_side = _server_latency(base, admin)
            finally:
                server.send_signal(signal.SIGINT)  # uvicorn finishes what is in flight, then the Assistant closes
                try:
                    server.wait(30)
                except subprocess.TimeoutExpired:
                    server.kill()
    _report(results, seconds, args.clients, server_side)
    return 0 if all(status == 200 for route in results.values() for status, _ in route) else 1


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(base: str, server: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server stopped (exit {server.returncode}):\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the server did not become ready in {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()}")


def _ingest_samples(base: str, admin_key: str) -> None:
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=base, headers=headers, timeout=300, trust_env=False) as client:
        for folder, group in FOLDER_GROUPS.items():
            paths = sorted(p for p in (SAMPLES / folder).iterdir() if p.is_file())
            files = [("files", (path.name, path.read_bytes())) for path in paths]
            response = client.post("/v1/ingest", files=files, data={"groups": group})
            response.raise_for_status()
            outcomes = {row["file"]: row["outcome"] for row in response.json()["files"]}
            if set(outcomes.values()) != {"added"}:
                raise SystemExit(f"ingesting samples/{folder} did not add every file: {outcomes}")
            print(f"ingested samples/{folder} for {group}: {response.json()['summary']}")


async def _load(base: str, key: str, clients: int, duration: float, max_requests: int):
    questions = [json.loads(line)["question"] for line in (SAMPLES / "questions.jsonl").read_text().splitlines()]
    results: dict[str, list[tuple[int, float]]] = defaultdict(list)
    sent = itertools.count()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60, trust_env=False) as http:
        started = time.perf_counter()
        deadline = started + duration

        async def client(number: int) -> None:
            for turn in itertools.count(number):
                if time.perf_counter() >= deadline or next(sent) >= max_requests:
                    return
                question = questions[turn % len(questions)]
                route, body = (
                    ("/v1/ask", {"question": question}) if turn % 2 == 0 else ("/v1/search", {"query": question})
                )
                began = time.perf_counter()
                try:
                    status = (await http.post(route, json=body)).status_code
                except httpx.HTTPError:
                    status = 0
                results[route].append((status, time.perf_counter() - began))

        await asyncio.gather(*(client(number) for number in range(clients)))
        return results, time.perf_counter() - started


def _server_latency(base: str, admin_key: str) -> dict[str, float]:
    """Mean time inside the server per route, from its own metrics (so the client's share can be told apart)."""
    text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {admin_key}"}, trust_env=False).text
    sums, counts = {}, {}
    for line in text.splitlines():
        for suffix, into in (("_sum", sums), ("_count", counts)):
            prefix = f"assistant_http_request_duration_seconds{suffix}{{"
            if line.startswith(prefix) and 'method="POST"' in line:
                route = line.split('route="')[1].split('"')[0]
                into[route] = float(line.rsplit(" ", 1)[1])
    return {route: sums[route] / counts[route] for route in sums if counts.get(route)}


def _report(results: dict, seconds: float, clients: int, server_side: dict[str, float]) -> None:
    print(f"\n{clients} clients for {seconds:.1f} s against 127.0.0.1 (in-memory store, extractive answers)")
    print(
        f"{'route':<12} {'requests':>9} {'errors':>7} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
        f"{'server mean ms':>15}"
    )
    everything = []
    for route in sorted(results):
        rows = results[route]
        everything += rows
        _row(route, rows, seconds, server_side.get(route))
    _row("all", everything, seconds, None)


def _row(name: str, rows: list[tuple[int, float]], seconds: float, server_mean: float | None) -> None:
    latencies = sorted(latency * 1000 for _, latency in rows)
    errors = sum(status != 200 for status, _ in rows)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    server = f"{server_mean * 1000:15.1f}" if server_mean is not None else f"{'':>15}"
    print(
        f"{name:<12} {len(rows):>9} {errors:>7} {len(rows) / seconds:>7.1f} {cuts[49]:>8.1f} {cuts[94]:>8.1f} "
        f"{cuts[98]:>8.1f} {server}"
    )


if __name__ == "__main__":
    sys.exit(main())
