"""The LoRA training recipe, top to bottom: check, load, adapt, order the data, train, checkpoint, evaluate, save.

One code path for one CPU process, one GPU, or `accelerate launch` / `torchrun` over many processes (DDP, FSDP):
the data order is a function of (config, seed, step) alone (finetune/schedule.py) and every process takes its share
of each global batch, so the run trains the same adapter whatever the process count, and a resumed run continues
exactly where it stopped.

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
from .config import MAIN, ConfigError, TrainConfig
from .dataset import DatasetError, load_split, manifest_sha256, read_manifest
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
from .schedule import (  # noqa: F401 (DataOrder: benchmarks/finetune.py takes it from here)
    SCORES_FILE,
    DataOrder,
    Schedule,
    base_scores,
    combine,
    datasets_scored,
    datasets_trained_on,
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


def check(config: TrainConfig) -> tuple[dict, dict[str, dict]]:
    """Everything that can be checked before a weight is loaded: (base config.json, the dataset manifests by name:
    `data` for the main dataset, then each one under `datasets`)."""
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
    manifests = {MAIN: manifest}
    trained_on = datasets_trained_on(config)
    for name, path in config.datasets.items():
        manifests[name] = _check_dataset(config, name, path, manifest, name in trained_on)
    return base_config, manifests


def _check_dataset(config: TrainConfig, name: str, path: Path, main: dict, trained_on: bool) -> dict:
    """An extra dataset's manifest, once it is known to hold token ids the main dataset's way."""
    redo = f"prepare it with `finetune prepare --model <the base> --seq-len {main['seq_len']} --out {path}`"
    if not path.is_dir():
        raise ConfigError(f"datasets.{name}: {path} does not exist: {redo}, or fix the path")
    try:
        manifest = read_manifest(path)
    except DatasetError as error:
        raise ConfigError(f"datasets.{name}: {error}") from error
    if manifest.get("seq_len") != main["seq_len"]:
        raise ConfigError(
            f"datasets.{name}: {path} is packed to {manifest.get('seq_len')} tokens a sequence but the main dataset "
            f"{config.data} to {main['seq_len']}: {redo}"
        )
    tokenizer, main_tokenizer = (_tokenizer_sha256(m) for m in (manifest, main))
    if tokenizer != main_tokenizer:
        # The same ids under another tokenizer are other text: training on them would teach noise.
        raise ConfigError(
            f"datasets.{name}: {path} was tokenised by another tokenizer (sha256 {tokenizer or 'not recorded'}) "
            f"than the main dataset {config.data} (sha256 {main_tokenizer or 'not recorded'}): {redo}, with the "
            "model the main dataset was prepared with"
        )
    if trained_on and manifest["splits"]["train"]["scored_tokens"] == 0:
        raise ConfigError(
            f"datasets.{name}: {path} has no training tokens, but a phase mixes it: prepare it from documents that "
            "have text, or take it out of the phases' mix"
        )
    return manifest


def _tokenizer_sha256(manifest: dict) -> str | None:
    tokenizer = manifest.get("tokenizer")
    return tokenizer.get("sha256") if isinstance(tokenizer, dict) else None


def train(config: TrainConfig, resume: bool = False, progress: bool = True, accelerator=None) -> TrainResult:
    """Train `config`'s adapter; `resume` continues from the last checkpoint in its output_dir."""
    recipe = LoraRecipe(config, accelerator)
    recipe.setup(resume)
    recipe.train(progress)
    return recipe.save()


