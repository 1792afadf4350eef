"""One Settings object for the whole assistant, from ASSISTANT_* variables and an optional YAML file.

It *is* each package's settings (multiple inheritance of pydantic models), so the variable
names stay flat (ASSISTANT_QDRANT_URL, ASSISTANT_CHUNK_SIZE) and each package receives the
settings it defines without a copy of every field here.
"""

import os
from pathlib import Path

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from model.settings import GeneratorSettings
from retrieval import RetrievalSettings

CONFIG_FILE_VARIABLE = "ASSISTANT_CONFIG"


class Settings(RetrievalSettings, GeneratorSettings, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ASSISTANT_", extra="forbid")

    data_dir: Path = Path(".assistant")

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
