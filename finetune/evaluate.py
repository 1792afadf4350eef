"""Held-out loss and perplexity: the base model and the adapted one, on the same tokens, side by side."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import ConfigError, ModelSection
from .dataset import IGNORE, Packed, load_split


def token_loss_sum(model, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed next-token cross-entropy over scored positions, in fp32."""
    logits = model(input_ids=input_ids, use_cache=False).logits
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE, reduction="sum"
    )


def scored(labels: torch.Tensor) -> int:
    """Tokens whose next-token prediction counts (the first position predicts nothing)."""
    return int((labels[:, 1:] != IGNORE).sum())


@torch.no_grad()
def evaluate_loss(model, data: Packed, batch_size: int, acc=None) -> float:
    """Mean next-token loss over every scored token of `data`; with an accelerator, split across its processes."""
    device = acc.device if acc else next(model.parameters()).device
    rank, world = (acc.process_index, acc.num_processes) if acc else (0, 1)
    was_training = model.training
    model.eval()
    total = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    for ids in torch.arange(len(data))[rank::world].split(batch_size):
        labels = data.labels[ids].to(device)
        total += token_loss_sum(model, data.input_ids[ids].to(device), labels).double()
        count += scored(labels)
    model.train(was_training)
    if acc:
        total, count = acc.reduce(total, reduction="sum"), acc.reduce(count, reduction="sum")
    if not count:
        raise ConfigError("the held-out split has no scored tokens: prepare with --eval-fraction above 0")
    return float(total / count)


@dataclass
class Comparison:
    tokens: int
    base_loss: float
    adapted_loss: float

    @property
    def base_perplexity(self) -> float:
        return math.exp(self.base_loss)

    @property
    def adapted_perplexity(self) -> float:
        return math.exp(self.adapted_loss)

    def to_dict(self) -> dict:
        return {**asdict(self), "base_perplexity": self.base_perplexity, "adapted_perplexity": self.adapted_perplexity}

    def render(self) -> str:
        change = (self.adapted_perplexity / self.base_perplexity - 1) * 100
        return "\n".join(
            [
                f"held-out tokens: {self.tokens}",
                f"{'':10}{'loss':>10}{'perplexity':>14}",
                f"{'base':10}{self.base_loss:>10.4f}{self.base_perplexity:>14.3f}",
                f"{'adapted':10}{self.adapted_loss:>10.4f}{self.adapted_perplexity:>14.3f}",
                f"perplexity change: {change:+.1f}%",
            ]
        )


def compare(adapter_dir: Path, data_dir: Path, base_dir: Path | None = None, batch_size: int = 4) -> Comparison:
    """Held-out loss of the base, then of the base with the adapter, on `data_dir`'s eval split."""
    from model import load_adapter

    from .lora_model import check_adapter, load_base

    adapter = check_adapter(adapter_dir, base_dir)
    data = load_split(data_dir, "eval")
    if not len(data):
        raise ConfigError(f"{data_dir} has no held-out split: prepare it with --eval-fraction above 0")
    model, _ = load_base(ModelSection(path=adapter.base_dir, dtype=adapter.dtype), for_training=False)
    base_loss = evaluate_loss(model, data, batch_size)
    adapted_loss = evaluate_loss(load_adapter(model, adapter_dir), data, batch_size)
    return Comparison(scored(data.labels), base_loss, adapted_loss)
