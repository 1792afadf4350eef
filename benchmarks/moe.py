"""How close the MoE layer comes to the work it must do, every figure a ratio of two timings made in the same run.

    python -m benchmarks.moe [--part layer|lora|decode|all] [--device cpu|cuda] [--tokens 4096 --hidden 1024
                              --ffn 4096 --experts 8 --top-k 2 --rank 16 --repeat 3]
    python -m benchmarks.moe --device cuda --grok1     # one real Grok-1 layer: hidden 6144, FFN 32768, 8,192 tokens

layer: one MoE layer, forward and forward + backward (weights and input), as
  (a) compute-all: every expert on every token, weighted by the gate (zero where not routed), as the public Grok-1
      reference does;
  (b) transformers' own Mixtral MoE block with the same shapes and Grok-1's activation;
  (c) ours, `Grok1MoE`, with each of its implementations (`loop`: one matmul per expert over its slice;
      `grouped_mm`: one grouped product per projection);
  (d) the bound: the same active FLOPs as one dense matmul pair, [tokens * top_k, hidden] through one expert.
  On a GPU it also reports the achieved TFLOP/s against a plain bf16 matmul of the layer's size, timed in the same run.
lora: forward + backward of the layer (Grok-1's, then Mixtral's block with SiLU) with the experts frozen (gradients
  for the input only), then with LoRA of --rank on both fused expert parameters, ours (model/lora.py) and PEFT's own
  wrapper (W + B @ A on the whole stack every forward).
decode: one token through an int8 layer (Grok-1's format, bf16 activations), against the bound: the bytes of the two
  active experts (int8 + scales) over the copy bandwidth measured in the same run (bytes read + written by a copy of
  a buffer larger than the caches, over its time).

Each figure is the median of --repeat runs after a warm-up.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from model.grok1.configuration import Grok1Config
from model.grok1.modeling import Grok1MoE
from model.lora import register_lora_layers


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


def mixtral_block(hidden: int, ffn: int, experts: int, top_k: int, act: str = "gelu_pytorch_tanh") -> nn.Module:
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    # Grok-1's activation (tanh GELU) rather than Mixtral's SiLU: the elementwise work on [tokens * top_k, FFN]
    # differs between the two, and the arms must differ only in how they route.
    config = MixtralConfig(
        hidden_size=hidden,
        intermediate_size=ffn,
        num_local_experts=experts,
        num_experts_per_tok=top_k,
        hidden_act=act,
    )
    block = MixtralSparseMoeBlock(config)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.normal_(0.0, parameter.shape[-1] ** -0.5)
    return block


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(steps: dict[str, Callable[[], None]], repeat: int, device: torch.device) -> dict[str, float]:
    """Median seconds of each step. The steps take turns, round after round, so that a slow spell of a shared
    machine falls on all of them alike rather than on whichever ran then."""
    for step in steps.values():
        step()  # warm-up: allocator, thread pool, kernels chosen
    synchronize(device)
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeat):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            synchronize(device)
            seconds[name].append(time.perf_counter() - started)
    return {name: statistics.median(times) for name, times in seconds.items()}


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


def grok_moe(args, device: torch.device, dtype: torch.dtype, **config) -> Grok1MoE:
    cfg = Grok1Config(
        hidden_size=args.hidden,
        intermediate_size=args.ffn,
        num_experts=args.experts,
        num_experts_per_tok=args.top_k,
        num_hidden_layers=1,
        vocab_size=256,
        **config,
    )
    with torch.device(device):
        moe = Grok1MoE(cfg)
    with torch.no_grad():
        for parameter in moe.parameters():
            if parameter.is_floating_point():
                parameter.normal_(0.0, parameter.shape[-1] ** -0.5)
    return moe.to(dtype)


def report(name: str, seconds: tuple[float, float], flops: float) -> None:
    fwd, both = seconds
    print(
        f"{name:26s} forward {fwd * 1e3:9.1f} ms ({flops / fwd / 1e12:7.3f} TFLOP/s active)   "
        f"forward+backward {both * 1e3:9.1f} ms ({3 * flops / both / 1e12:7.3f} TFLOP/s)"
    )


def matmul_rate(args, device: torch.device, dtype: torch.dtype) -> float:
    """FLOP/s of one plain matmul the size of the layer's largest product, for the GPU figures' denominator."""
    a = torch.randn(args.tokens * args.top_k, args.hidden, device=device, dtype=dtype)
    b = torch.randn(args.hidden, 2 * args.ffn, device=device, dtype=dtype)
    seconds = timed({"matmul": lambda: a @ b}, max(args.repeat, 10), device)["matmul"]
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / seconds


def part_layer(args, device: torch.device, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    x = torch.randn(args.tokens, args.hidden, device=device, dtype=dtype)
    moe = grok_moe(args, device, dtype)
    # The reference and ours compute the same function: checked here, so the timings compare like with like.
    with torch.no_grad():
        tolerance = 1e-4 if dtype == torch.float32 else 3e-2
        torch.testing.assert_close(compute_all(moe, x), moe(x)[0], rtol=tolerance, atol=tolerance)

    def ours(implementation: str):
        def run(t: torch.Tensor) -> torch.Tensor:
            moe.experts.implementation = implementation
            return moe(t)

        return run, moe

    arms: dict[str, tuple] = {}
    if not args.grok1:  # at Grok-1's size computing every expert is only slower, and Mixtral's block the same loop
        mixtral = mixtral_block(args.hidden, args.ffn, args.experts, args.top_k).to(device, dtype)
        arms["a compute-all"] = (lambda t: compute_all(moe, t), moe)
        # Mixtral's block takes [batch, sequence, hidden]: the same tokens as one sequence.
        arms["b transformers Mixtral"] = (lambda t: mixtral(t[None])[0], mixtral)
    arms["c ours, loop"] = ours("loop")
    arms["c ours, grouped_mm"] = ours("grouped_mm")
    arms["d dense bound"] = (DenseBound(args.hidden, args.ffn, args.top_k).to(device, dtype),) * 2

    flops = 2 * args.tokens * args.top_k * 3 * args.hidden * args.ffn  # gate, up and down
    print(f"layer: active forward {flops / 1e9:.1f} GFLOP; forward+backward counted as 3x")
    steps = {name: forward_and_backward(run, x, module) for name, (run, module) in arms.items()}
    forward = timed({name: pair[0] for name, pair in steps.items()}, args.repeat, device)
    both = timed({name: pair[1] for name, pair in steps.items()}, args.repeat, device)
    results = {name: (forward[name], both[name]) for name in arms}
    for name in arms:
        report(name, results[name], flops)
    ours_best = min((results[n] for n in results if n.startswith("c ")), key=lambda r: r[1])
    bound = results["d dense bound"]
    for label, i in (("forward", 0), ("forward+backward", 1)):
        ratios = [f"{n.split()[0]}/c {results[n][i] / ours_best[i]:.2f}x" for n in results if n[0] in "ab"]
        ratios.append(f"c/d {ours_best[i] / bound[i]:.2f}x")
        ratios += [f"{n}: {results[n][i] / bound[i]:.2f}x of d" for n in results if n.startswith("c ")]
        print(f"{label}: " + ", ".join(ratios))
    if device.type == "cuda":
        rate = matmul_rate(args, device, dtype)
        best = ours_best
        print(
            f"bf16 matmul rate measured now: {rate / 1e12:.1f} TFLOP/s; ours reaches "
            f"{flops / best[0] / rate:.0%} of it forward, {3 * flops / best[1] / rate:.0%} forward+backward"
        )


def part_lora(args, device: torch.device, dtype: torch.dtype) -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    x = torch.randn(args.tokens, args.hidden, device=device, dtype=dtype)
    grok = grok_moe(args, device, dtype)
    # Mixtral's block (SiLU, as Mixtral ships) through the same routed LoRA (model/lora.py).
    mixtral = mixtral_block(args.hidden, args.ffn, args.experts, args.top_k, "silu").to(device, dtype)

    def adapted(base: nn.Module, ours: bool) -> nn.Module:
        config = LoraConfig(
            r=args.rank, lora_alpha=2 * args.rank, target_parameters=["experts.gate_up_proj", "experts.down_proj"]
        )
        if ours:
            register_lora_layers(config)
        return get_peft_model(copy.deepcopy(base), config)

    print(f"lora: rank {args.rank} on gate_up and down of every expert; forward+backward")
    frozen, ours, peft_wrapper = "frozen experts", "ours, LoRA", "PEFT's wrapper, LoRA"
    # Grok1MoE returns (output, router logits); Mixtral's block takes and returns [batch, sequence, hidden].
    models = {
        "Grok-1": (grok, lambda module, t: module(t)[0]),
        "Mixtral": (mixtral, lambda module, t: module(t[None])[0]),
    }
    for model_name, (base, run) in models.items():
        base.requires_grad_(False)
        arms = {frozen: base, ours: adapted(base, True), peft_wrapper: adapted(base, False)}
        steps = {
            name: forward_and_backward(lambda t, m=module, r=run: r(m, t), x, module)[1]
            for name, module in arms.items()
        }
        results = timed(steps, args.repeat, device)
        for name in arms:
            print(f"{model_name + ' ' + name:34s} forward+backward {results[name] * 1e3:9.1f} ms")
        print(
            f"{model_name} LoRA overhead: ours {results[ours] / results[frozen]:.2f}x of frozen, "
            f"PEFT's wrapper {results[peft_wrapper] / results[frozen]:.2f}x"
        )


def copy_bandwidth(device: torch.device) -> float:
    """Bytes read + written per second by a copy of a 512 MiB buffer (larger than any cache)."""
    source = torch.empty(512 * 2**20, dtype=torch.uint8, device=device)
    target = torch.empty_like(source)
    seconds = timed({"copy": lambda: target.copy_(source)}, 10, device)["copy"]
    return 2 * source.numel() / seconds


def part_decode(args, device: torch.device) -> None:
    torch.manual_seed(0)
    moe = grok_moe(args, device, torch.bfloat16, quantization="int8")
    experts = moe.experts
    with torch.no_grad():
        for name in ("gate_up_proj", "down_proj"):
            weight = getattr(experts, name)
            weight.copy_(torch.randint(-127, 128, weight.shape, dtype=torch.int8, device=device))
            getattr(experts, f"{name}_scale").fill_(1 / (127 * weight.shape[-1] ** 0.5))
    token = torch.randn(1, args.hidden, device=device, dtype=torch.bfloat16)
    active_bytes = args.top_k * sum(
        getattr(experts, n)[0].numel() + getattr(experts, f"{n}_scale")[0].numel() * 2
        for n in ("gate_up_proj", "down_proj")
    )
    bandwidth = copy_bandwidth(device)
    bound = active_bytes / bandwidth
    repeat = max(args.repeat, 20)

    def dequantising_step() -> None:
        with _kernel_disabled():
            moe(token)

    with torch.no_grad():
        # The same layer dequantising each routed expert (what a training step or a long prompt does) beside it.
        results = timed({"kernel": lambda: moe(token), "dequantising": dequantising_step}, repeat, device)
    kernel, dequantising = results["kernel"], results["dequantising"]
    print(
        f"decode: one token, int8 experts, bf16; {active_bytes / 1e6:.1f} MB of two experts; copy bandwidth "
        f"{bandwidth / 1e9:.1f} GB/s -> bound {bound * 1e3:.3f} ms"
    )
    print(f"int8 kernel      {kernel * 1e3:8.3f} ms per layer: {bound / kernel:.0%} of the bound")
    print(f"dequantising     {dequantising * 1e3:8.3f} ms per layer: {bound / dequantising:.0%} of the bound")


class _kernel_disabled:
    """Route every int8 projection through dequantisation for the duration."""

    def __enter__(self):
        from model import experts

        self.module, self.saved = experts, experts.INT8_KERNEL_MAX_ROWS
        experts.INT8_KERNEL_MAX_ROWS = 0

    def __exit__(self, *exc):
        self.module.INT8_KERNEL_MAX_ROWS = self.saved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["layer", "lora", "decode", "all"], default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--grok1", action="store_true", help="Grok-1's layer: hidden 6144, FFN 32768, 8,192 tokens")
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--ffn", type=int, default=4096)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if args.grok1:
        args.tokens, args.hidden, args.ffn, args.experts, args.top_k = 8192, 6144, 32768, 8, 2
    device = torch.device(args.device)
    # fp32 on a CPU (its fast path); bf16 on a GPU, as Grok-1 runs there.
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    print(
        f"{device}, {dtype}, {threads} threads; tokens {args.tokens}, hidden {args.hidden}, FFN {args.ffn}, "
        f"{args.experts} experts, top-{args.top_k}"
    )
    if args.part in ("layer", "all"):
        part_layer(args, device, dtype)
    if args.part in ("lora", "all"):
        part_lora(args, device, dtype)
    if args.part in ("decode", "all"):
        part_decode(args, device)


if __name__ == "__main__":
    main()
