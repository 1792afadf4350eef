"""The app factory: `create_app(assistant, keys, settings)` puts the API's pieces together around one Assistant."""

from __future__ import annotations

from fastapi import FastAPI

from assistant.api import errors
from assistant.api.auth import Authenticator, AuthMiddleware
from assistant.api.bodylimit import BodyLimitMiddleware
from assistant.api.headers import SecurityHeadersMiddleware
from assistant.api.keys import ApiKeyStore
from assistant.api.metrics import Metrics, MetricsMiddleware
from assistant.api.oidc import OidcVerifier
from assistant.api.ratelimit import RateLimiter
from assistant.api.routes import chat, documents, ops, questions
from assistant.api.state import ApiState, CachedHealth
from assistant.service import Assistant
from assistant.settings import Settings
from assistant.version import installed_version

# What a multipart upload adds to its files: boundaries, part headers and the `groups` fields.
MULTIPART_ALLOWANCE = 1024 * 1024

DESCRIPTION = """Ask questions of the organisation's documents and get answers with their sources.

Every route but /healthz, /readyz and this document needs `Authorization: Bearer ...`: an API key
(`assistant keys add NAME --group G`) or, where configured, an OIDC access token. Each caller reads only the documents
of their groups, as in the portal, and every question, search, upload and deletion goes to the audit log.

Errors answer `{"error": "..."}`: 401 credentials, 403 not allowed, 404 no such document, 413 too large, 422 malformed,
429 too many requests (Retry-After), 503 unavailable now.

`POST /v1/chat/completions` speaks OpenAI's format, streaming included; the sources are in the extra field `sources`.
"""


def create_app(assistant: Assistant, keys: ApiKeyStore, settings: Settings | None = None) -> FastAPI:
    settings = settings or assistant.settings
    metrics = Metrics()
    app = FastAPI(
        title="On-prem assistant",
        version=installed_version(),
        description=DESCRIPTION,
        # The interactive pages load their scripts from a public CDN: in a data centre without internet access they
        # would not work, and where it has some, every visit would tell the CDN. The document itself is served.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        # FastAPI can export traces, metrics and logs (exception messages included) over OTLP when an environment
        # variable says so. Off, whatever the environment says: nothing leaves the machine (Prometheus is local).
        telemetry={
            "auto_configure": False,
            "tracing": False,
            "metrics": False,
            "logs": False,
            "operation_spans": False,
        },
    )
    app.state.api = ApiState(assistant, settings, metrics, CachedHealth(assistant))
    errors.install(app)
    routers = [questions.router, chat.router, documents.router, ops.router]
    for router in routers:
        app.include_router(router)

    request_kb, upload_mb = settings.api_max_request_kb, settings.upload_max_mb
    too_long = (
        f"the request body is larger than {request_kb} KB (ASSISTANT_API_MAX_REQUEST_KB): send a shorter question or "
        "conversation"
    )
    too_many = (
        f"an upload may carry at most {upload_mb} MB in all (ASSISTANT_UPLOAD_MAX_MB): send fewer or smaller files per "
        "request"
    )
    default_limit = (request_kb * 1024, too_long)
    upload_limit = (upload_mb * 1024 * 1024 + MULTIPART_ALLOWANCE, too_many)
    # Added innermost first; a request passes them outermost first: metrics (which count every answer, refusals
    # included), headers, authentication and the rate limit (before any body is read), then the body limit.
    app.add_middleware(BodyLimitMiddleware, default=default_limit, by_path={"/v1/ingest": upload_limit})
    authenticator = Authenticator(keys, OidcVerifier.from_settings(settings))
    limiter = RateLimiter(settings.api_rate_limit)
    app.add_middleware(AuthMiddleware, authenticator=authenticator, limiter=limiter, metrics=metrics)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=[route for r in routers for route in r.routes])
    return app
