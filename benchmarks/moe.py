"""How close the MoE layer comes to the work it must do: four ways to compute one layer, timed in one run.

    python -m benchmarks.moe [--tokens 4096 --hidden 1024 --ffn 4096 --experts 8 --top-k 2 --repeat 3]

(a) compute-all: every expert on every token, weighted by the gate (zero where the token was not routed), as the
    public Grok-1 reference does;
(b) transformers' own Mixtral MoE block with the same shapes and Grok-1's activation;
(c) ours: `Grok1MoE`, tokens sorted by expert, one matmul per expert over its contiguous slice;
(d) the bound: the same active FLOPs as one dense matmul pair, [tokens * top_k, hidden] through one expert's
    weights, with nothing routed.

Forward, and forward + backward (weights and input), each the median of --repeat runs after a warm-up. The figures
to compare are the ratios, measured in the same run: (a)/(c), (b)/(c), (c)/(d).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from model.grok1.configuration import Grok1Config
from model.grok1.modeling import Grok1MoE


def compute_all(moe: Grok1MoE, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token; a token's gate is zero for the experts it was not routed to."""
    probs = torch.softmax(moe.router(x).float(), dim=-1)
    weights, index = torch.topk(probs, moe.top_k, dim=-1)
    gates = torch.zeros_like(probs).scatter(-1, index, weights).to(x.dtype)
    experts = moe.experts
    output = torch.zeros_like(x)
    for expert in range(experts.num_experts):
        gate, up = F.linear(x, experts.gate_up_proj[expert]).chunk(2, dim=-1)
        output = (
            output + F.linear(F.gelu(gate, approximate="tanh") * up, experts.down_proj[expert]) * gates[:, expert, None]
        )
    return output


class DenseBound(nn.Module):
    """The active FLOPs of the layer with no routing at all: every (token, slot) pair through one weight pair."""

    def __init__(self, hidden: int, ffn: int, top_k: int):
        super().__init__()
        self.top_k = top_k
        self.gate_up = nn.Parameter(torch.randn(2 * ffn, hidden) * hidden**-0.5)
        self.down = nn.Parameter(torch.randn(hidden, ffn) * ffn**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pairs = x.repeat_interleave(self.top_k, dim=0)
        gate, up = F.linear(pairs, self.gate_up).chunk(2, dim=-1)
        return F.linear(F.gelu(gate, approximate="tanh") * up, self.down).view(x.shape[0], self.top_k, -1).sum(1)


def mixtral_block(hidden: int, ffn: int, experts: int, top_k: int) -> nn.Module:
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    # Grok-1's activation (tanh GELU) rather than Mixtral's SiLU: the elementwise work on [tokens * top_k, FFN]
    # differs between the two, and the arms must differ only in how they route.
    config = MixtralConfig(
        hidden_size=hidden,
        intermediate_size=ffn,
        num_local_experts=experts,
        num_experts_per_tok=top_k,
        hidden_act="gelu_pytorch_tanh",
    )
    block = MixtralSparseMoeBlock(config)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.normal_(0.0, parameter.shape[-1] ** -0.5)
    return block


def timed(step: Callable[[], None], repeat: int) -> float:
    step()  # warm-up: allocator, thread pool, kernels chosen
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def forward_and_backward(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, module: nn.Module):
    def forward() -> None:
        with torch.no_grad():
            run(x)

    def both() -> None:
        module.zero_grad(set_to_none=True)
        leaf = x.detach().requires_grad_(True)
        out = run(leaf)
        out = out[0] if isinstance(out, tuple) else out
        out.float().square().mean().backward()

    return forward, both


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--ffn", type=int, default=4096)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    config = Grok1Config(
        hidden_size=args.hidden,
        intermediate_size=args.ffn,
        num_experts=args.experts,
        num_experts_per_tok=args.top_k,
        num_hidden_layers=1,
        vocab_size=256,
    )
    ours = Grok1MoE(config)
    with torch.no_grad():
        for parameter in ours.parameters():
            parameter.normal_(0.0, parameter.shape[-1] ** -0.5)
    x = torch.randn(args.tokens, args.hidden)
    # The reference and ours compute the same function: checked here, so the timings compare like with like.
    with torch.no_grad():
        torch.testing.assert_close(compute_all(ours, x), ours(x)[0], rtol=1e-4, atol=1e-4)

    mixtral = mixtral_block(args.hidden, args.ffn, args.experts, args.top_k)
    arms = {
        "a compute-all": (lambda t: compute_all(ours, t), ours),
        # Mixtral's block takes [batch, sequence, hidden]: the same tokens as one sequence.
        "b transformers Mixtral": (lambda t: mixtral(t[None])[0], mixtral),
        "c ours (Grok1MoE)": (ours, ours),
        "d dense bound": (DenseBound(args.hidden, args.ffn, args.top_k),) * 2,
    }
    active_flops = 2 * args.tokens * args.top_k * 3 * args.hidden * args.ffn  # gate, up and down
    print(
        f"tokens {args.tokens}, hidden {args.hidden}, FFN {args.ffn}, {args.experts} experts, top-{args.top_k}; "
        f"{torch.get_num_threads()} threads; active forward {active_flops / 1e9:.1f} GFLOP"
    )
    results = {}
    for name, (run, module) in arms.items():
        forward, both = forward_and_backward(run, x, module)
        results[name] = (timed(forward, args.repeat), timed(both, args.repeat))
        fwd, fwd_bwd = results[name]
        print(
            f"{name:24s} forward {fwd * 1e3:8.1f} ms ({active_flops / fwd / 1e9:6.1f} GFLOP/s active)   "
            f"forward+backward {fwd_bwd * 1e3:8.1f} ms"
        )
    a, b, c, d = (results[name] for name in arms)
    for label, index in (("forward", 0), ("forward+backward", 1)):
        print(
            f"{label}: a/c {a[index] / c[index]:.2f}x, b/c {b[index] / c[index]:.2f}x, c/d {c[index] / d[index]:.2f}x"
        )


if __name__ == "__main__":
    main()
