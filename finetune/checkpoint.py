"""Resumable training checkpoints that are never left half-written.

A checkpoint holds only what training changes: the LoRA weights and their optimizer state (through
`torch.distributed.checkpoint`, so each process writes its own shard under FSDP and nothing gathers a 300B base),
the scheduler, the step and each process's RNG state. It is written to `step-N.partial` and renamed to `step-N`
only once every process has finished, so a crash or a full disk mid-write leaves the previous checkpoint as the
latest one.

Loading unpickles nothing that can name code: the RNG files and dcp's non-tensor values (the optimizer's learning
rate, betas, parameter names) are read with `torch.load(weights_only=True)`, and dcp's `.metadata` with an unpickler
that knows only dcp's own metadata classes. A checkpoint directory is data another process (or person) may have
written; what it holds must not run as the training job's user.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
import torch.distributed.checkpoint.metadata as dcp_metadata
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

_NAME = re.compile(r"^step-(\d{8})$")
STATE = "state.json"
TRAINABLE_ONLY = StateDictOptions(ignore_frozen_params=True)
# Loading puts back the trainable weights only; dcp.load has already failed on any of them the checkpoint lacks.
INTO_TRAINABLE = StateDictOptions(ignore_frozen_params=True, strict=False)


class CheckpointError(RuntimeError):
    pass


def estimated_bytes(trainable_params: int) -> int:
    """fp32 LoRA weights and AdamW's two fp32 moments, plus a little metadata."""
    return trainable_params * 12 + (1 << 20)


def check_disk(directory: Path, trainable_params: int, keep: int) -> None:
    """Refuse to start a run whose checkpoints cannot fit, rather than fail hours in."""
    directory.mkdir(parents=True, exist_ok=True)
    needed = estimated_bytes(trainable_params) * (keep + 1)  # kept ones plus the one being written
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise CheckpointError(
            f"{directory} has {free / 1e9:.2f} GB free but checkpoints need about {needed / 1e9:.2f} GB "
            f"({keep} kept + 1 being written): free space or set train.keep_checkpoints lower"
        )


class Checkpoints:
    def __init__(self, root: Path, keep: int, accelerator):
        self.root = root
        self.keep = keep
        self.accelerator = accelerator

    def complete(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if _NAME.match(p.name) and (p / STATE).is_file()]
        return sorted(found, key=lambda p: p.name)

    def latest(self) -> Path | None:
        found = self.complete()
        return found[-1] if found else None

    def save(self, step: int, model, optimizer, scheduler, meta: dict) -> Path:
        """Write checkpoint `step` (a collective: every process calls it)."""
        acc = self.accelerator
        final = self.root / f"step-{step:08d}"
        partial = final.with_name(final.name + ".partial")
        if acc.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
        acc.wait_for_everyone()
        cause = None
        try:
            model_state, optim_state = get_state_dict(model, optimizer, options=TRAINABLE_ONLY)
            dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=partial)
            torch.save(_rng_state(), partial / f"rng-{acc.process_index}.pt")
            if acc.is_main_process:
                state = {"step": step, "scheduler": scheduler.state_dict(), **meta}
                _write_durably(partial / STATE, json.dumps(state, indent=2))
        except OSError as error:
            cause = error
        # Every process must agree before the rename, or one rank's full disk would publish a torn checkpoint.
        failed = torch.tensor(int(cause is not None), device=acc.device)
        if int(acc.reduce(failed, reduction="sum")):
            if acc.is_main_process:
                shutil.rmtree(partial, ignore_errors=True)
            previous = self.latest()
            reason = _disk_reason(cause) if cause else "another process failed to write its part"
            raise CheckpointError(
                f"could not write the checkpoint at step {step} in {self.root}: {reason}. "
                f"The last good checkpoint is {previous.name if previous else 'none'}; free space and resume "
                "with --resume"
            )
        if acc.is_main_process:
            os.replace(partial, final)
            _fsync_dir(self.root)
            for old in self.complete()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    def load(self, path: Path, model, optimizer, scheduler) -> dict:
        """Restore a checkpoint into the prepared model, optimizer and scheduler; returns its state.json."""
        state = json.loads((path / STATE).read_text())
        model_state, optim_state = get_state_dict(model, optimizer, options=TRAINABLE_ONLY)
        loaded = {"model": model_state, "optim": optim_state}
        try:
            # Read alone first: inside dcp.load, a refused unpickling comes back as text in dcp's own exception.
            _MetadataOnlyReader(path).read_metadata()
            dcp.load(loaded, storage_reader=_MetadataOnlyReader(path), planner=_WeightsOnlyPlanner())
            rng = path / f"rng-{self.accelerator.process_index}.pt"
            rng_state = torch.load(rng, weights_only=True) if rng.is_file() else None
        except pickle.UnpicklingError as error:
            raise _not_loaded(path, error) from None
        except CheckpointException as error:  # a BaseException, wrapping what each rank raised
            refused = [failure for failure, _ in error.failures.values() if isinstance(failure, pickle.UnpicklingError)]
            if not refused:
                raise
            raise _not_loaded(path, refused[0]) from None
        set_state_dict(
            model,
            optimizer,
            model_state_dict=loaded["model"],
            optim_state_dict=loaded["optim"],
            options=INTO_TRAINABLE,
        )
        scheduler.load_state_dict(state["scheduler"])
        if rng_state is not None:
            _set_rng_state(rng_state)
        return state


