"""`finetune plan`: does LoRA fine-tuning of a MoE model fit in GPU memory, and if not, what would?

Every figure is an estimate per GPU, in GB = 1e9 bytes (not GiB). `--gpu-memory 80` is taken as 80e9 bytes; an
"80 GB" card has 80 GiB (85.9e9 bytes) of which the driver keeps some, so the difference is a margin for what the
estimate misses. Symbols: L layers, H hidden, F expert intermediate, E experts, k experts per token, V vocab,
S seq len, b micro-batch, n GPUs, r LoRA rank, B bytes.

1. weights: the frozen base weights, sharded over n (ZeRO-3 / FSDP full shard).
   lora: bf16, 2 B/param. int8-lora (Grok-1 only: its release format): 1 B/param for attention and expert matrices
   plus one bf16 scale per output row and input block (8 blocks for o_proj/down, 1 for the rest). qlora: NF4,
   0.5 B/param plus one fp32 absmax per 64 params, for the attention projections only: bitsandbytes converts
   `nn.Linear` modules, so the fused 3-D experts stay bf16 (double quantisation, which shrinks the absmax to ~8
   bits, is ignored: a slight over-estimate). Embeddings, lm head, norms and router are bf16 throughout.
2. gathered layer: ZeRO-3 all-gathers each layer's weights before computing it: one layer, unsharded, in its
   storage format (prefetching the next layer is not counted).
3. expert working set, for the layer being computed. LoRA on Grok-1's and Mixtral's experts runs through its
   factors beside the routed experts (model/lora.py), with no merged weight: 0 for bf16 experts. (PEFT's own wrapper
   would build the merged W + B@A of the whole stack, keep it for the backward and build its gradient: 2 * E * 3HF *
   2 B.) Int8 experts (Grok-1) are dequantised one at a time, and again in the backward rather than kept: one expert,
   3HF * 2 B. (Checked with saved-tensor hooks on small layers, tests/test_moe.py.)

The LoRA targets are finetune/targets.py's: attention q/k/v/o plus the fused experts (gate_up [E, 2F, H], down
[E, H, F]) for Grok-1 (int8 too) and Mixtral; for DBRX (PEFT cannot wrap its fused 2-D experts) attention plus the
router.

4. LoRA: r*(in+out) per targeted linear, r*E*(in+out) per targeted expert stack; fp32 params + grads + Adam m, v:
   16 B/param, sharded over n.
5. layer inputs: gradient checkpointing keeps each layer's input: L * b * S * H * 2 B.
6. attention recompute: Grok-1's eager soft-capped attention keeps three score tensors for the backward:
   b * heads * S^2 * (4 + 4 + 2) B (fp32 capped logits, fp32 softmax, its bf16 copy). Mixtral and DBRX use a fused
   kernel (transformers' sdpa) that keeps no scores: b * S * (2 * heads + 2 * kv_heads) * head_dim * 2 B (q, k, v,
   output).
7. MoE recompute: per routed (token, expert) pair the gate/up output, its gelu(gate) * up product and the routed
   input and output: b * S * k * (3F + 2H) * 2 B.
8. logits: b * S * V * 4 B * 2 (fp32 logits and their gradient), not sharded.
9. allowance: 2 GB + 10% of 1..8.

With `zero3-offload` (DeepSpeed/ColossalAI CPU offload) items 1 and 4 live in host memory instead; `suggest` never
offloads, since offload is what made the public Grok-1 LoRA run slow (~215 tokens/s on 8 x A100 80 GB).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

GB = 1e9
Architecture = Literal["grok-1", "mixtral", "dbrx"]
Method = Literal["lora", "int8-lora", "qlora"]
Sharding = Literal["zero3", "zero3-offload", "none"]
Kind = Literal["embedding", "attention", "router", "expert", "norm"]
METHODS: tuple[Method, ...] = ("lora", "int8-lora", "qlora")
SHARDINGS: tuple[Sharding, ...] = ("zero3", "zero3-offload", "none")
# What each method stores below bf16. bitsandbytes (QLoRA) converts only `nn.Linear` modules (transformers'
# replace_with_bnb_linear), so the fused 3-D expert parameters stay bf16 under qlora; Grok-1's int8 checkpoint
# quantises attention and experts. Routers, norms, embeddings and the lm head stay bf16 throughout.
QUANTISED_KINDS: dict[Method, tuple[Kind, ...]] = {
    "lora": (),
    "int8-lora": ("attention", "expert"),
    "qlora": ("attention",),
}
NF4_BLOCK = 64  # bitsandbytes' default blocksize for 4-bit
MIN_SUGGESTED_SEQ_LEN = 512
# CUDA context, cuBLAS and NCCL workspaces take 1-2 GB per process whatever the model; the caching allocator's
# fragmentation grows with what is allocated, typically 5-15% in training with variable-size MoE buffers.
FIXED_ALLOWANCE = 2 * GB
FRAGMENTATION = 0.10


class PlanError(ValueError):
    """Bad input: the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Matrix:
    """One weight of the model: [experts, out, in] (experts = 1 for a plain matrix, in = 1 for a norm vector)."""

    name: str
    out_features: int
    in_features: int
    kind: Kind
    experts: int = 1
    lora: bool = False  # a default LoRA target
    int8_blocks: int = 1  # scale blocks along the input axis in Grok-1's int8 format

    @property
    def params(self) -> int:
        return self.experts * self.out_features * self.in_features

    def lora_params(self, rank: int) -> int:
        # PEFT's expert-stack wrapper builds A [r*E, in] and B [out, r*E]; a plain linear is the E = 1 case.
        return rank * self.experts * (self.in_features + self.out_features) if self.lora else 0

    def weight_bytes(self, method: Method) -> float:
        if self.kind not in QUANTISED_KINDS[method]:
            return 2.0 * self.params
        if method == "int8-lora":
            return 1.0 * self.params + 2.0 * self.experts * self.out_features * self.int8_blocks
        return 0.5 * self.params + 4.0 * self.params / NF4_BLOCK


