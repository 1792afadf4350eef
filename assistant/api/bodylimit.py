"""The largest request body each route accepts, enforced while the body is read, not only from Content-Length.

A declared length over the limit is answered 413 before anything is read; a body sent without one (chunked) is
counted as it arrives and refused as soon as it passes the limit, so a client cannot stream an endless body into
memory or onto disk. Starlette has a limiter of its own, but it answers in plain text without naming the limit or
what to do, and this API's errors are JSON that says both.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistant.api.errors import error_response


class BodyTooLarge(HTTPException):
    def __init__(self, message: str):
        super().__init__(413, message)


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, default: tuple[int, str], by_path: dict[str, tuple[int, str]]):
        """`default` and each of `by_path`: (bytes, the message that names the limit and the setting that raises it)."""
        self.app = app
        self.default = default
        self.by_path = by_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, message = self.by_path.get(scope["path"], self.default)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await error_response(400, f"Content-Length {declared!r} is not a number of bytes")(scope, receive, send)
                return
            if int(declared) > limit:
                await error_response(413, message)(scope, receive, send)
                return
        received = 0

        async def receive_within_limit() -> Message:
            nonlocal received
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > limit:
                    # Raised where the app reads the body: FastAPI passes an HTTPException through, and the error
                    # handlers answer it as JSON.
                    raise BodyTooLarge(message)
            return event

        await self.app(scope, receive_within_limit, send)
