"""The one loader of an installation's settings: ASSISTANT_* variables over the YAML file that ASSISTANT_CONFIG names.

Every program of an installation (the assistant, its portal and API, and `finetune`) reads its settings through
`InstallationSettings` or a subclass of it, so they cannot disagree on where the store is or whether personal data is
redacted: no module reads ASSISTANT_* variables by hand. It lives here, not in `assistant`, because `finetune` reads
the store and the redaction setting too and must not import the assistant (imports point one way).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from retrieval.settings import RetrievalSettings

ENV_PREFIX = "ASSISTANT_"
CONFIG_FILE_VARIABLE = "ASSISTANT_CONFIG"


class InstallationSettings(RetrievalSettings, BaseSettings):
    """The data directory and everything retrieval needs, read as every program of the installation reads them.

    Keys of the YAML file that belong to other parts (the generator, the portal) are ignored here; the assistant's
    `Settings`, a subclass, forbids unknown ones, so a typo is still caught where the whole file is read.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    data_dir: Path = Path(".assistant")

    @classmethod
    def setting_name(cls, field: str) -> str:
        # Errors about a missing or wrong setting name the variable the operator sets.
        return f"{ENV_PREFIX}{field.upper()}"

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
        # The one place the variable naming the file is read: it cannot be a field of the file it names.
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
