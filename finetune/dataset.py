"""The prepared dataset on disk: packed token sequences, split by document, with a manifest.

A dataset directory holds `train.safetensors` and `eval.safetensors` (each `input_ids` and `labels`, int32
[sequences, seq_len]; a label of -100 is not scored: prompt tokens of instruction data and the padding at the end)
and `manifest.json` (sequence length, tokenizer, counts, sources and the sha256 of each split file). Training reads
only what the manifest vouches for, so a half-written or edited directory is an error, not silent garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

IGNORE = -100  # the label cross-entropy skips
FORMAT_VERSION = 1
SPLITS = ("train", "eval")
MANIFEST = "manifest.json"


class DatasetError(ValueError):
    pass


@dataclass
class Packed:
    """Sequences of one split: `input_ids` and `labels`, both int64 [sequences, seq_len]."""

    input_ids: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def scored_tokens(self) -> int:
        return int((self.labels != IGNORE).sum())


def pack(examples: Iterable[tuple[list[int], list[int]]], seq_len: int, pad_id: int) -> Packed:
    """Concatenate (token ids, labels) examples and cut the stream into rows of `seq_len`.

    Examples are packed back to back (each should end with the end-of-sequence token) so no compute is spent on
    padding; only the last row is padded, with unscored labels.
    """
    if seq_len < 2:
        raise DatasetError(f"sequence length must be at least 2, got {seq_len}")
    ids: list[int] = []
    labels: list[int] = []
    for example_ids, example_labels in examples:
        if len(example_ids) != len(example_labels):
            raise DatasetError("an example has a different number of labels than tokens")
        ids += example_ids
        labels += example_labels
    if not ids:
        return Packed(torch.zeros((0, seq_len), dtype=torch.long), torch.zeros((0, seq_len), dtype=torch.long))
    padding = -len(ids) % seq_len
    ids += [pad_id] * padding
    labels += [IGNORE] * padding
    return Packed(torch.tensor(ids).view(-1, seq_len), torch.tensor(labels).view(-1, seq_len))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_dataset(out_dir: str | Path, splits: dict[str, Packed], manifest: dict) -> dict:
    """Write both splits and the manifest (last, so a directory with a manifest is complete); returns the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT_VERSION, **manifest, "splits": {}}
    for name in SPLITS:
        packed = splits[name]
        path = out_dir / f"{name}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file({"input_ids": packed.input_ids.to(torch.int32), "labels": packed.labels.to(torch.int32)}, tmp)
        os.replace(tmp, path)
        manifest["splits"][name] = {
            "sequences": len(packed),
            "scored_tokens": packed.scored_tokens,
            "sha256": sha256_file(path),
        }
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out_dir / MANIFEST)
    return manifest


def manifest_sha256(manifest: dict) -> str:
    """The identity of a dataset's contents (its manifest holds each split's sha256): a run, its checkpoints and its
    adapter record it, so a resume or a reuse can tell the same data from other data."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def read_manifest(data_dir: str | Path) -> dict:
    data_dir = Path(data_dir)
    path = data_dir / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{data_dir} has no {MANIFEST}: build the dataset with `finetune prepare --out {data_dir}`")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as error:
        raise DatasetError(f"{path} is not valid JSON ({error}); re-run `finetune prepare`") from error
    if manifest.get("format") != FORMAT_VERSION:
        raise DatasetError(f"{path} has dataset format {manifest.get('format')!r}, this version reads {FORMAT_VERSION}")
    return manifest


def load_split(data_dir: str | Path, name: str, verify: bool = True) -> Packed:
    """One split, checked against the manifest's hash; an empty training split is an error."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    path = data_dir / f"{name}.safetensors"
    if not path.is_file():
        raise DatasetError(f"{path} is missing: re-run `finetune prepare`")
    if verify and sha256_file(path) != manifest["splits"][name]["sha256"]:
        raise DatasetError(f"{path} does not match its manifest (changed or partly written): re-run `finetune prepare`")
    tensors = load_file(path)
    packed = Packed(tensors["input_ids"].long(), tensors["labels"].long())
    if name == "train" and packed.scored_tokens == 0:
        raise DatasetError(f"the training split in {data_dir} has no tokens to learn from: add documents and prepare")
    return packed
