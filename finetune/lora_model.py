"""The frozen base model with LoRA attached, and the facts about an adapter that tie it to its base.

An adapter records the base it was trained on (its path, and a fingerprint of its config.json), so loading it on
another model is a clear error up front instead of a shape mismatch deep in PEFT.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from model import ModelLoadError
from model import load as load_model
from model.run_layout import ADAPTER_CONFIG, TRAINING_INFO

from .config import ConfigError, LoraSection, ModelSection
from .targets import peft_config, resolve

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def read_base_config(path: Path) -> dict:
    """The base model's config.json, checked before any weight is read."""
    config_file = Path(path) / "config.json"
    if not Path(path).is_dir():
        raise ConfigError(f"base model directory {path} does not exist: set model.path to a local model directory")
    if not config_file.is_file():
        raise ConfigError(
            f"{path} has no config.json: model.path must be a transformers model directory (a Grok-1 release is "
            "converted with `python -m model.grok1.convert` first)"
        )
    try:
        return json.loads(config_file.read_text())
    except ValueError as error:
        raise ConfigError(f"{config_file} is not valid JSON: {error}") from error


def max_positions(base_config: dict) -> int | None:
    for key in ("max_position_embeddings", "max_seq_len", "n_positions"):
        value = base_config.get(key) or (base_config.get("text_config") or {}).get(key)
        if isinstance(value, int) and value > 0:
            return value
    return None


# Keys that say how a model is stored, not which model it is: an adapter trained on the int8 conversion of a Grok-1
# release fits its bf16 conversion, and vice versa.
_STORAGE_KEYS = {"quantization", "quantization_blocks", "torch_dtype", "dtype", "transformers_version", "_name_or_path"}


def base_fingerprint(base_config: dict) -> str:
    """sha256 of the base's config.json without its storage keys: same architecture and sizes, same fingerprint.

    Weights are not hashed (hundreds of GB); a same-shaped but different model is told apart only by the base path
    training.json records, which eval and merge print.
    """
    identity = {key: value for key, value in base_config.items() if key not in _STORAGE_KEYS}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def load_base(section: ModelSection, for_training: bool, gradient_checkpointing: bool = False):
    """(model, tokenizer) of the frozen base, in the section's dtype or 4-bit (QLoRA)."""
    options = {"dtype": _DTYPES[section.dtype]}
    if section.quantization == "nf4":
        options.update(_nf4_options(section))
    try:
        model, tokenizer = load_model(section.path, **options)
    except ModelLoadError as error:
        raise ConfigError(str(error)) from error
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if for_training:
        model.train()
        model.config.use_cache = False  # a KV cache is dead weight in a training forward
        if gradient_checkpointing:
            # Non-reentrant checkpointing: the frozen inputs need no requires_grad trick, and it works under FSDP.
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tokenizer


def _nf4_options(section: ModelSection) -> dict:
    import importlib.util

    if not torch.cuda.is_available():
        raise ConfigError("model.quantization=nf4 (QLoRA) needs a CUDA GPU; on CPU use quantization none")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ConfigError("model.quantization=nf4 (QLoRA) needs bitsandbytes: pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    compute = _DTYPES[section.dtype] if section.dtype != "float32" else torch.bfloat16
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute, bnb_4bit_use_double_quant=True
    )
    # bitsandbytes quantises nn.Linear layers only; fused 3-D expert stacks (Grok-1, Mixtral) stay in `compute`.
    log.warning("QLoRA: attention and dense layers load in 4-bit; fused expert parameters stay in %s", compute)
    return {"quantization_config": quantization, "device_map": {"": torch.cuda.current_device()}}


def attach_lora(model, lora: LoraSection, base_config: dict):
    """Wrap `model` with a fresh LoRA adapter; only LoRA weights train. Returns (peft model, resolved targets)."""
    from peft import get_peft_model

    from model.lora import register_lora_layers

    targets = resolve(lora, base_config)
    if targets.note:
        log.warning(targets.note)
    config = peft_config(lora, targets)
    register_lora_layers(config)
    try:
        peft_model = get_peft_model(model, config, autocast_adapter_dtype=lora.dtype == "float32")
    except ValueError as error:
        raise ConfigError(f"LoRA targets {targets.modules + targets.expert_parameters} do not fit: {error}") from error
    if lora.dtype == "bfloat16":
        for name, parameter in peft_model.named_parameters():
            if "lora_" in name:
                parameter.data = parameter.data.to(torch.bfloat16)
    return peft_model, targets


def trainable_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def write_training_info(adapter_dir: Path, info: dict) -> None:
    (adapter_dir / TRAINING_INFO).write_text(json.dumps(info, indent=2) + "\n")


@dataclass(frozen=True)
class TrainedAdapter:
    """An adapter directory checked against the base it will be put on."""

    path: Path
    info: dict  # its training.json ({} for an adapter trained elsewhere)
    base_dir: Path
    base_config: dict

    @property
    def dtype(self) -> str:
        """The dtype the base was trained in: evaluating or merging in it reproduces training's numbers."""
        return (self.info.get("config") or {}).get("model", {}).get("dtype") or "float32"


def check_adapter(adapter_dir: Path, base_dir: Path | None = None) -> TrainedAdapter:
    """The adapter and its base (`base_dir`, or the one the adapter records), after checking they belong together."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / ADAPTER_CONFIG).is_file():
        raise ConfigError(f"{adapter_dir} is not an adapter directory (no adapter_config.json)")
    info_file = adapter_dir / TRAINING_INFO
    info = json.loads(info_file.read_text()) if info_file.is_file() else {}
    if base_dir is None:
        if "base_model" not in info:
            raise ConfigError(f"{adapter_dir} does not record its base model: pass --base MODEL_DIR")
        base_dir = Path(info["base_model"])
    base_dir = Path(base_dir)
    base_config = read_base_config(base_dir)
    expected = info.get("base_fingerprint")
    if expected and expected != base_fingerprint(base_config):
        raise ConfigError(
            f"adapter {adapter_dir} was trained on the model at {info.get('base_model')} and does not belong to "
            f"{base_dir} (their architectures differ): pass the base it was trained on"
        )
    return TrainedAdapter(adapter_dir, info, base_dir, base_config)