@dataclass(frozen=True)
class ModelSpec:
    """The shapes that decide memory; parameter counts follow from them (see `matrices`)."""

    name: str
    architecture: Architecture
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    num_experts: int
    top_k: int
    tied_embeddings: bool
    max_positions: int

    @classmethod
    def from_config(cls, config: dict, name: str | None = None) -> ModelSpec:
        """From a transformers `config.json` of Grok-1 ("grok-1"), Mixtral ("mixtral") or DBRX ("dbrx")."""
        model_type = config.get("model_type")

        def need(key: str, source: dict = config, where: str = ""):
            if source.get(key) is None:
                raise PlanError(f"{model_type} config is missing {where}{key}")
            return source[key]

        if model_type in ("grok-1", "mixtral"):
            hidden, heads = need("hidden_size"), need("num_attention_heads")
            grok = model_type == "grok-1"
            spec = cls(
                name=name or model_type,
                architecture=model_type,
                vocab_size=need("vocab_size"),
                hidden_size=hidden,
                intermediate_size=need("intermediate_size"),
                num_layers=need("num_hidden_layers"),
                num_heads=heads,
                num_kv_heads=config.get("num_key_value_heads") or heads,
                head_dim=config.get("head_dim") or hidden // heads,
                num_experts=need("num_experts" if grok else "num_local_experts"),
                top_k=need("num_experts_per_tok"),
                tied_embeddings=config.get("tie_word_embeddings", grok),
                max_positions=config.get("max_position_embeddings") or (8192 if grok else 32768),
            )
        elif model_type == "dbrx":
            ffn, attn = config.get("ffn_config") or {}, config.get("attn_config") or {}
            hidden, heads = need("d_model"), need("n_heads")
            spec = cls(
                name=name or model_type,
                architecture="dbrx",
                vocab_size=need("vocab_size"),
                hidden_size=hidden,
                intermediate_size=need("ffn_hidden_size", ffn, "ffn_config."),
                num_layers=need("n_layers"),
                num_heads=heads,
                num_kv_heads=attn.get("kv_n_heads") or heads,
                head_dim=hidden // heads,
                num_experts=need("moe_num_experts", ffn, "ffn_config."),
                top_k=need("moe_top_k", ffn, "ffn_config."),
                tied_embeddings=config.get("tie_word_embeddings", False),
                max_positions=config.get("max_seq_len") or 32768,
            )
        else:
            raise PlanError(
                f"unsupported model_type {model_type!r}: the planner knows 'grok-1', 'mixtral' and 'dbrx' "
                "(Grok-1, Mixtral and DBRX mixture-of-experts models)"
            )
        spec.validate()
        return spec

    def validate(self) -> None:
        sizes = {k: v for k, v in asdict(self).items() if k not in ("name", "architecture", "tied_embeddings")}
        for key, value in sizes.items():
            if not isinstance(value, int) or value < 1:
                raise PlanError(f"{self.name}: {key} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise PlanError(f"{self.name}: {self.num_heads} attention heads is not a multiple of {self.num_kv_heads}")
        if self.top_k > self.num_experts:
            raise PlanError(f"{self.name}: {self.top_k} experts per token but only {self.num_experts} experts")

    @property
    def eager_attention(self) -> bool:
        # Grok-1's tanh soft-cap has no fused kernel (model/grok1 sets _supports_sdpa = False).
        return self.architecture == "grok-1"

    def methods(self) -> tuple[Method, ...]:
        # int8-lora is Grok-1's own int8 checkpoint format; the other models have no int8 release.
        return METHODS if self.architecture == "grok-1" else ("lora", "qlora")

    def layer_matrices(self, method: Method = "lora") -> list[Matrix]:
        """The weights of one decoder layer, with the LoRA targets finetune/targets.py picks for `method`."""
        h, f, e = self.hidden_size, self.intermediate_size, self.num_experts
        q_dim, kv_dim = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        # PEFT cannot wrap DBRX's fused 2-D experts: the router is adapted instead.
        experts_targeted = self.architecture != "dbrx"
        if self.architecture == "dbrx":
            attention = [
                Matrix("Wqkv", q_dim + 2 * kv_dim, h, "attention", lora=True),
                Matrix("out_proj", h, q_dim, "attention", lora=True, int8_blocks=8),
            ]
        else:
            attention = [
                Matrix("q_proj", q_dim, h, "attention", lora=True),
                Matrix("k_proj", kv_dim, h, "attention", lora=True),
                Matrix("v_proj", kv_dim, h, "attention", lora=True),
                Matrix("o_proj", h, q_dim, "attention", lora=True, int8_blocks=8),
            ]
        norms = 4 if self.architecture == "grok-1" else 2  # Grok-1 norms both before and after each sub-block
        return [
            *attention,
            Matrix("router", e, h, "router", lora=not experts_targeted),
            Matrix("experts.gate_up", 2 * f, h, "expert", experts=e, lora=experts_targeted),
            Matrix("experts.down", h, f, "expert", experts=e, lora=experts_targeted, int8_blocks=8),
            *(Matrix(f"norm{i}", h, 1, "norm") for i in range(norms)),
        ]

    def global_matrices(self) -> list[Matrix]:
        head = [] if self.tied_embeddings else [Matrix("lm_head", self.vocab_size, self.hidden_size, "embedding")]
        return [
            Matrix("embedding", self.vocab_size, self.hidden_size, "embedding"),
            *head,
            Matrix("final_norm", self.hidden_size, 1, "norm"),
        ]

    def matrices(self, method: Method = "lora") -> list[Matrix]:
        """Every weight of the model: `num_layers` copies of `layer_matrices` plus the global ones."""
        return self.layer_matrices(method) * self.num_layers + self.global_matrices()

    @property
    def params(self) -> int:
        return sum(m.params for m in self.matrices())

    def lora_params(self, rank: int, method: Method = "lora") -> int:
        return sum(m.lora_params(rank) for m in self.matrices(method))

    def lora_targets(self, method: Method = "lora") -> list[str]:
        return [m.name for m in self.layer_matrices(method) if m.lora]


BUILTIN: dict[str, ModelSpec] = {
    "grok-1": ModelSpec("grok-1", "grok-1", 131072, 6144, 32768, 64, 48, 8, 128, 8, 2, True, 8192),
    "mixtral-8x7b": ModelSpec("mixtral-8x7b", "mixtral", 32000, 4096, 14336, 32, 32, 8, 128, 8, 2, False, 32768),
    "dbrx": ModelSpec("dbrx", "dbrx", 100352, 6144, 10752, 40, 48, 8, 128, 16, 4, False, 32768),
}


def spec_for(name_or_path: str) -> ModelSpec:
    """A built-in model by name, or a model directory (or its config.json) of a supported architecture."""
    if name_or_path in BUILTIN:
        return BUILTIN[name_or_path]
    path = Path(name_or_path)
    config_path = path / "config.json" if path.is_dir() else path
    if path.is_dir() and not config_path.is_file():
        raise PlanError(f"{path} has no config.json: give a model directory as saved by transformers")
    if not config_path.is_file():
        raise PlanError(
            f"unknown model {name_or_path!r}: give one of {', '.join(BUILTIN)} or a model directory with a config.json"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PlanError(f"cannot read {config_path}: {err}") from err
    if not isinstance(config, dict):
        raise PlanError(f"{config_path} is not a JSON object")
    return ModelSpec.from_config(config, name=str(path))


@dataclass(frozen=True)
class LineItem:
    key: str
    label: str
    bytes: float
    arithmetic: str


@dataclass(frozen=True)
class Plan:
    """The line items of one configuration, per GPU; `render` shows each with its arithmetic."""

    spec: ModelSpec
    gpus: int
    gpu_memory_gb: float
    seq_len: int
    method: Method
    rank: int
    micro_batch: int
    sharding: Sharding
    items: tuple[LineItem, ...]
    host_bytes: float = 0.0  # per GPU, what offload keeps in CPU memory
    notes: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> float:
        return sum(item.bytes for item in self.items)

    @property
    def capacity_bytes(self) -> float:
        return self.gpu_memory_gb * GB

    @property
    def headroom_bytes(self) -> float:
        return self.capacity_bytes - self.total_bytes

    @property
    def fits(self) -> bool:
        return self.headroom_bytes >= 0

    @property
    def offload(self) -> bool:
        return self.sharding == "zero3-offload"

    def item(self, key: str) -> LineItem:
        return next(item for item in self.items if item.key == key)

    def summary(self) -> str:
        return (
            f"{self.method}, seq len {self.seq_len}, micro-batch {self.micro_batch}, rank {self.rank}, "
            f"{_sharding_text(self.sharding)}: {_gb(self.total_bytes)} per GPU"
        )

    def render(self) -> str:
        spec = self.spec
        model = (
            f"{spec.name}: {_count(spec.params)} params, {spec.num_layers} layers, {spec.num_experts} experts "
            f"top-{spec.top_k}, LoRA targets {', '.join(spec.lora_targets(self.method))}"
        )
        setup = (
            f"{self.method} rank {self.rank}, {_gpus(self.gpus)} x {self.gpu_memory_gb:g} GB, seq len {self.seq_len}, "
            f"micro-batch {self.micro_batch}, {_sharding_text(self.sharding)}"
        )
        lines = [model, setup, "per GPU, estimates; GB = 1e9 bytes"]
        width = max(len(item.label) for item in self.items)
        arith = max(len(item.arithmetic) for item in self.items)
        for item in self.items:
            lines.append(f"  {item.label:<{width}}  {item.arithmetic:<{arith}} = {_gb(item.bytes):>9}")
        lines.append(f"  {'total':<{width}}  {'':<{arith}} = {_gb(self.total_bytes):>9}")
        if self.fits:
            lines.append(f"fits: {_gb(self.headroom_bytes)} headroom of {self.gpu_memory_gb:g} GB per GPU")
        else:
            lines.append(
                f"does not fit: {_gb(-self.headroom_bytes)} over {self.gpu_memory_gb:g} GB per GPU "
                f"(headroom {_gb(self.headroom_bytes)})"
            )
        if self.host_bytes:
            lines.append(f"CPU offload keeps {_gb(self.host_bytes)} per GPU in host memory")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "model": asdict(self.spec),
            "params": self.spec.params,
            "lora_params": self.spec.lora_params(self.rank, self.method),
            "gpus": self.gpus,
            "gpu_memory_gb": self.gpu_memory_gb,
            "unit": "GB = 1e9 bytes",
            "seq_len": self.seq_len,
            "method": self.method,
            "rank": self.rank,
            "micro_batch": self.micro_batch,
            "sharding": self.sharding,
            "offload": self.offload,
            "items": [asdict(item) for item in self.items],
            "total_bytes": self.total_bytes,
            "capacity_bytes": self.capacity_bytes,
            "headroom_bytes": self.headroom_bytes,
            "host_bytes": self.host_bytes,
            "fits": self.fits,
            "notes": list(self.notes),
        }


def plan(
    spec: ModelSpec,
    gpus: int,
    gpu_memory_gb: float,
    seq_len: int,
    method: Method = "lora",
    rank: int = 16,
    micro_batch: int = 1,
    sharding: Sharding = "zero3",
) -> Plan:
    """Per-GPU memory of LoRA fine-tuning `spec`, line by line (formulas in the module docstring)."""
    _check(spec, gpus, gpu_memory_gb, seq_len, method, rank, micro_batch, sharding)
    h, f, k, v = spec.hidden_size, spec.intermediate_size, spec.top_k, spec.vocab_size
    b, s, n = micro_batch, seq_len, gpus
    shard = 1 if sharding == "none" else n
    offload = sharding == "zero3-offload"
    host = " (on host)" if offload else ""
    items: list[LineItem] = []

    def add(key: str, label: str, size: float, arithmetic: str) -> None:
        items.append(LineItem(key, label, float(size), arithmetic))

    weights = sum(m.weight_bytes(method) for m in spec.matrices(method))
    add("weights", "weights", 0 if offload else weights / shard, _weights_text(spec, method, shard) + host)

    layer = spec.layer_matrices(method)
    layer_params, layer_bytes = sum(m.params for m in layer), sum(m.weight_bytes(method) for m in layer)
    if shard > 1:
        per_param = layer_bytes / layer_params
        add(
            "gathered_layer",
            "gathered layer",
            layer_bytes,
            f"1 layer: {_count(layer_params)} params x {per_param:.2f} B",
        )
    else:
        add("gathered_layer", "gathered layer", 0, "none: every GPU holds all the weights")

    experts_targeted = any(m.lora for m in layer if m.kind == "expert")
    if "expert" in QUANTISED_KINDS[method]:
        working_set, arithmetic = 3 * h * f * 2, f"1 expert x 3 x {h} x {f} x 2 B (dequantised one at a time)"
    else:
        beside = ", LoRA beside them" if experts_targeted else ""
        working_set, arithmetic = 0, f"none: the experts are used in place{beside}"
    add("expert_working_set", "expert working set", working_set, arithmetic)

    lora = spec.lora_params(rank, method)
    arithmetic = f"{_count(lora)} params x 16 B (fp32 param, grad, m, v) / {_gpus(shard)}{host}"
    add("lora", "LoRA + grads + Adam", 0 if offload else lora * 16 / shard, arithmetic)

    layers = spec.num_layers
    add("layer_inputs", "layer inputs (ckpt)", layers * b * s * h * 2, f"{layers} layers x {b} x {s} x {h} x 2 B")
    if spec.eager_attention:
        heads = spec.num_heads
        arithmetic = f"{b} x {heads} heads x {s}^2 x (4 + 4 + 2) B (fp32 logits, softmax, bf16 copy; eager)"
        add("attention", "attention recompute", b * heads * s * s * (4 + 4 + 2), arithmetic)
    else:
        width = (2 * spec.num_heads + 2 * spec.num_kv_heads) * spec.head_dim
        arithmetic = f"{b} x {s} x (2 x {spec.num_heads} + 2 x {spec.num_kv_heads}) x {spec.head_dim} x 2 B (sdpa)"
        add("attention", "attention recompute", b * s * width * 2, arithmetic)
    add(
        "moe",
        "MoE recompute",
        b * s * k * (3 * f + 2 * h) * 2,
        f"{b} x {s} tokens x top-{k} x (3 x {f} + 2 x {h}) x 2 B",
    )
    add("logits", "logits", b * s * v * 4 * 2, f"{b} x {s} x {v} vocab x 4 B x 2 (fp32 + grad)")

    subtotal = sum(item.bytes for item in items)
    add(
        "allowance",
        "CUDA + fragmentation",
        FIXED_ALLOWANCE + FRAGMENTATION * subtotal,
        f"2 GB + 10% of {_gb(subtotal)}",
    )

    notes = []
    if method == "qlora":
        notes.append(
            "bitsandbytes quantises nn.Linear only: the fused experts stay bf16; "
            "NF4 double quantisation ignored (absmax counted as fp32)"
        )
    host_bytes = (weights + lora * 16) / n if offload else 0.0
    return Plan(
        spec, gpus, gpu_memory_gb, seq_len, method, rank, micro_batch, sharding, tuple(items), host_bytes, tuple(notes)
    )


def suggest(
    spec: ModelSpec,
    gpus: int,
    gpu_memory_gb: float,
    seq_len: int,
    rank: int = 16,
    micro_batch: int = 1,
    methods: Sequence[Method] = METHODS,
) -> Plan | None:
    """The first ZeRO-3 plan without offload that fits, or None.

    Tries `methods` in order (those the model has), and for each the requested seq len then halves down to 512, and for each the
    requested micro-batch then halves down to 1: a smaller micro-batch costs nothing that gradient accumulation
    cannot give back, a shorter sequence changes the training data, a coarser quantisation the model.
    """
    for method in (m for m in methods if m in spec.methods()):
        for seq in _halvings(seq_len, MIN_SUGGESTED_SEQ_LEN):
            for batch in _halvings(micro_batch, 1):
                candidate = plan(spec, gpus, gpu_memory_gb, seq, method, rank, batch, "zero3")
                if candidate.fits:
                    return candidate
    return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help=f"{', '.join(BUILTIN)} or a model directory with config.json")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs to shard over (default 8)")
    parser.add_argument("--gpu-memory", type=float, default=80.0, help="memory per GPU in GB = 1e9 bytes (default 80)")
    parser.add_argument("--seq-len", type=int, default=4096, help="tokens per sequence (default 4096)")
    parser.add_argument("--method", choices=METHODS, default="lora", help="frozen weights in bf16, int8 or NF4")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16)")
    parser.add_argument("--micro-batch", type=int, default=1, help="sequences per GPU per step (default 1)")
    parser.add_argument(
        "--sharding", choices=SHARDINGS, default="zero3", help="ZeRO-3 full shard (default), with CPU offload, or none"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    """Print the plan; 0 if it fits, 1 if not (with a configuration that fits without offload), 2 on bad input."""
    try:
        spec = spec_for(args.model)
        requested = plan(
            spec, args.gpus, args.gpu_memory, args.seq_len, args.method, args.rank, args.micro_batch, args.sharding
        )
    except PlanError as err:
        print(f"finetune plan: {err}", file=sys.stderr)
        return 2
    suggestion, alternatives = None, []
    if not requested.fits:
        suggestion = suggest(spec, args.gpus, args.gpu_memory, args.seq_len, args.rank, args.micro_batch)
        # The first fit trades sequence length for precision; the other methods' best fits show the other trade.
        others = [m for m in spec.methods() if suggestion and m != suggestion.method]
        found = (
            suggest(spec, args.gpus, args.gpu_memory, args.seq_len, args.rank, args.micro_batch, (m,)) for m in others
        )
        alternatives = [alternative for alternative in found if alternative]
    if args.json:
        report = requested.to_dict()
        report["suggestion"] = suggestion.to_dict() if suggestion else None
        report["alternatives"] = [alternative.to_dict() for alternative in alternatives]
        print(json.dumps(report, indent=2))
    elif suggestion:
        print(requested.render())
        print(f"\nFits without offload: {suggestion.summary()}")
        for alternative in alternatives:
            print(f"Also fits without offload: {alternative.summary()}")
        print(f"\n{suggestion.render()}")
    else:
        print(requested.render())
        if not requested.fits:
            print(
                f"\nNothing fits without offload on {args.gpus} x {args.gpu_memory:g} GB down to seq len "
                f"{MIN_SUGGESTED_SEQ_LEN} and micro-batch 1: add GPUs or use --sharding zero3-offload"
            )
    return 0 if requested.fits else 1


def _check(spec, gpus, gpu_memory_gb, seq_len, method, rank, micro_batch, sharding) -> None:
    if not isinstance(gpus, int) or gpus < 1:
        raise PlanError(f"--gpus must be at least 1, got {gpus}")
    if not gpu_memory_gb > 0:
        raise PlanError(f"--gpu-memory must be more than 0 GB, got {gpu_memory_gb}")
    if not isinstance(seq_len, int) or seq_len < 1:
        raise PlanError(f"--seq-len must be at least 1, got {seq_len}")
    if seq_len > spec.max_positions:
        raise PlanError(
            f"--seq-len {seq_len} is over {spec.name}'s max_position_embeddings {spec.max_positions}: "
            f"use at most {spec.max_positions}"
        )
    if method not in spec.methods():
        raise PlanError(f"--method {method} is not available for {spec.name}: use one of {', '.join(spec.methods())}")
    if not isinstance(rank, int) or rank < 1:
        raise PlanError(f"--rank must be at least 1, got {rank}")
    if not isinstance(micro_batch, int) or micro_batch < 1:
        raise PlanError(f"--micro-batch must be at least 1, got {micro_batch}")
    if sharding not in SHARDINGS:
        raise PlanError(f"--sharding must be one of {', '.join(SHARDINGS)}, got {sharding!r}")


def _weights_text(spec: ModelSpec, method: Method, shard: int) -> str:
    total = spec.params
    if method == "lora":
        return f"{_count(total)} params x 2 B / {_gpus(shard)}"
    matrices = spec.matrices(method)
    quantised = sum(m.params for m in matrices if m.kind in QUANTISED_KINDS[method])
    rest = f"{_count(total - quantised)} x 2 B (bf16)"
    if method == "int8-lora":
        scales = sum(m.experts * m.out_features * m.int8_blocks for m in matrices if m.kind in QUANTISED_KINDS[method])
        return f"({_count(quantised)} x 1 B (int8) + {_count(scales)} scales x 2 B + {rest}) / {_gpus(shard)}"
    return f"({_count(quantised)} x (0.5 + 4/{NF4_BLOCK}) B (nf4 + absmax) + {rest}) / {_gpus(shard)}"


def _gpus(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def _halvings(start: int, floor: int) -> list[int]:
    values = [start]
    while values[-1] // 2 >= floor:
        values.append(values[-1] // 2)
    return values


def _sharding_text(sharding: Sharding) -> str:
    return {
        "zero3": "FSDP full shard (ZeRO-3)",
        "zero3-offload": "full shard + CPU offload",
        "none": "no sharding",
    }[sharding]


def _count(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.1f}e9"
    if n >= 1e6:
        return f"{n / 1e6:.1f}e6"
    return f"{n:g}"


def _gb(n: float) -> str:
    return f"{n / GB:.2f} GB"
