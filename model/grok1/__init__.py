"""Grok-1 as a transformers model; importing this package registers it with the Auto classes.

After `import model` (which imports this package), `AutoConfig` knows `model_type="grok-1"` and
`AutoModelForCausalLM.from_pretrained(local_dir)` builds a `Grok1ForCausalLM`, with no remote code.
"""

from transformers import AutoConfig, AutoModelForCausalLM

from .configuration import Grok1Config
from .modeling import Grok1ForCausalLM, Grok1Model, Grok1PreTrainedModel


def _register() -> None:
    # Guarded: re-importing (e.g. importlib.reload in tests) must not fail on an already-registered name.
    try:
        AutoConfig.register(Grok1Config.model_type, Grok1Config)
    except ValueError:
        pass
    try:
        AutoModelForCausalLM.register(Grok1Config, Grok1ForCausalLM)
    except ValueError:
        pass


_register()

__all__ = ["Grok1Config", "Grok1ForCausalLM", "Grok1Model", "Grok1PreTrainedModel"]
