"""Who is calling: an API key, or (where configured) an OIDC bearer token, in `Authorization: Bearer ...`.

Checked in a middleware, before any route runs and before the request's body is read: a caller without valid
credentials cannot make the server read (and spool to disk) an upload, and every path is closed unless it is one of
the few public ones below, so a route added later is authenticated without anyone remembering to. The rate limit is
applied there too, once the caller is known.

Failed attempts are not throttled by address. A key is 256 random bits, so guessing is hopeless at any rate, and
behind the organisation's proxy every client shares one address: blocking it would lock everyone out for one
misconfigured script. Failures are counted (`assistant_auth_failures_total`) and logged with the client's address,
which is where an operator's alerting looks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

import anyio.to_thread
from fastapi import HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from assistant.api.errors import WWW_AUTHENTICATE, error_response, unauthorized
from assistant.api.keys import KEY_PREFIX, ApiKeyStore, KeyStoreError
from assistant.api.metrics import Metrics
from assistant.api.oidc import InvalidToken, OidcVerifier, ProviderUnavailable
from assistant.api.ratelimit import RateLimiter
from assistant.types import User

log = logging.getLogger("assistant.api")

# Liveness and readiness are probed by orchestrators and load balancers that hold no credentials; the OpenAPI
# document describes the API and holds nothing of the organisation's. Everything else needs credentials.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json"})
MAX_TOKEN_CHARS = 16_384  # an OIDC token with many groups runs to a few KB; more is not a token

# For the OpenAPI document (clients and schemathesis learn the scheme from it); the middleware does the checking.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key from `assistant keys add` (asst_...), or where configured an OIDC access token.",
)


@dataclass(frozen=True)
class Caller:
    user: User
    identity: str  # what the rate limit counts: one API key, or one user signed in by token


class Unauthenticated(Exception):
    def __init__(self, message: str, reason: str, presented: bool = True):
        super().__init__(message)
        self.reason = reason  # a metrics label: missing, key, token
        self.presented = presented


class CredentialsUnavailable(Exception):
    """Credentials cannot be checked now (the key file is damaged, the identity provider does not answer)."""


class Authenticator:
    def __init__(self, keys: ApiKeyStore, oidc: OidcVerifier | None = None):
        self.keys = keys
        self.oidc = oidc

    def authenticate(self, authorization: str | None) -> Caller:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            how = "an API key" + (" or an OIDC token" if self.oidc else "")
            raise Unauthenticated(
                f"this API needs credentials: send `Authorization: Bearer ...` with {how}; an operator creates keys "
                "with `assistant keys add`",
                reason="missing",
                presented=False,
            )
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated("the bearer token is too long to be a key or a token", reason="malformed")
        if token.startswith(KEY_PREFIX):
            try:
                key = self.keys.authenticate(token)
            except KeyStoreError as exc:
                log.error("API keys cannot be checked: %s", exc)
                raise CredentialsUnavailable(
                    "API keys cannot be checked now: the operator will find why in the log"
                ) from None
            if key is None:
                raise Unauthenticated(
                    "the API key is not valid (mistyped, or revoked): ask an operator for a new one", reason="key"
                )
            return Caller(key.user, f"key:{key.name}")
        if self.oidc is None:
            raise Unauthenticated(
                "the bearer token is not an API key (asst_...), and this server accepts no OIDC tokens", reason="token"
            )
        try:
            user = self.oidc.user(token)
        except InvalidToken as exc:
            raise Unauthenticated(str(exc), reason="token") from None
        except ProviderUnavailable as exc:
            raise CredentialsUnavailable(str(exc)) from None
        return Caller(user, f"token:{user.id}")  # the issuer and subject: two people never share a limit


class AuthMiddleware:
    def __init__(self, app: ASGIApp, authenticator: Authenticator, limiter: RateLimiter, metrics: Metrics):
        self.app = app
        self.authenticator = authenticator
        self.limiter = limiter
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization")
        token = (authorization or "").partition(" ")[2].strip()
        try:
            if self.authenticator.oidc is not None and token and not token.startswith(KEY_PREFIX):
                # A token may need the provider's keys fetched: not on the event loop.
                caller = await anyio.to_thread.run_sync(self.authenticator.authenticate, authorization)
            else:  # a hash and a stat, or a refusal: no thread needed
                caller = self.authenticator.authenticate(authorization)
        except Unauthenticated as exc:
            self.metrics.auth_failures.labels(exc.reason).inc()
            client = scope.get("client") or ("?", 0)
            # %r: the path is percent-decoded, and a %0a in it must not forge a line of the log.
            log.warning("refused %s %r from %s: %s", scope["method"], scope["path"], client[0], exc)
            await unauthorized(str(exc), exc.presented)(scope, receive, send)
            return
        except CredentialsUnavailable as exc:
            await error_response(503, str(exc), {"Retry-After": "30"})(scope, receive, send)
            return
        wait = self.limiter.hit(caller.identity)
        if wait is not None:
            self.metrics.rate_limited.inc()
            message = f"too many requests: this caller may make {self.limiter.rate}; try again in {wait} s"
            await error_response(429, message, {"Retry-After": str(wait)})(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


async def caller(request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> User:
    """The authenticated user (a route dependency); the middleware has checked the credentials."""
    found: Caller | None = request.scope.get("state", {}).get("caller")
    if found is None:  # only a public path reaches here without one, and public paths do not ask for a user
        raise HTTPException(401, "this route needs credentials", headers={"WWW-Authenticate": WWW_AUTHENTICATE})
    return found.user
