"""Generators: what turns a prompt into answer text, streamed in pieces as it is produced.

Two kinds, one protocol: `LocalGenerator` runs a model in this process (small models, tests, one GPU), and
`OpenAICompatibleGenerator` asks an on-prem vLLM / SGLang / TGI server (Grok-1-sized models, tensor parallel).
`build(settings)` makes the one the settings name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from model.prompt import PLAIN_STOPS, Prompt

if TYPE_CHECKING:
    from model.settings import GeneratorSettings


class GeneratorError(RuntimeError):
    """The model could not answer (server unreachable or refusing, generation failed); the message says why."""


@runtime_checkable
class Generator(Protocol):
    name: str  # the model that answers, as shown with the answer
    adapter: str | None  # the LoRA adapter on top of it, if any

    def stream(self, prompt: Prompt) -> Iterator[str]:
        """The answer's text in pieces; joined, they are the whole answer."""
        ...


def build(settings: GeneratorSettings) -> Generator | None:
    """The generator `settings` describe, or None for the extractive answers (no model at all)."""
    if settings.generator == "extractive":
        return None
    if settings.generator == "openai":
        from model.generators.openai_server import OpenAICompatibleGenerator

        return OpenAICompatibleGenerator(
            settings.openai_base_url,
            settings.openai_model,
            api_key=settings.openai_api_key.get_secret_value() if settings.openai_api_key else None,
            adapter=str(settings.adapter) if settings.adapter else None,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            timeout=settings.openai_timeout_s,
            api=settings.openai_api,
        )
    from model.generators.local import LocalGenerator
    from model.loading import load

    loaded, tokenizer = load(settings.model_path, adapter=settings.adapter, gguf_file=settings.gguf_file)
    name = settings.gguf_file.removesuffix(".gguf") if settings.gguf_file else settings.model_path.name
    return LocalGenerator(
        loaded,
        tokenizer,
        max_new_tokens=settings.max_new_tokens,
        stop=PLAIN_STOPS,
        temperature=settings.temperature,
        name=name,
        adapter=str(settings.adapter) if settings.adapter else None,
    )


def __getattr__(name: str):
    # The generators import torch / httpx; loaded on first use so `import model.generators` stays light.
    if name == "LocalGenerator":
        from model.generators.local import LocalGenerator

        return LocalGenerator
    if name == "OpenAICompatibleGenerator":
        from model.generators.openai_server import OpenAICompatibleGenerator

        return OpenAICompatibleGenerator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Generator", "GeneratorError", "LocalGenerator", "OpenAICompatibleGenerator", "build"]