class LoraRecipe:
    """One training run, its methods in the order they run: setup (checkpoints, data, model, optimiser and
    scheduler, data order, resume state), the loop (steps, logging, periodic evaluation, checkpoints), saving."""

    def __init__(self, config: TrainConfig, accelerator=None):
        from accelerate import Accelerator

        self.config = config
        self.base_config, self.manifests = check(config)
        # cpu=True on a machine without CUDA makes accelerate see a multi-process launch as gloo DDP, not as NO.
        self.acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
        _check_launch(self.acc)
        self.start = 0
        self.loss, self.eval_loss = float("nan"), None
        # Throughput counts training steps only: evaluations and checkpoints are timed out of it.
        self.train_seconds, self.tokens_seen = 0.0, 0

    # --- setup ---------------------------------------------------------------------------------------------------

    def setup(self, resume: bool) -> None:
        latest = self._find_checkpoint(resume)
        self._load_data()
        self._load_model()
        self._setup_optimizer()
        self._setup_schedule()  # before the checkpoint is loaded: the scores are the base model's
        if latest is not None:
            self.start = self.checkpoints.load(latest, self.model, self.optimizer, self.scheduler)["step"]
            log.info("resumed from %s at step %d", latest, self.start)
        self.logger = _RunLog(self.config.output_dir, self.acc.is_main_process, truncate_after=self.start)
        if self.acc.is_main_process:
            (self.config.output_dir / CONFIG_FILE).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")

    def _find_checkpoint(self, resume: bool) -> Path | None:
        config = self.config
        self.checkpoints = Checkpoints(config.output_dir / "checkpoints", config.train.keep_checkpoints, self.acc)
        latest = self.checkpoints.latest() if resume else None
        if resume and latest is None:
            log.warning("--resume: no checkpoint in %s yet, starting from step 0", self.checkpoints.root)
        if not resume and self.checkpoints.latest() is not None:
            raise ConfigError(
                f"{config.output_dir} already holds checkpoints of a run: pass --resume to continue it, or choose "
                "another output_dir"
            )
        if latest is not None:
            _check_same_run(config, self.manifests, latest)
        return latest

    def _load_data(self) -> None:
        config = self.config
        paths = {MAIN: config.data, **config.datasets}
        self.train_splits = {name: load_split(paths[name], "train") for name in datasets_trained_on(config)}
        self.train_data = combine(self.train_splits)
        self.eval_data = load_split(config.data, "eval")
        # The other datasets' held-out losses show what training does to them (a replay set: forgetting).
        extra_eval = {name: load_split(path, "eval") for name, path in config.datasets.items()}
        self.extra_eval = {name: split for name, split in extra_eval.items() if scored(split.labels)}

    def _load_model(self) -> None:
        config, acc = self.config, self.acc
        torch.manual_seed(config.train.seed)  # LoRA's A matrices are drawn from this
        model, _ = load_base(
            config.model, for_training=True, gradient_checkpointing=config.train.gradient_checkpointing
        )
        self.model, targets = attach_lora(model, config.lora, self.base_config)
        trainable = trainable_parameters(self.model)
        if acc.is_main_process:
            log.info(
                "LoRA r=%d on %s%s: %d trainable parameters",
                config.lora.rank,
                ", ".join(targets.modules),
                (" + experts " + ", ".join(targets.expert_parameters)) if targets.expert_parameters else "",
                trainable,
            )
            check_disk(config.output_dir, trainable, config.train.keep_checkpoints)

    def _setup_optimizer(self) -> None:
        from transformers import get_scheduler

        config = self.config
        optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=config.optim.lr,
            betas=config.optim.betas,
            weight_decay=config.optim.weight_decay,
        )
        self.scheduler = get_scheduler(
            config.optim.schedule,
            optimizer,
            num_warmup_steps=config.optim.warmup_steps,
            num_training_steps=config.train.max_steps,
        )
        self.model, self.optimizer = self.acc.prepare(self.model, optimizer)

    def _setup_schedule(self) -> None:
        config = self.config
        scores = None
        to_score = datasets_scored(config)
        if to_score:
            # Which base the scores are of: the same weights in another dtype score (slightly) differently.
            base = json.dumps(
                {"model": config.model.model_dump(mode="json"), "fingerprint": base_fingerprint(self.base_config)},
                sort_keys=True,
            )
            scores = base_scores(
                self.model,
                self.acc,
                {name: self.train_splits[name] for name in to_score},
                {name: manifest_sha256(self.manifests[name]) for name in to_score},
                base,
                config.train.micro_batch,
                config.output_dir / SCORES_FILE,
            )
        global_batch = config.train.micro_batch * config.train.grad_accum * self.acc.num_processes
        sizes = {name: len(split) for name, split in self.train_splits.items()}
        self.schedule = Schedule.from_config(config, sizes, global_batch, scores)

    # --- the loop ------------------------------------------------------------------------------------------------

    def train(self, progress: bool) -> None:
        config = self.config
        bar = tqdm(
            total=config.train.max_steps,
            initial=self.start,
            disable=not (progress and self.acc.is_main_process),
            unit="step",
            dynamic_ncols=True,
        )
        for step in range(self.start, config.train.max_steps):
            record = self._train_step(step)
            done = record["step"]
            if config.train.eval_every and done % config.train.eval_every == 0 and done < config.train.max_steps:
                record.update(self._evaluate(final=False))
            self.logger.write(record)
            bar.set_postfix(loss=f"{self.loss:.4f}", tok_s=f"{record['tokens_per_s'] or 0:.0f}")
            bar.update(1)
            if done % config.train.checkpoint_every == 0 or done == config.train.max_steps:
                self.checkpoints.save(done, self.model, self.optimizer, self.scheduler, self._checkpoint_meta())
        bar.close()

    def _train_step(self, step: int) -> dict:
        started = time.perf_counter()
        global_ids = self.schedule.batch(step)
        loss_sum, global_tokens, grad_norm = _step(self.model, self.train_data, global_ids, self.config, self.acc)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

        self.loss = float(self.acc.reduce(loss_sum, reduction="sum")) / max(global_tokens, 1)
        self.tokens_seen += int(global_ids.numel() * self.train_data.input_ids.shape[1])
        self.train_seconds += time.perf_counter() - started
        return {
            "step": step + 1,
            "phase": self.schedule.phase(step).name,
            "loss": self.loss,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens": self.tokens_seen,
            "tokens_per_s": self.tokens_seen / self.train_seconds if self.train_seconds else None,
        }

    def _evaluate(self, final: bool) -> dict:
        """The main data's held-out loss, and each other dataset's under eval_losses."""
        batch, record = self.config.train.micro_batch, {}
        # A periodic evaluation needs the main held-out split (evaluate_loss says so); the last one does without.
        if not final or len(self.eval_data):
            record["eval_loss"] = self.eval_loss = evaluate_loss(self.model, self.eval_data, batch, self.acc)
            if final:
                record["eval_perplexity"] = math.exp(self.eval_loss)
        if self.extra_eval:
            record["eval_losses"] = {
                name: evaluate_loss(self.model, split, batch, self.acc) for name, split in self.extra_eval.items()
            }
        return record

    def _checkpoint_meta(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "dataset_sha256": manifest_sha256(self.manifests[MAIN]),
            "datasets_sha256": {name: manifest_sha256(self.manifests[name]) for name in self.config.datasets},
        }

    # --- saving --------------------------------------------------------------------------------------------------

    def save(self) -> TrainResult:
        config = self.config
        final = self._evaluate(final=True)
        if final:
            self.logger.write({"step": config.train.max_steps, **final})
        adapter_dir = save_adapter(self.model, self.acc, config, self.base_config, self.manifests, self.eval_loss)
        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else _peak_rss()
        self.logger.close()
        return TrainResult(
            adapter_dir,
            config.train.max_steps,
            self.loss,
            self.eval_loss,
            self.tokens_seen / max(self.train_seconds, 1e-9),
            peak,
            self.acc.unwrap_model(self.model),
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


def save_adapter(
    model, acc, config: TrainConfig, base_config: dict, manifests: dict[str, dict], eval_loss: float | None
) -> Path:
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
            write_training_info(partial, _training_info(config, base_config, manifests, eval_loss))
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


def _training_info(config: TrainConfig, base_config: dict, manifests: dict[str, dict], eval_loss: float | None) -> dict:
    """What ties an adapter to its base and data (training.json)."""
    return {
        "base_model": str(config.model.path),
        "base_fingerprint": base_fingerprint(base_config),
        "dataset": str(config.data),
        "dataset_sha256": manifest_sha256(manifests[MAIN]),
        "datasets": {
            name: {"path": str(path), "sha256": manifest_sha256(manifests[name])}
            for name, path in config.datasets.items()
        },
        SERVES: _audience(manifests, datasets_trained_on(config)),
        "steps": config.train.max_steps,
        "eval_loss": eval_loss,
        "config": config.to_dict(),
    }


def _audience(manifests: dict[str, dict], trained_on: list[str]):
    """Who may be answered with this adapter: the groups that may read all it learned, so those that every dataset
    it trained on serves (the main one counted always). A dataset prepared before prepare recorded them has none,
    and the assistant then lets administrators only use the adapter."""
    audiences = [manifests[name].get(SERVES) for name in dict.fromkeys([MAIN, *trained_on])]
    if len(audiences) == 1:
        return audiences[0]
    if not all(isinstance(audience, list) for audience in audiences):
        return None
    shared = [group for group in audiences[0] if all(group in other for other in audiences[1:])]
    if not shared:
        log.warning("no group may read every dataset this run trains on: its adapter will serve administrators only")
    return shared


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


def _check_same_run(config: TrainConfig, manifests: dict[str, dict], checkpoint: Path) -> None:
    """A resumed run must be the run that wrote the checkpoint, on the same data; only its length may grow."""
    state = json.loads((checkpoint / "state.json").read_text())
    if state.get("dataset_sha256") != manifest_sha256(manifests[MAIN]):
        raise ConfigError(
            f"--resume: the dataset in {config.data} changed since {checkpoint} was written (prepared again?), so "
            "the run cannot continue with the same data order: start a new output_dir"
        )
    # A dataset added to or dropped from `datasets` shows as a changed config below.
    for name, saved in state.get("datasets_sha256", {}).items():
        if name in config.datasets and saved != manifest_sha256(manifests[name]):
            raise ConfigError(
                f"--resume: the dataset {name} in {config.datasets[name]} changed since {checkpoint} was written "
                "(prepared again?), so the run cannot continue with the same data: start a new output_dir"
            )
    saved = _flatten(state["config"])
    current = _flatten(config.to_dict())
    changed = sorted(key for key in saved.keys() | current.keys() if saved.get(key) != current.get(key))
    changed = [key for key in changed if key != "train.max_steps"]
    if config.phases and saved.get("train.max_steps") != config.train.max_steps:
        log.warning(
            "--resume: train.max_steps changed from %s to %d, so the phases' steps are divided anew: %s",
            saved.get("train.max_steps"),
            config.train.max_steps,
            ", ".join(f"{phase.name} {steps}" for phase, steps in config.phase_steps()),
        )
    if changed:
        raise ConfigError(
            f"--resume: the config differs from the one that wrote {checkpoint} ({', '.join(changed)}): resume with "
            "the same config (only train.max_steps may change), or start a new output_dir"
        )


def _flatten(data: dict, prefix: str = "", separator: str = ".") -> dict:
    flat = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}{separator}", separator))
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
            for key, value in _flatten(record, separator="/").items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
