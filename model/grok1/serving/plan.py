"""Does Grok-1 serve from vLLM on these GPUs, and how many sequences fit beside it? Per GPU, with the arithmetic.

    python -m model.grok1.serving.plan --gpus 8 --gpu-memory 79.6 --weights int8 [--context 8192] [--json]

Figures are GiB (2^30 bytes), as vLLM and nvidia-smi count them: an H100 80 GB shows 81559 MiB (79.6 GiB), an
H200 143771 MiB (140.4 GiB). Symbols: L layers, H hidden, F expert intermediate, E experts, k experts per token,
V vocab, A attention heads, G key/value heads, D head width, n GPUs (tensor parallel), T tokens per forward pass
(vLLM's max_num_batched_tokens), S sequences sampled at once (max_num_seqs).

1. weights, split over the n GPUs (vLLM shards every matrix and the vocabulary):
   attention L * H * (A + 2G + A) * D and experts L * E * 3 * H * F parameters, at 2 B (bf16) or, in the 8-bit
   format (packed_int8.py), 1 B plus a bf16 scale per 128 of them; embeddings V * H at 2 B (the output projection is
   the same matrix); norms and routers (L * (4H + H * E)) at 2 B, on every GPU.
2. activations of the largest forward pass vLLM profiles at start-up: T * (4H + (A + 2G) * D / n + k * (3F / n + H))
   * 2 B (residual, norms, q/k/v, each routed token's expert input, gate-and-up output, activation and output),
   plus the logits of S sampled tokens, S * V / n * 4 B. An estimate: vLLM measures the real one at start-up.
3. allowance: 2 GiB for CUDA graphs, NCCL buffers and the allocator's slack.
4. KV cache, what is left of the budget (`--gpu-memory-utilization` x memory): per token and GPU
   L * 2 * max(1, G / n) * D * 2 B (bf16 keys and values; with G < n a head is replicated). Divided by the context,
   that is how many full-length sequences fit at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from ..convert import RELEASE_CONFIG

GIB = 2**30
ALLOWANCE_GIB = 2.0
GROUP = 128
WEIGHTS = ("bf16", "int8")


@dataclass(frozen=True)
class ServingPlan:
    gpus: int
    gpu_memory_gib: float
    utilization: float
    weights_format: str
    context: int
    weights_gib: float
    activations_gib: float
    allowance_gib: float
    kv_per_token_kib: float
    kv_cache_gib: float
    sequences_at_context: int

    @property
    def fits(self) -> bool:
        return self.sequences_at_context >= 1

    def render(self) -> str:
        budget = self.gpu_memory_gib * self.utilization
        verdict = (
            f"fits: {self.sequences_at_context} sequences of {self.context} tokens at once"
            if self.fits
            else f"does not fit: weights, activations and allowance need {budget - self.kv_cache_gib:.1f} GiB"
        )
        return "\n".join(
            [
                (
                    f"Grok-1 on {self.gpus} x {self.gpu_memory_gib:g} GiB, {self.weights_format} weights, "
                    f"vLLM budget {self.utilization:g} x {self.gpu_memory_gib:g} = {budget:.1f} GiB per GPU:"
                ),
                f"  1. weights       {self.weights_gib:8.1f} GiB",
                f"  2. activations   {self.activations_gib:8.1f} GiB",
                f"  3. allowance     {self.allowance_gib:8.1f} GiB",
                f"  4. KV cache      {self.kv_cache_gib:8.1f} GiB at {self.kv_per_token_kib:g} KiB a token",
                f"  {verdict}",
            ]
        )


def serving_plan(
    config: dict,
    *,
    gpus: int,
    gpu_memory_gib: float,
    weights: str = "int8",
    utilization: float = 0.9,
    context: int | None = None,
    batched_tokens: int = 8192,
    sampled: int = 256,
) -> ServingPlan:
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}, not {weights!r}")
    c = {**RELEASE_CONFIG, **config}  # the release's, unless the config describes another size
    layers, hidden, inter = c["num_hidden_layers"], c["hidden_size"], c["intermediate_size"]
    heads, kv_heads, experts = c["num_attention_heads"], c["num_key_value_heads"], c["num_experts"]
    head_dim = c.get("head_dim") or hidden // heads
    context = context or c["max_position_embeddings"]

    matrices = layers * hidden * (2 * heads + 2 * kv_heads) * head_dim + layers * experts * 3 * hidden * inter
    per_matrix_param = 2.0 if weights == "bf16" else 1.0 + 2.0 / GROUP
    sharded = matrices * per_matrix_param + c["vocab_size"] * hidden * 2.0
    replicated = layers * (4 * hidden + hidden * experts) * 2.0
    weights_bytes = sharded / gpus + replicated

    k = c["num_experts_per_tok"]
    per_token = 4 * hidden + (heads + 2 * kv_heads) * head_dim / gpus + k * (3 * inter / gpus + hidden)
    activations = batched_tokens * per_token * 2.0 + sampled * c["vocab_size"] / gpus * 4.0

    kv_per_token = layers * 2 * max(1, kv_heads // gpus) * head_dim * 2.0
    budget = gpu_memory_gib * utilization * GIB
    kv_cache = budget - weights_bytes - activations - ALLOWANCE_GIB * GIB
    return ServingPlan(
        gpus=gpus,
        gpu_memory_gib=gpu_memory_gib,
        utilization=utilization,
        weights_format=weights,
        context=context,
        weights_gib=weights_bytes / GIB,
        activations_gib=activations / GIB,
        allowance_gib=ALLOWANCE_GIB,
        kv_per_token_kib=kv_per_token / 1024,
        kv_cache_gib=kv_cache / GIB,
        sequences_at_context=max(0, int(kv_cache // (kv_per_token * context))),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.grok1.serving.plan", description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--gpu-memory", type=float, default=79.6, help="GiB per GPU, as nvidia-smi shows it")
    parser.add_argument("--weights", choices=WEIGHTS, default="int8")
    parser.add_argument("--utilization", type=float, default=0.9, help="vLLM's --gpu-memory-utilization")
    parser.add_argument("--context", type=int, help="tokens per sequence (default: the model's 8192)")
    parser.add_argument("--batched-tokens", type=int, default=8192, help="vLLM's --max-num-batched-tokens")
    parser.add_argument("--config", help="a config.json describing another size (default: the release)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = json.loads(Path(args.config).read_text()) if args.config else {}
        plan = serving_plan(
            config,
            gpus=args.gpus,
            gpu_memory_gib=args.gpu_memory,
            weights=args.weights,
            utilization=args.utilization,
            context=args.context,
            batched_tokens=args.batched_tokens,
        )
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({**asdict(plan), "fits": plan.fits}, indent=2) if args.json else plan.render())
    return 0 if plan.fits else 2


if __name__ == "__main__":
    sys.exit(main())
