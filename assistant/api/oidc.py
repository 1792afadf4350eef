"""OpenID Connect bearer tokens: a JWT signed by the organisation's identity provider names the caller.

The provider's public keys come from the JWKS URL the operator configured, and from nowhere else: not from the
token (its `jku`/`x5u` headers are never followed), not through a proxy (proxy variables are ignored), not after a
redirect (refused). The claims map to a User as the portal's sign-in does (`assistant.users.user_from_claims`).
"""

from __future__ import annotations

import logging
import threading
import time

import httpx
import jwt

from assistant.settings import Settings
from assistant.types import User
from assistant.users import user_from_claims

log = logging.getLogger(__name__)

JWKS_TIMEOUT_S = 5.0
JWKS_MAX_AGE_S = 300.0  # keys are fetched again after this, so a rotation at the provider reaches the API
# A token signed by a key not (yet) in the set fetches it again, at most this often: a flood of tokens with made-up
# key ids must not become a flood of requests to the identity provider.
JWKS_REFRESH_COOLDOWN_S = 30.0
CLOCK_LEEWAY_S = 30  # clocks of the provider and this machine may differ by this much


class InvalidToken(ValueError):
    """The token is not one this API accepts; the message says why, in words the caller can act on."""


class ProviderUnavailable(RuntimeError):
    """The provider's keys could not be fetched, so no token can be checked now."""


class OidcVerifier:
    def __init__(self, issuer: str, audience: str, jwks_url: str, algorithms: tuple[str, ...] = ("RS256",)):
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self.algorithms = list(algorithms)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> OidcVerifier | None:
        if not settings.api_oidc_issuer:
            return None
        return cls(
            settings.api_oidc_issuer,
            settings.api_oidc_audience,
            settings.api_oidc_jwks_url,
            settings.api_oidc_algorithms,
        )

    def user(self, token: str) -> User:
        """The user the token names; raises InvalidToken or ProviderUnavailable."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise InvalidToken("the bearer token is neither an API key nor a JWT") from None
        key = self._key(header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=CLOCK_LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the bearer token has expired: get a new one from the identity provider") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken(f"the bearer token was not issued for this API (audience {self.audience})") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken(f"the bearer token was not issued by {self.issuer}") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("the bearer token is not valid yet: check the clocks") from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the bearer token has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError:
            raise InvalidToken("the bearer token's signature or form is not valid") from None
        try:
            user, left_out = user_from_claims(claims)
        except ValueError as exc:
            raise InvalidToken(f"the bearer token names no usable user ({exc})") from None
        if left_out:
            log.info("groups of %s that are not group names were left out: %s", user.name, ", ".join(left_out))
        return user

    def _key(self, kid: str | None) -> jwt.PyJWK:
        if not kid:
            raise InvalidToken("the bearer token names no signing key (no 'kid' header)")
        with self._lock:  # one fetch at a time; the others wait for its keys rather than fetch them again
            now = time.monotonic()
            stale = self._fetched_at is None or now - self._fetched_at > JWKS_MAX_AGE_S
            unknown = kid not in self._keys and (
                self._fetched_at is None or now - self._fetched_at > JWKS_REFRESH_COOLDOWN_S
            )
            if stale or unknown:
                self._keys = self._fetch()
                self._fetched_at = now
            key = self._keys.get(kid)
        if key is None:
            raise InvalidToken("the bearer token is signed by a key the identity provider does not publish")
        return key

    def _fetch(self) -> dict[str, jwt.PyJWK]:
        try:
            # trust_env=False: proxy variables would send the request (and learn which provider is trusted) to
            # another host; a redirect is refused for the same reason.
            response = httpx.get(self.jwks_url, timeout=JWKS_TIMEOUT_S, follow_redirects=False, trust_env=False)
            response.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(response.json()).keys
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning("the identity provider's keys at %s could not be fetched: %s", self.jwks_url, exc)
            if self._keys:  # keep checking with the keys we had rather than lock everyone out
                return self._keys
            raise ProviderUnavailable(
                "the identity provider's signing keys cannot be fetched now, so tokens cannot be checked: try again "
                "later, or use an API key"
            ) from None
        return {key.key_id: key for key in keys if key.key_id and key.public_key_use in ("sig", None)}
