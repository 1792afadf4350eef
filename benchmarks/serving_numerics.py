"""What vLLM's Grok-1 computes differently from the release, measured on tiny random Grok-1 models.

    .venv/bin/python -m benchmarks.serving_numerics [--seeds 5]

Each model is written as a serving directory (model/grok1/serving), loaded through its own remote code, and run with
the serving config as written (which must equal the project's model) and with one vLLM behaviour switched on at a
time: exact GELU in the experts (vLLM's fused MoE has no tanh form; no config key changes it), then vLLM's defaults
for the two keys the serving config sets (router soft-cap 30, top-2 gates renormalised). Reported per variant, over
all positions of 4 x 48 tokens: the largest |logit difference| relative to the logits' spread, the share of
positions whose argmax agrees, and the mean KL divergence of the next-token distributions.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from grok1_reference import tiny_model

from model.grok1.serving import export

HEAD_DIM = 16
VARIANTS = {
    "as written": {},
    "exact GELU (vLLM's)": {"hidden_act": "gelu"},
    "vLLM default: router cap 30": {"router_logit_softcapping": 30.0},
    "vLLM default: renormalised gates": {"moe_router_renormalize": True},
}


def compare(expected: torch.Tensor, logits: torch.Tensor) -> tuple[float, float, float]:
    spread = (expected.max() - expected.min()).item()
    error = (logits - expected).abs().max().item() / spread
    agree = (logits.argmax(-1) == expected.argmax(-1)).double().mean().item()
    kl = torch.nn.functional.kl_div(
        logits.log_softmax(-1), expected.log_softmax(-1), log_target=True, reduction="none"
    ).sum(-1)
    return error, agree, kl.mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--std", type=float, default=0.3, help="weight scale; 0.3 saturates the soft-cap")
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in VARIANTS}
    for seed in range(args.seeds):
        model = tiny_model(seed=seed, std=args.std, head_dim=HEAD_DIM, attn_output_multiplier=HEAD_DIM**-0.5)
        ids = torch.randint(3, model.config.vocab_size, (4, 48), generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            expected = model(ids).logits.double()
        with tempfile.TemporaryDirectory() as work:
            model.save_pretrained(Path(work) / "project")
            served = Path(work) / "served"
            export(Path(work) / "project", served, dtype="float32")
            config = json.loads((served / "config.json").read_text())
            for name, change in VARIANTS.items():
                (served / "config.json").write_text(json.dumps({**config, **change}))
                remote = AutoModelForCausalLM.from_pretrained(served, trust_remote_code=True, local_files_only=True)
                with torch.no_grad():
                    results[name].append(compare(expected, remote.eval()(ids).logits.double()))
    print(f"{args.seeds} tiny Grok-1 models (hidden 64, 3 layers, 8 experts, weight std {args.std}), 4 x 48 tokens")
    print("| variant | max abs logit diff / spread (worst) | argmax agreement (mean) | mean KL (mean) |")
    print("| --- | --- | --- | --- |")
    for name, rows in results.items():
        error = max(row[0] for row in rows)
        agree = sum(row[1] for row in rows) / len(rows)
        kl = sum(row[2] for row in rows) / len(rows)
        print(f"| {name} | {error:.2e} | {agree:.1%} | {kl:.2e} |")


if __name__ == "__main__":
    main()
