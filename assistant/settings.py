"""One Settings object for the whole assistant, from ASSISTANT_* variables and an optional YAML file.

It *is* each package's settings (multiple inheritance of pydantic models), so the variable
names stay flat (ASSISTANT_QDRANT_URL, ASSISTANT_CHUNK_SIZE) and each package receives the
settings it defines without a copy of every field here.
"""

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from model.settings import GeneratorSettings
from retrieval import RetrievalSettings, validate_groups

CONFIG_FILE_VARIABLE = "ASSISTANT_CONFIG"


class Settings(RetrievalSettings, GeneratorSettings, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASSISTANT_", extra="forbid")

    data_dir: Path = Path(".assistant")

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

    # Loopback by default: the portal is reached through the organisation's reverse proxy (TLS), not directly.
    portal_address: str = "127.0.0.1"
    portal_port: int = Field(default=8501, ge=1, le=65535)
    upload_max_mb: int = Field(default=50, ge=1)

    @field_validator("adapter_groups")
    @classmethod
    def _adapter_groups_are_group_names(cls, groups: tuple[str, ...] | None) -> tuple[str, ...] | None:
        return None if groups is None else validate_groups(groups)

    @classmethod
    def setting_name(cls, field: str) -> str:
        # Errors about a missing or wrong setting name the variable the operator sets.
        return f"{cls.model_config['env_prefix']}{field.upper()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: arguments, then environment, then the YAML file named by ASSISTANT_CONFIG.
        sources = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_VARIABLE)
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"{CONFIG_FILE_VARIABLE} names {config_file}, which does not exist")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)

    def model_post_init(self, context, /) -> None:
        # The embedded store lives under the data directory unless a server or path is named.
        if self.qdrant_url is None and self.qdrant_path is None:
            self.qdrant_path = str(self.data_dir / "qdrant")
        if self.users_file is None:
            self.users_file = self.data_dir / "users.yaml"
        if self.audit_log is None:
            self.audit_log = self.data_dir / "audit.jsonl"
        if self.runs_dir is None:
            self.runs_dir = self.data_dir / "runs"
