"""Grok-1 in the layout vLLM serves: names, config and remote code (layout.py), written by export.py."""

from .export import export, write_serving_directory
from .layout import ARCHITECTURE, MODEL_TYPE, ServingLayoutError, serving_config

__all__ = ["ARCHITECTURE", "MODEL_TYPE", "ServingLayoutError", "export", "serving_config", "write_serving_directory"]
