"""The LoRA training recipe, top to bottom: check, load, adapt, train, checkpoint, evaluate, save.

One code path for one CPU process, one GPU, or `accelerate launch` / `torchrun` over many processes (DDP, FSDP):
the data order is a function of (seed, step) alone and every process takes its share of each global batch, so the
run trains the same adapter whatever the process count, and a resumed run continues exactly where it stopped.

The loss of a step is the mean over every scored token of the whole global batch: each process divides its summed
token loss by the global count (known in advance from the labels) and multiplies by the process count, which the
gradient averaging of DDP/FSDP divides away again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from model.run_layout import ADAPTER_DIR, CONFIG_FILE, LOG_FILE, SERVES

from .checkpoint import CheckpointError, Checkpoints, check_disk
from .config import ConfigError, TrainConfig
from .dataset import load_split, read_manifest
from .evaluate import evaluate_loss, scored, token_loss_sum
from .lora_model import (
    attach_lora,
    base_fingerprint,
    load_base,
    max_positions,
    read_base_config,
    trainable_parameters,
    write_training_info,
)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    adapter_dir: Path
    steps: int
    final_loss: float
    eval_loss: float | None
    tokens_per_second: float
    peak_memory_bytes: int  # GPU memory allocated at peak, or the process's peak RSS on CPU
    model: object = None  # the trained PEFT model, for a caller in the same process (tests, benchmarks)


class DataOrder:
    """Which sequences each global batch holds: epoch e is a permutation drawn from (seed, e); batches run on
    across epoch boundaries, so step s always gets the same sequences."""

    def __init__(self, size: int, global_batch: int, seed: int):
        self.size, self.global_batch, self.seed = size, global_batch, seed
        self._epochs: dict[int, torch.Tensor] = {}

    def _epoch(self, epoch: int) -> torch.Tensor:
        if epoch not in self._epochs:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._epochs = {epoch: torch.randperm(self.size, generator=generator)}
        return self._epochs[epoch]

    def batch(self, step: int) -> torch.Tensor:
        positions = range(step * self.global_batch, (step + 1) * self.global_batch)
        return torch.stack([self._epoch(p // self.size)[p % self.size] for p in positions])


def check(config: TrainConfig) -> tuple[dict, dict]:
    """Everything that can be checked before a weight is loaded: (base config.json, dataset manifest)."""
    base_config = read_base_config(config.model.path)
    manifest = read_manifest(config.data)
    seq_len = manifest["seq_len"]
    if config.train.seq_len is not None and config.train.seq_len != seq_len:
        raise ConfigError(
            f"train.seq_len={config.train.seq_len} but the dataset in {config.data} is packed to {seq_len}: "
            f"re-run `finetune prepare --seq-len {config.train.seq_len}` or drop train.seq_len"
        )
    limit = max_positions(base_config)
    if limit is not None and seq_len > limit:
        raise ConfigError(
            f"the dataset's sequence length {seq_len} is over the model's limit of {limit} positions: "
            f"re-run `finetune prepare --seq-len {limit}` (or less)"
        )
    if manifest["splits"]["train"]["scored_tokens"] == 0:
        raise ConfigError(f"the dataset in {config.data} is empty: prepare it from documents that have text")
    return base_config, manifest


def train(config: TrainConfig, resume: bool = False, progress: bool = True, accelerator=None) -> TrainResult:
    from accelerate import Accelerator
    from transformers import get_scheduler

    base_config, manifest = check(config)
    # cpu=True on a machine without CUDA makes accelerate see a multi-process launch as gloo DDP, not as NO.
    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    _check_launch(acc)
    checkpoints = Checkpoints(config.output_dir / "checkpoints", config.train.keep_checkpoints, acc)
    latest = checkpoints.latest() if resume else None
    if resume and latest is None:
        log.warning("--resume: no checkpoint in %s yet, starting from step 0", checkpoints.root)
    if not resume and checkpoints.latest() is not None:
        raise ConfigError(
            f"{config.output_dir} already holds checkpoints of a run: pass --resume to continue it, or choose "
            "another output_dir"
        )
    if latest is not None:
        _check_same_run(config, manifest, latest)

    train_data = load_split(config.data, "train")
    eval_data = load_split(config.data, "eval")
    torch.manual_seed(config.train.seed)  # LoRA's A matrices are drawn from this

    model, _ = load_base(config.model, for_training=True, gradient_checkpointing=config.train.gradient_checkpointing)
    model, targets = attach_lora(model, config.lora, base_config)
    trainable = trainable_parameters(model)
    if acc.is_main_process:
        log.info(
            "LoRA r=%d on %s%s: %d trainable parameters",
            config.lora.rank,
            ", ".join(targets.modules),
            (" + experts " + ", ".join(targets.expert_parameters)) if targets.expert_parameters else "",
            trainable,
        )
        check_disk(config.output_dir, trainable, config.train.keep_checkpoints)

    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.optim.lr,
        betas=config.optim.betas,
        weight_decay=config.optim.weight_decay,
    )
    scheduler = get_scheduler(
        config.optim.schedule,
        optimizer,
        num_warmup_steps=config.optim.warmup_steps,
        num_training_steps=config.train.max_steps,
    )
    model, optimizer = acc.prepare(model, optimizer)

    start = 0
    if latest is not None:
        state = checkpoints.load(latest, model, optimizer, scheduler)
        start = state["step"]
        log.info("resumed from %s at step %d", latest, start)
    logger = _RunLog(config.output_dir, acc.is_main_process, truncate_after=start)
    if acc.is_main_process:
        (config.output_dir / CONFIG_FILE).write_text(json.dumps(config.to_dict(), indent=2) + "\n")

    per_process = config.train.micro_batch * config.train.grad_accum
    order = DataOrder(len(train_data), per_process * acc.num_processes, config.train.seed)
    bar = tqdm(
        total=config.train.max_steps,
        initial=start,
        disable=not (progress and acc.is_main_process),
        unit="step",
        dynamic_ncols=True,
    )
    # Throughput counts training steps only: evaluations and checkpoints are timed out of it.
    train_seconds, tokens_seen, loss_value, eval_loss = 0.0, 0, float("nan"), None
    for step in range(start, config.train.max_steps):
        step_started = time.perf_counter()
        global_ids = order.batch(step)
        loss_sum, global_tokens, grad_norm = _step(model, train_data, global_ids, config, acc)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        loss_value = float(acc.reduce(loss_sum, reduction="sum")) / max(global_tokens, 1)
        tokens_seen += int(global_ids.numel() * train_data.input_ids.shape[1])
        train_seconds += time.perf_counter() - step_started
        done = step + 1
        record = {"step": done, "loss": loss_value, "lr": lr, "grad_norm": grad_norm, "tokens": tokens_seen}
        record["tokens_per_s"] = tokens_seen / train_seconds if train_seconds else None
        if config.train.eval_every and done % config.train.eval_every == 0 and done < config.train.max_steps:
            record["eval_loss"] = eval_loss = evaluate_loss(model, eval_data, config.train.micro_batch, acc)
        logger.write(record)
        bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{record['tokens_per_s'] or 0:.0f}")
        bar.update(1)
        if done % config.train.checkpoint_every == 0 or done == config.train.max_steps:
            meta = {"config": config.to_dict(), "dataset_sha256": _manifest_hash(manifest)}
            checkpoints.save(done, model, optimizer, scheduler, meta)
    bar.close()

    if len(eval_data):
        eval_loss = evaluate_loss(model, eval_data, config.train.micro_batch, acc)
        logger.write({"step": config.train.max_steps, "eval_loss": eval_loss, "eval_perplexity": math.exp(eval_loss)})
    adapter_dir = save_adapter(model, acc, config, base_config, manifest, eval_loss)
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else _peak_rss()
    logger.close()
    return TrainResult(
        adapter_dir,
        config.train.max_steps,
        loss_value,
        eval_loss,
        tokens_seen / max(train_seconds, 1e-9),
        peak,
        acc.unwrap_model(model),
    )


def _step(model, data, global_ids: torch.Tensor, config: TrainConfig, acc) -> tuple[torch.Tensor, int, float | None]:
    """Forward and backward over this process's share of one global batch, in micro-batches; gradients are
    all-reduced once, on the last. Returns (this process's summed token loss, the global batch's scored tokens,
    the gradient norm before clipping)."""
    world = acc.num_processes
    global_tokens = scored(data.labels[global_ids])
    micro_batches = global_ids[acc.process_index :: world].split(config.train.micro_batch)
    loss_sum = torch.zeros((), device=acc.device)
    for index, ids in enumerate(micro_batches):
        input_ids, labels = data.input_ids[ids].to(acc.device), data.labels[ids].to(acc.device)
        last = index == len(micro_batches) - 1
        with contextlib.nullcontext() if last else acc.no_sync(model):
            loss = token_loss_sum(model, input_ids, labels)
            acc.backward(loss * world / max(global_tokens, 1))
        loss_sum += loss.detach()
    grad_norm = None
    if config.optim.max_grad_norm is not None:
        grad_norm = float(acc.clip_grad_norm_(model.parameters(), config.optim.max_grad_norm))
    return loss_sum, global_tokens, grad_norm


def save_adapter(model, acc, config: TrainConfig, base_config: dict, manifest: dict, eval_loss: float | None) -> Path:
    """The final adapter in PEFT's layout, plus training.json tying it to its base and data."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    adapter_dir = config.output_dir / ADAPTER_DIR
    # Gathers only the trainable (LoRA) weights to the main process, even when FSDP shards them.
    state = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    )
    if acc.is_main_process:
        # Written beside and renamed into place: a full disk never leaves a directory that looks like an adapter.
        partial = adapter_dir.with_name(adapter_dir.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            acc.unwrap_model(model).save_pretrained(partial, state_dict=state)
            write_training_info(partial, _training_info(config, base_config, manifest, eval_loss))
        except OSError as error:
            shutil.rmtree(partial, ignore_errors=True)
            raise CheckpointError(
                f"could not write the adapter to {adapter_dir}: {error.strerror or error}. The last checkpoint is "
                "complete: free space and run again with --resume to write it"
            ) from error
        shutil.rmtree(adapter_dir, ignore_errors=True)
        os.replace(partial, adapter_dir)
    acc.wait_for_everyone()
    return adapter_dir


def _training_info(config: TrainConfig, base_config: dict, manifest: dict, eval_loss: float | None) -> dict:
    """What ties an adapter to its base and data (training.json)."""
    return {
        "base_model": str(config.model.path),
        "base_fingerprint": base_fingerprint(base_config),
        "dataset": str(config.data),
        "dataset_sha256": _manifest_hash(manifest),
        # Who may be answered with this adapter: the groups that may read all it learned. A dataset prepared before
        # prepare recorded it has none, and the assistant then lets administrators only use the adapter.
        SERVES: manifest.get(SERVES),
        "steps": config.train.max_steps,
        "eval_loss": eval_loss,
        "config": config.to_dict(),
    }


def _check_launch(acc) -> None:
    from accelerate import DistributedType

    if acc.distributed_type == DistributedType.DEEPSPEED:
        # ZeRO-3 shards like FSDP's full shard, but its checkpoints hold every rank's slice of the whole model,
        # frozen base included (630 GB per checkpoint for Grok-1 in bf16), where FSDP's sharded state dict holds
        # only the LoRA weights and their optimizer state.
        raise ConfigError(
            "DeepSpeed launches are not supported: use FSDP (finetune/configs/accelerate/fsdp-8gpu.yaml), which "
            "shards the same way and checkpoints only the LoRA state"
        )


def _peak_rss() -> int:
    """This process's own peak resident memory in bytes.

    /proc's VmHWM rather than getrusage: ru_maxrss survives execve, so a worker started by a heavier parent
    (accelerate launch, a test runner) would report the parent's peak.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _manifest_hash(manifest: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def _check_same_run(config: TrainConfig, manifest: dict, checkpoint: Path) -> None:
    """A resumed run must be the run that wrote the checkpoint, on the same data; only its length may grow."""
    state = json.loads((checkpoint / "state.json").read_text())
    if state.get("dataset_sha256") != _manifest_hash(manifest):
        raise ConfigError(
            f"--resume: the dataset in {config.data} changed since {checkpoint} was written (prepared again?), so "
            "the run cannot continue with the same data order: start a new output_dir"
        )
    saved = _flatten(state["config"])
    current = _flatten(config.to_dict())
    changed = sorted(key for key in saved.keys() | current.keys() if saved.get(key) != current.get(key))
    changed = [key for key in changed if key != "train.max_steps"]
    if changed:
        raise ConfigError(
            f"--resume: the config differs from the one that wrote {checkpoint} ({', '.join(changed)}): resume with "
            "the same config (only train.max_steps may change), or start a new output_dir"
        )


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class _RunLog:
    """log.jsonl (one line per step, loss and learning rate) and, when installed, TensorBoard."""

    def __init__(self, output_dir: Path, enabled: bool, truncate_after: int):
        self.enabled = enabled
        self.file = None
        self.tensorboard = None
        if not enabled:
            return
        output_dir.mkdir(parents=True, exist_ok=True)
        path = output_dir / LOG_FILE
        # A resumed run rewrites the steps after its checkpoint, so the log never holds a step twice.
        kept = []
        if truncate_after and path.is_file():
            kept = [line for line in path.read_text().splitlines() if json.loads(line).get("step", 0) <= truncate_after]
        path.write_text("".join(line + "\n" for line in kept))
        self.file = path.open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(output_dir / "tensorboard"))
        except ImportError:  # TensorBoard is optional
            self.tensorboard = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
