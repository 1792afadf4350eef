"""What callers get when something goes wrong: a status that says whose move it is, and `{"error": "..."}` in words.

Never a traceback: an unexpected failure answers 500 with an id to quote, and the traceback goes to the server's log
under that id. Failures of the machinery behind the API (the audit log, the model server, the store) answer 503
without their detail, which names paths and hosts; the log has it.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from qdrant_client.http.exceptions import ApiException
from starlette.exceptions import HTTPException

from assistant.audit import AuditError
from assistant.errors import InvalidRequest, NotFound, NotPermitted, StoreUnavailable
from model import ModelLoadError
from model.generators import GeneratorError
from retrieval import EmbedderMismatch, InvalidGroupName
from retrieval.embedding import ModelNotFound

log = logging.getLogger("assistant.api")

WWW_AUTHENTICATE = 'Bearer realm="assistant"'


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def unauthorized(message: str, presented: bool) -> JSONResponse:
    # RFC 6750: say which scheme to use, and when a token was sent but refused, that it was the token.
    challenge = WWW_AUTHENTICATE + (', error="invalid_token"' if presented else "")
    return error_response(401, message, {"WWW-Authenticate": challenge})


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # The Assistant's own refusals, whose messages are written for whoever asked (assistant/errors.py). Nothing
    # wider: a ValueError or PermissionError from deeper down is a fault of the service, answered 500 without detail.
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(NotPermitted, _forbidden)
    app.add_exception_handler(InvalidRequest, _unprocessable)
    app.add_exception_handler(InvalidGroupName, _unprocessable)
    app.add_exception_handler(StoreUnavailable, _store_unavailable)
    app.add_exception_handler(AuditError, _audit_unavailable)
    for unavailable in (GeneratorError, ModelLoadError, ModelNotFound):
        app.add_exception_handler(unavailable, _generator_unavailable)
    app.add_exception_handler(ApiException, _store_unavailable)  # a Qdrant server that does not answer
    app.add_exception_handler(EmbedderMismatch, _store_unavailable)  # until the operator runs `assistant reembed`
    app.add_exception_handler(Exception, _internal_error)


# FastAPI's words for a body it could not read (not UTF-8, a broken multipart stream), which say nothing of the fix.
_UNREADABLE_BODY = "There was an error parsing the body"


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    message = str(exc.detail)
    if exc.status_code == 400 and message == _UNREADABLE_BODY:
        message = (
            "the request body could not be read: send JSON in UTF-8 (Content-Type: application/json), or for "
            "/v1/ingest a multipart/form-data upload"
        )
    return error_response(exc.status_code, message, getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "the request"
        problems.append(f"{where}: {error.get('msg', 'invalid')}")
    return error_response(422, "the request is not valid: " + "; ".join(problems))


async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
    return error_response(404, str(exc))


async def _forbidden(request: Request, exc: NotPermitted) -> JSONResponse:
    log.info("refused %s %s: %s", request.method, request.url.path, exc.detail)  # which rule, for the operator
    return error_response(403, str(exc))


async def _unprocessable(request: Request, exc: ValueError) -> JSONResponse:
    return error_response(422, str(exc))


async def _audit_unavailable(request: Request, exc: AuditError) -> JSONResponse:
    log.error("audit log unavailable, request refused: %s", exc)
    return error_response(
        503,
        "the audit log cannot be written, so nothing is answered unrecorded: try again later; the operator will find "
        "the cause in the server's log",
    )


async def _generator_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("the answering model is unavailable: %s", exc)
    return error_response(
        503, "the answering model is not available now: try again later; the operator will find the cause in the log"
    )


async def _store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("the document store is unavailable: %s", exc)
    return error_response(
        503, "the document store is not reachable now: try again later; the operator will find the cause in the log"
    )


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    incident = uuid.uuid4().hex[:12]
    log.error("internal error %s on %s %r", incident, request.method, request.url.path, exc_info=exc)
    return error_response(
        500, f"internal error {incident}: the operator will find it under this id in the server's log"
    )