def _not_loaded(path: Path, error: pickle.UnpicklingError) -> CheckpointError:
    return CheckpointError(
        f"{path} holds something other than tensors and plain values, so it was not written by finetune (or was "
        f"altered since) and is not loaded: {str(error).splitlines()[0]}. Delete it and resume from an earlier "
        "checkpoint, or start the run again without --resume"
    )


class _WeightsOnlyPlanner(DefaultLoadPlanner):
    """dcp's planner, but its non-tensor values load with weights_only=True (dcp's own uses weights_only=False)."""

    def load_bytes(self, read_item, value: io.BytesIO) -> None:
        loaded = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
        else:
            self.state_dict[read_item.dest_index.fqn] = loaded


class _MetadataOnlyReader(FileSystemReader):
    """dcp's reader, but `.metadata` is unpickled allowing only the classes dcp writes there (dcp uses pickle.load)."""

    def read_metadata(self, *args, **kwargs) -> dcp_metadata.Metadata:
        with self.fs.create_stream(self._get_metadata_path(kwargs.get("rank")), "rb") as stream:
            metadata = _MetadataUnpickler(stream).load()
        if not isinstance(metadata, dcp_metadata.Metadata):
            raise pickle.UnpicklingError(f"the checkpoint's metadata is a {type(metadata).__name__}, not dcp Metadata")
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = dcp_metadata.StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


# What torch 2.13's dcp.save pickles into .metadata besides its metadata classes and dtypes: the filesystem writer's
# _StorageInfo, tensor sizes and layouts, and the checkpoint's path.
_METADATA_GLOBALS = frozenset(
    {
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        ("torch.serialization", "_get_layout"),  # looks a layout up by name among torch's own
        ("torch", "Size"),
        ("pathlib", "PosixPath"),
        ("pathlib", "PurePosixPath"),
    }
)


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _METADATA_GLOBALS:
            return super().find_class(module, name)
        if module == dcp_metadata.__name__:
            found = getattr(dcp_metadata, name, None)
            if isinstance(found, type) and found.__module__ == module:
                return found
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a checkpoint's metadata")


def _rng_state() -> dict:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _disk_reason(error: OSError) -> str:
    if error.errno == errno.ENOSPC:
        return "the disk is full"
    return error.strerror or str(error)


def _write_durably(path: Path, text: str) -> None:
    with path.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
