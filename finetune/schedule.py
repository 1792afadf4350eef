"""Which sequences each step trains on: the phases of a run, the mix of datasets in each, the order within a dataset.

Every batch is a pure function of (the config's phases and datasets, the seed, the step), worked out afresh by each
process: a resumed run continues inside the right phase at the right place, and any number of processes take their
shares of the same global batches. The datasets a run trains on are concatenated into one `Packed` (see `combine`)
and batches are indices into it, so the training step never needs to know which dataset a sequence came from.

Ordered phases sort sequences by the base model's own mean token loss (`sequence_losses`), computed once per run
and kept in its output directory (`base_scores`), so a resumed run orders by exactly the numbers the first one did.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import MAIN, TrainConfig
from .dataset import IGNORE, Packed

log = logging.getLogger(__name__)

SCORES_FILE = "scores.safetensors"


class DataOrder:
    """Which sequences each global batch holds: epoch e is a permutation drawn from (seed, e); batches run on
    across epoch boundaries, so step s always gets the same sequences. A run without phases trains in this order
    (`Schedule` reproduces it), and benchmarks/finetune.py feeds it to transformers' Trainer."""

    def __init__(self, size: int, global_batch: int, seed: int):
        self.size, self.global_batch, self.seed = size, global_batch, seed
        self._epochs: dict[int, torch.Tensor] = {}

    def _epoch(self, epoch: int) -> torch.Tensor:
        if epoch not in self._epochs:
            self._epochs = {epoch: _permutation(self.size, _legacy_seed(self.seed, epoch))}
        return self._epochs[epoch]

    def batch(self, step: int) -> torch.Tensor:
        positions = range(step * self.global_batch, (step + 1) * self.global_batch)
        return torch.stack([self._epoch(p // self.size)[p % self.size] for p in positions])


def _permutation(size: int, seed: int) -> torch.Tensor:
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))


def _legacy_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def _stream_seed(seed: int, phase: str, dataset: str, epoch: int) -> int:
    digest = hashlib.sha256(json.dumps([seed, phase, dataset, epoch]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass(frozen=True)
class Phase:
    name: str
    start: int  # its first step
    steps: int
    mix: dict[str, float]  # dataset name -> weight, in the config's order
    order: str  # random | loss_ascending | loss_descending


def phases_of(config: TrainConfig) -> list[Phase]:
    phases, start = [], 0
    for section, steps in config.phase_steps():
        phases.append(Phase(section.name, start, steps, dict(section.mix), section.order))
        start += steps
    return phases


def datasets_trained_on(config: TrainConfig) -> list[str]:
    """The datasets some phase mixes, `data` first and then in the order `datasets` lists them: the order in which
    they are concatenated."""
    mixed = {name for phase in phases_of(config) for name in phase.mix}
    return [name for name in (MAIN, *config.datasets) if name in mixed]


def datasets_scored(config: TrainConfig) -> list[str]:
    """The datasets an ordered phase mixes: those whose sequences need the base model's losses."""
    scored = {name for phase in phases_of(config) if phase.order != "random" for name in phase.mix}
    return [name for name in datasets_trained_on(config) if name in scored]


def combine(splits: dict[str, Packed]) -> Packed:
    """The splits end to end, in the given order (one split is returned as it is, not copied)."""
    if len(splits) == 1:
        return next(iter(splits.values()))
    return Packed(
        torch.cat([split.input_ids for split in splits.values()]),
        torch.cat([split.labels for split in splits.values()]),
    )


class Schedule:
    """The global batch of each step, as indices into `combine` of the datasets in `sizes` (same order).

    Within a phase the global batch slots, taken in order over the whole phase, go to the mixed datasets by
    Webster's apportionment (`_mix_slots`): after any number of slots each dataset has had its weight's share of
    them, to within a slot or so. A dataset's n-th slot in the phase takes its n-th sequence in the phase's order
    for it: a permutation per epoch drawn from (seed, phase, dataset, epoch) for a random phase, the sequences by
    base loss (the same order every epoch) for an ordered one.

    The main data in the first phase keeps the permutations `DataOrder` draws, so a run without phases (one phase,
    the main data, random) trains exactly as runs did before phases existed, and their checkpoints resume the same.
    """

    def __init__(
        self,
        phases: list[Phase],
        sizes: dict[str, int],
        global_batch: int,
        seed: int,
        scores: dict[str, torch.Tensor] | None = None,
    ):
        self.phases, self.sizes, self.global_batch, self.seed = phases, dict(sizes), global_batch, seed
        self.offsets, offset = {}, 0
        for name, size in self.sizes.items():
            self.offsets[name] = offset
            offset += size
        scores = scores or {}
        self._ranked: dict[tuple[str, str], torch.Tensor] = {}
        for phase in phases:
            for name in phase.mix:
                if not self.sizes.get(name):
                    raise ValueError(f"phase {phase.name!r} mixes {name!r}, which has no sequences here")
                if phase.order != "random":
                    if name not in scores or len(scores[name]) != self.sizes[name]:
                        raise ValueError(f"phase {phase.name!r} orders {name!r} by loss, but it has no scores")
                    self._ranked[name, phase.order] = _ranked(scores[name], phase.order == "loss_descending")
        self._slots: tuple[int, np.ndarray, np.ndarray] | None = None  # the current phase's (index, owners, numbers)
        self._epochs: dict[tuple[int, str], tuple[int, torch.Tensor]] = {}  # one epoch kept per stream

    @classmethod
    def from_config(
        cls, config: TrainConfig, sizes: dict[str, int], global_batch: int, scores: dict[str, torch.Tensor] | None
    ) -> Schedule:
        return cls(phases_of(config), sizes, global_batch, config.train.seed, scores)

    def phase(self, step: int) -> Phase:
        return self.phases[self._phase_index(step)]

    def _phase_index(self, step: int) -> int:
        for index, phase in enumerate(self.phases):
            if step < phase.start + phase.steps:
                return index
        raise IndexError(
            f"step {step} is past the last phase (the run has {self.phases[-1].start + self.phases[-1].steps})"
        )

    def batch(self, step: int) -> torch.Tensor:
        index = self._phase_index(step)
        phase = self.phases[index]
        first = (step - phase.start) * self.global_batch
        owners, numbers = self._phase_slots(index)
        names = list(phase.mix)
        ids = [
            self.offsets[names[owner]] + self._sequence(index, names[owner], int(number))
            for owner, number in zip(
                owners[first : first + self.global_batch], numbers[first : first + self.global_batch]
            )
        ]
        return torch.tensor(ids, dtype=torch.long)

    def _phase_slots(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if self._slots is None or self._slots[0] != index:
            phase = self.phases[index]
            self._slots = (index, *_mix_slots(list(phase.mix.values()), phase.steps * self.global_batch))
        return self._slots[1], self._slots[2]

    def _sequence(self, index: int, name: str, number: int) -> int:
        """The dataset-local index of `name`'s `number`-th sequence in phase `index`."""
        phase, size = self.phases[index], self.sizes[name]
        epoch, within = divmod(number, size)
        if phase.order != "random":
            return int(self._ranked[name, phase.order][within])
        kept = self._epochs.get((index, name))
        if kept is None or kept[0] != epoch:
            seed = (
                _legacy_seed(self.seed, epoch)
                if (index, name) == (0, MAIN)
                else _stream_seed(self.seed, phase.name, name, epoch)
            )
            kept = self._epochs[index, name] = (epoch, _permutation(size, seed))
        return int(kept[1][within])


def _mix_slots(weights: list[float], slots: int) -> tuple[np.ndarray, np.ndarray]:
    """(which dataset, its how-manieth use) for each of `slots` slots in order.

    Dataset d's k-th use falls due at (k + 1/2) / w_d (w normalised to sum 1) and the slots take the due times in
    order, ties to the dataset listed first: Webster's apportionment, house-monotone, so every prefix of the slots
    is apportioned as closely as the whole and a phase's slots never depend on how long it is.
    """
    if len(weights) == 1:
        return np.zeros(slots, dtype=np.int64), np.arange(slots, dtype=np.int64)
    shares = np.asarray(weights, dtype=np.float64) / math.fsum(weights)
    times, owners, numbers = [], [], []
    for owner, share in enumerate(shares):
        # No dataset gets more than slots * share + (datasets + 1) / 2 of the first `slots` slots.
        count = math.ceil(slots * share + len(shares) / 2 + 1)
        number = np.arange(count, dtype=np.int64)
        times.append((number + 0.5) / share)
        owners.append(np.full(count, owner, dtype=np.int64))
        numbers.append(number)
    owners_all, numbers_all = np.concatenate(owners), np.concatenate(numbers)
    taken = np.lexsort((owners_all, np.concatenate(times)))[:slots]
    return owners_all[taken], numbers_all[taken]


def _ranked(scores: torch.Tensor, descending: bool) -> torch.Tensor:
    """Dataset-local indices by score, ties in index order; sequences without a score (nothing scored) last."""
    key = scores.double().numpy()
    key = -key if descending else key
    return torch.from_numpy(np.argsort(key, kind="stable"))


# --- the base model's loss of each sequence ------------------------------------------------------


@torch.no_grad()
def sequence_losses(model, data: Packed, batch_size: int, acc=None) -> torch.Tensor:
    """Each sequence's mean next-token loss, float64 [sequences]; NaN for one with no scored token.

    Batch k (sequences k*batch_size onwards) is computed by process k % processes, so a sequence's loss comes out
    of the same batch whatever the process count; every process runs as many forwards (a sharded model gathers its
    weights in each), the spare ones repeating a batch whose result is dropped.
    """
    device = acc.device if acc else next(model.parameters()).device
    rank, world = (acc.process_index, acc.num_processes) if acc else (0, 1)
    batches = torch.arange(len(data)).split(batch_size)
    mine = list(range(rank, len(batches), world))
    rounds = math.ceil(len(batches) / world)
    losses = torch.zeros(len(data), dtype=torch.float64, device=device)
    was_training = model.training
    model.eval()
    for turn in range(rounds):
        ids = batches[mine[turn] if turn < len(mine) else 0]
        input_ids, labels = data.input_ids[ids].to(device), data.labels[ids].to(device)
        logits = model(input_ids=input_ids, use_cache=False).logits[:, :-1].float()
        token_losses = F.cross_entropy(logits.transpose(1, 2), labels[:, 1:], ignore_index=IGNORE, reduction="none")
        counts = (labels[:, 1:] != IGNORE).sum(dim=1)
        if turn < len(mine):
            # 0/0 is NaN: a sequence with nothing scored has no loss to order it by.
            losses[ids.to(device)] = token_losses.double().sum(dim=1) / counts.double()
    model.train(was_training)
    if acc and world > 1:
        # Each sequence is filled in by one process and is 0.0 on the others: the sum gathers it unchanged.
        losses = acc.reduce(torch.nan_to_num(losses, nan=math.inf), reduction="sum")
        losses[torch.isinf(losses)] = math.nan
    return losses.cpu()


def base_scores(
    model, acc, splits: dict[str, Packed], hashes: dict[str, str], base: str, batch_size: int, path: Path
) -> dict[str, torch.Tensor]:
    """`sequence_losses` of each split, from the file at `path` where it holds them for the same dataset (its
    manifest's hash) and the same base model (`base`, an identity string); the others computed and the file
    rewritten. The model must still be the base: LoRA's B matrices start at zero, so before the first step (and
    before a checkpoint is loaded) the adapted model computes exactly the base's outputs."""
    cached = _read_scores(path, base)
    scores = {}
    for name, split in splits.items():
        kept = cached.get(name)
        if kept is not None and kept[0] == hashes[name] and len(kept[1]) == len(split):
            scores[name] = kept[1]
    missing = [name for name in splits if name not in scores]
    for name in missing:
        if acc.is_main_process:
            log.info("scoring the %d sequences of %s by the base model's loss", len(splits[name]), name)
        scores[name] = sequence_losses(model, splits[name], batch_size, acc)
    if missing and acc.is_main_process:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        metadata = {"base": base, "datasets": json.dumps({name: hashes[name] for name in scores})}
        save_file({name: scores[name].contiguous() for name in scores}, tmp, metadata=metadata)
        os.replace(tmp, path)
    acc.wait_for_everyone()
    return scores


def _read_scores(path: Path, base: str) -> dict[str, tuple[str, torch.Tensor]]:
    """{dataset: (its manifest hash, its scores)} from the cache, or nothing when it is absent, unreadable or of
    another base model."""
    try:
        with safe_open(path, framework="pt") as file:
            metadata = file.metadata() or {}
            if metadata.get("base") != base:
                return {}
            hashes = json.loads(metadata.get("datasets", "{}"))
            return {name: (digest, file.get_tensor(name)) for name, digest in hashes.items()}
    except (OSError, ValueError, SafetensorError) as error:
        if path.exists():
            log.warning("ignoring the score cache %s (%s): scoring again", path, error)
        return {}
