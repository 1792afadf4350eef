"""Safetensors shards written as tensors stream in, with the index transformers and vLLM read."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

DEFAULT_SHARD_SIZE = "5GB"


def parse_size(text: str | int) -> int:
    """'5GB', '500MB', '10KB' or a plain byte count -> bytes (decimal units, as transformers uses)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B?)\s*", str(text).upper())
    if not match:
        raise ValueError(f"cannot parse size {text!r}; write e.g. 5GB, 500MB or a number of bytes")
    unit = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9}[match.group(2)]
    return int(float(match.group(1)) * unit)


class ShardWriter:
    """Collects tensors and writes a safetensors shard whenever the next tensor would overflow `max_bytes`."""

    def __init__(self, out_dir: Path, max_bytes: int):
        self.out_dir, self.max_bytes = out_dir, max_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.shards: list[list[str]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + size > self.max_bytes:
            self.flush()
        self.pending[name] = tensor.contiguous()
        self.pending_bytes += size
        self.total_bytes += size

    def flush(self) -> None:
        if not self.pending:
            return
        # The total shard count is only known at the end, so shards get their final names in finish().
        save_file(self.pending, self.out_dir / self._temp_name(len(self.shards)), metadata={"format": "pt"})
        self.shards.append(list(self.pending))
        self.pending, self.pending_bytes = {}, 0

    @staticmethod
    def _temp_name(index: int) -> str:
        return f"partial-{index:05d}.safetensors"

    def finish(self) -> dict:
        self.flush()
        count = len(self.shards)
        weight_map = {}
        for index, names in enumerate(self.shards):
            final = f"model-{index + 1:05d}-of-{count:05d}.safetensors"
            (self.out_dir / self._temp_name(index)).replace(self.out_dir / final)
            weight_map.update(dict.fromkeys(names, final))
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return index
