"""`assistant serve`: the API under uvicorn, one process (the embedded store admits one), where the settings say."""

from __future__ import annotations

import ipaddress
import logging
import sys
import tempfile

from assistant.api.app import create_app
from assistant.api.keys import ApiKeyStore
from assistant.service import Assistant

log = logging.getLogger("assistant.api")


def serve(assistant: Assistant) -> int:
    import uvicorn  # only the server needs it

    settings = assistant.settings
    keys = ApiKeyStore(settings.api_keys_file)
    # Uploads are spooled to temporary files while they arrive. Those hold the organisation's documents, so they go
    # under the data directory (the disk the operator encrypts and guards, 0700), not the system's /tmp.
    spool = settings.data_dir / "tmp"
    spool.mkdir(mode=0o700, parents=True, exist_ok=True)
    tempfile.tempdir = str(spool)

    app = create_app(assistant, keys, settings)
    if not keys.entries() and not settings.api_oidc_issuer:
        _say(
            f"no API keys in {settings.api_keys_file} and no OIDC provider: every request will be refused until one "
            "is created with `assistant keys add NAME --group G`"
        )
    tls = settings.api_tls_certfile is not None
    if not tls and not _is_loopback(settings.api_address):
        _say(
            f"listening on {settings.api_address} without TLS: unless a TLS proxy is the only way in (as with "
            "docker-compose's loopback port), API keys and answers cross the network in clear; set "
            "ASSISTANT_API_TLS_CERTFILE and ASSISTANT_API_TLS_KEYFILE to serve TLS here"
        )
    # Behind a proxy, uvicorn takes the client's address from X-Forwarded-For only when the proxy connects from
    # 127.0.0.1, or from the addresses the operator lists in FORWARDED_ALLOW_IPS (uvicorn's own variable).
    uvicorn.run(
        app,
        host=settings.api_address,
        port=settings.api_port,
        workers=1,
        limit_concurrency=settings.api_max_concurrency,
        ssl_certfile=settings.api_tls_certfile,
        ssl_keyfile=settings.api_tls_keyfile,
        server_header=False,  # the server's make and version help only someone looking for its known flaws
        log_level="info",
    )
    return 0


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _say(message: str) -> None:
    print(f"assistant serve: {message}", file=sys.stderr)
