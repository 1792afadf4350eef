"""GET /healthz (liveness), GET /readyz (readiness), GET /metrics (Prometheus).

/healthz and /readyz answer without credentials, because orchestrators and load balancers probe them without any,
and say nothing that helps an attacker: the process is up; the store and the model can answer, or which of the two
cannot. What is wrong (paths, hosts, errors) goes to the server's log.

/metrics needs credentials, of an administrator or of a member of the group `metrics` (a key made for the scraper:
`assistant keys add prometheus --group metrics`; Prometheus sends it with `authorization: {credentials_file: ...}`).
Request counts by route and time tell an outsider who uses the service how, and when; in a regulated data centre
nothing past liveness is open to whoever can reach the port. A key in `metrics` alone reads no document: no
document is shared with that group unless someone chooses to.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from assistant import policy
from assistant.api.auth import caller
from assistant.api.schemas import Liveness, Readiness, error_responses
from assistant.api.state import ApiState, api_state
from assistant.types import User

log = logging.getLogger("assistant.api")


router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Liveness)
async def healthz() -> dict:
    """The process is up and answering."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready"}})
def readyz(api: Annotated[ApiState, Depends(api_state)]) -> JSONResponse:
    """Whether the store and the answering model can answer now (503 when either cannot)."""
    health = api.health.get()
    body = {
        "status": "ready" if health.ok else "not ready",
        "store": "ok" if health.store_ok else "failing",
        "generator": "ok" if health.generator_ok else "failing",
    }
    if not health.ok:
        failing = [
            message
            for ok, message in (
                (health.store_ok, health.store_message),
                (health.generator_ok, health.generator_message),
            )
            if not ok
        ]
        log.warning("not ready: %s", "; ".join(failing))
    return JSONResponse(body, status_code=200 if health.ok else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format"},
        **error_responses(400, 401, 403, 429),
    },
)
async def metrics(user: Annotated[User, Depends(caller)], api: Annotated[ApiState, Depends(api_state)]) -> Response:
    """Requests, latency, retrieval and generation time, ingestion counts, in Prometheus' text format."""
    policy.check_metrics(user)
    return Response(api.metrics.render(), media_type=api.metrics.content_type)
