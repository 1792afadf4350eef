"""Generation speed with the KV cache: a small random Grok-1 against a transformers Mixtral of the same sizes.

    .venv/bin/python benchmarks/generate.py [--device cuda --dtype bfloat16] [--new-tokens 64] [--batch 1]

Both models have the same layer count, widths, experts (8, top-2), heads and vocabulary, so the ratio compares
the two implementations (attention with Grok-1's soft-cap, routed fused experts) and nothing else. Greedy
decoding with min_new_tokens = max_new_tokens, so both generate exactly the same number of tokens.
"""

import argparse
import statistics
import time

import torch
from transformers import MixtralConfig, MixtralForCausalLM

from model.grok1 import Grok1Config, Grok1ForCausalLM

SIZES = {
    "vocab_size": 32000,
    "hidden_size": 1024,
    "intermediate_size": 2816,
    "num_hidden_layers": 8,
    "num_attention_heads": 16,
    "num_key_value_heads": 4,
    "max_position_embeddings": 2048,
}


def build(kind: str, dtype: torch.dtype, device: str):
    torch.manual_seed(0)
    if kind == "grok-1":
        config = Grok1Config(**SIZES, head_dim=64, num_experts=8, num_experts_per_tok=2)
        model = Grok1ForCausalLM(config)
    else:
        config = MixtralConfig(**SIZES, num_local_experts=8, num_experts_per_tok=2, attn_implementation="eager")
        model = MixtralForCausalLM(config)
    return model.to(device=device, dtype=dtype).eval()


def tokens_per_second(model, batch: int, prompt: int, new_tokens: int, repeats: int, device: str) -> float:
    ids = torch.randint(3, SIZES["vocab_size"], (batch, prompt), device=device)
    kwargs = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "use_cache": True}
    with torch.no_grad():
        model.generate(ids, **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
        times = []
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            model.generate(ids, **kwargs)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
    return batch * new_tokens / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)

    results = {}
    # Alternated, so drift on a shared machine hits both models alike.
    for _ in range(2):
        for kind in ("grok-1", "mixtral"):
            model = build(kind, dtype, args.device)
            rate = tokens_per_second(model, args.batch, args.prompt, args.new_tokens, args.repeats, args.device)
            results.setdefault(kind, []).append(rate)
            del model
    grok, mixtral = max(results["grok-1"]), max(results["mixtral"])
    print(f"device {args.device}, {args.dtype}, batch {args.batch}, prompt {args.prompt}, new tokens {args.new_tokens}")
    print(f"sizes: {SIZES}, 8 experts, top-2")
    print(f"grok-1 (ours):          {grok:8.1f} tokens/s")
    print(f"mixtral (transformers): {mixtral:8.1f} tokens/s")
    print(f"grok-1 / mixtral: {grok / mixtral:.2f}x")


if __name__ == "__main__":
    main()
