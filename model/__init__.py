"""Language models that run on the organisation's own hardware, loaded only from local paths."""

import os

# Nothing leaves the machine: forced, so an inherited environment cannot re-enable the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

# Registers Grok-1 (model_type "grok-1") with transformers' Auto classes.
from . import grok1  # noqa: F401

# Any local model (Grok-1, DBRX, Mixtral, a GGUF file), optionally with a LoRA adapter.
from .loading import ModelLoadError, load, load_adapter

__all__ = ["ModelLoadError", "load", "load_adapter"]
