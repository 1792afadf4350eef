"""One Settings object for the whole assistant, from ASSISTANT_* variables and an optional YAML file.

It *is* each package's settings (multiple inheritance of pydantic models), so the variable
names stay flat (ASSISTANT_QDRANT_URL, ASSISTANT_CHUNK_SIZE) and each package receives the
settings it defines without a copy of every field here. It is read by the installation's one loader
(`retrieval.installation`), which `finetune` uses too.
"""

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from model.settings import GeneratorSettings
from retrieval import validate_groups
from retrieval.installation import CONFIG_FILE_VARIABLE, ENV_PREFIX, InstallationSettings

__all__ = ["CONFIG_FILE_VARIABLE", "Settings"]


class Settings(InstallationSettings, GeneratorSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    # The portal's sign-in: "local" checks users_file; "oidc" is Streamlit's st.login, whose client id and
    # secret live in the operator's .streamlit/secrets.toml, never in this repository or its settings.
    auth: Literal["local", "oidc"] = "local"
    # Unset paths default under data_dir (model_post_init), so one directory holds all of an installation's state.
    users_file: Path | None = None
    audit_log: Path | None = None
    # "hash": questions, answers and comments go to the audit log as keyed hashes (HMAC-SHA256), not text, where
    # policy forbids keeping what staff typed; who asked, when, and which passages they were shown are kept either way.
    audit_text: Literal["text", "hash"] = "text"
    runs_dir: Path | None = None  # fine-tuning runs: each subdirectory is one run's output_dir
    # Each user's portal conversations (default under data_dir), and how long one is kept after its last question.
    conversations_dir: Path | None = None
    conversation_retention_days: int = Field(default=90, ge=1)
    evaluations_dir: Path | None = None  # `assistant eval` runs, one JSON file each (default under data_dir)

    # Loopback by default: the portal is reached through the organisation's reverse proxy (TLS), not directly.
    portal_address: str = "127.0.0.1"
    portal_port: int = Field(default=8501, ge=1, le=65535)
    # A local account's portal session survives a reload for this long after its last use (ui/sessions.py).
    portal_session_idle_minutes: int = Field(default=480, ge=1)
    upload_max_mb: int = Field(default=50, ge=1)
    # What one user's upload folder may hold in all: without a bound, one account could fill the disk that the store
    # and the audit log share, and a full disk stops every question (nothing is answered unrecorded).
    upload_quota_mb: float = Field(default=1024, gt=0)

    # The HTTP API (`assistant serve`). Loopback by default, like the portal: API keys travel in a header, so the
    # service is reached through the organisation's TLS proxy, or serves TLS itself (api_tls_certfile / _keyfile).
    api_address: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    api_keys_file: Path | None = None  # hashed API keys and the user and groups each acts as; default under data_dir
    # Every request body but an upload's: a question with its conversation fits in far less than this, and more
    # would be held in memory and written to the audit log.
    api_max_request_kb: int = Field(default=1024, ge=1)
    # Requests each caller (an API key, or a user signed in by token) may make, in the `limits` library's notation
    # ("120/minute", "10/second;1000/hour"); more are answered 429 with Retry-After. Counted in this process.
    api_rate_limit: str = "120/minute"
    # Requests in progress at once; uvicorn answers 503 beyond that rather than queue without bound.
    api_max_concurrency: int = Field(default=64, ge=1)
    api_tls_certfile: Path | None = None
    api_tls_keyfile: Path | None = None
    # OpenID Connect bearer tokens, optional: tokens signed by the issuer's keys (from api_oidc_jwks_url, and from
    # nowhere else) for this audience; the token's claims name the user and groups as in the portal.
    api_oidc_issuer: str | None = None
    api_oidc_audience: str | None = None
    api_oidc_jwks_url: str | None = None
    api_oidc_algorithms: tuple[str, ...] = ("RS256",)

    @field_validator("adapter_groups")
    @classmethod
    def _adapter_groups_are_group_names(cls, groups: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if groups is None else validate_groups(groups)

    @field_validator("api_rate_limit")
    @classmethod
    def _rate_limit_parses(cls, rate: str) -> str:
        from limits import parse_many  # only here: the rest of the assistant needs no rate limiter

        try:
            parse_many(rate)
        except ValueError:
            raise ValueError(
                f"{cls.setting_name('api_rate_limit')} must read like '120/minute' or '10/second;1000/hour', "
                f"not {rate!r}"
            ) from None
        return rate

    @field_validator("api_oidc_algorithms")
    @classmethod
    def _asymmetric_algorithms_only(cls, algorithms: tuple[str, ...]) -> tuple[str, ...]:
        # An HMAC algorithm would verify with the provider's *public* key as the secret, which anyone can fetch:
        # tokens signed with it could be forged by anyone. Only signature algorithms with a private key are allowed.
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
        refused = sorted(set(algorithms) - allowed)
        if refused or not algorithms:
            raise ValueError(
                f"{cls.setting_name('api_oidc_algorithms')} must list public-key algorithms ({', '.join(sorted(allowed))}), "
                f"not {refused or 'nothing'}"
            )
        return algorithms

    @model_validator(mode="after")
    def _oidc_is_whole_or_absent(self):
        name = self.setting_name
        fields = ("api_oidc_issuer", "api_oidc_audience", "api_oidc_jwks_url")
        given = [field for field in fields if getattr(self, field)]
        if given and len(given) < len(fields):
            missing = " and ".join(name(field) for field in fields if field not in given)
            # Without an audience, a token the provider issued for any other application would be accepted here.
            raise ValueError(f"OIDC bearer tokens for the API need {missing} as well as {name(given[0])}")
        if given:
            url = urlsplit(self.api_oidc_jwks_url)
            loopback = url.hostname in ("127.0.0.1", "::1", "localhost")
            # The keys decide who may sign in: fetched over plain HTTP, anyone on the path could substitute theirs.
            if not url.hostname or not (url.scheme == "https" or (url.scheme == "http" and loopback)):
                raise ValueError(
                    f"{name('api_oidc_jwks_url')} must be an https URL of the identity provider's keys (plain http "
                    f"only on loopback), not {self.api_oidc_jwks_url!r}"
                )
        if (self.api_tls_certfile is None) != (self.api_tls_keyfile is None):
            raise ValueError(f"TLS needs both {name('api_tls_certfile')} and {name('api_tls_keyfile')}")
        return self

    def model_post_init(self, context, /) -> None:
        super().model_post_init(context)
        if self.users_file is None:
            self.users_file = self.data_dir / "users.yaml"
        if self.api_keys_file is None:
            self.api_keys_file = self.data_dir / "api_keys.yaml"
        if self.audit_log is None:
            self.audit_log = self.data_dir / "audit.jsonl"
        if self.runs_dir is None:
            self.runs_dir = self.data_dir / "runs"
        if self.conversations_dir is None:
            self.conversations_dir = self.data_dir / "conversations"
        if self.evaluations_dir is None:
            self.evaluations_dir = self.data_dir / "evaluations"
