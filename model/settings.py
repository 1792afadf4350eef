"""Settings of the model package: which generator writes the answers, and where its model is."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator


class GeneratorSettings(BaseModel):
    # "extractive": no model, the sources' own sentences; "local": a model in this process;
    # "openai": an on-prem OpenAI-compatible server (vLLM, SGLang, TGI) at openai_base_url.
    generator: Literal["extractive", "local", "openai"] = "extractive"

    # local: a transformers directory (config.json + weights + tokenizer), or a directory holding `gguf_file`.
    model_path: Path | None = None
    gguf_file: str | None = None
    # A LoRA adapter: for "local" a PEFT adapter directory loaded on top of model_path; for "openai" the name the
    # server serves it under (vLLM --lora-modules NAME=PATH), sent as the request's model.
    adapter: Path | None = None
    # The groups whose members the "openai" generator's adapter may answer: those that may read everything it was
    # trained on (its training.json "serves"). The server holds the adapter, so the assistant cannot read that file
    # itself; unset, only administrators are answered with it. A "local" adapter's own training.json decides.
    adapter_groups: tuple[str, ...] | None = None
    max_new_tokens: int = Field(default=256, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)

    openai_base_url: str | None = None  # e.g. http://vllm.internal:8000/v1
    openai_model: str | None = None
    openai_api_key: SecretStr | None = None
    openai_timeout_s: float = Field(default=60.0, gt=0)
    # "chat": /chat/completions (the model has a chat template); "completions": /completions with the plain prompt
    # (a base model, such as Grok-1 as released); "auto": chat until the server says the model has no template.
    openai_api: Literal["auto", "chat", "completions"] = "auto"

    @classmethod
    def setting_name(cls, field: str) -> str:
        """How the user sets `field`; a composing settings class overrides this to name its environment variable."""
        return field

    @model_validator(mode="after")
    def _generator_has_what_it_needs(self):
        name = self.setting_name
        if self.generator == "local" and self.model_path is None:
            raise ValueError(f"generator 'local' needs {name('model_path')}: a local model directory")
        if self.generator == "openai":
            missing = [name(f) for f in ("openai_base_url", "openai_model") if not getattr(self, f)]
            if missing:
                raise ValueError(f"generator 'openai' needs {' and '.join(missing)}")
            url = urlsplit(self.openai_base_url)
            if url.scheme not in ("http", "https") or not url.hostname:
                raise ValueError(
                    f"{name('openai_base_url')} must be an http(s) URL such as http://vllm.internal:8000/v1, "
                    f"not {self.openai_base_url!r}"
                )
        if self.gguf_file is not None and self.model_path is None:
            raise ValueError(f"{name('gguf_file')} names a file inside {name('model_path')}, which is unset")
        return self
