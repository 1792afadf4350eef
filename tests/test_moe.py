"""The routed MoE compute (model/experts.py) against the plain way of computing the same layer, forward and
backward: float experts by both implementations, LoRA on the fused experts against PEFT's own wrapper, int8 experts
against their dequantised values, and the int8 decode kernel."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import ParamWrapper

from model import experts as routed
from model.grok1.configuration import Grok1Config
from model.grok1.int8 import dequantize_int8
from model.grok1.modeling import Grok1MoE
from model.lora import LoraRoutedExperts, register_lora_layers

HIDDEN, FFN, EXPERTS, TOP_K = 32, 48, 8, 2
EXPERT_TARGETS = ["experts.gate_up_proj", "experts.down_proj"]


def moe_layer(seed: int = 3, **config) -> Grok1MoE:
    torch.manual_seed(seed)
    cfg = Grok1Config(
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
        vocab_size=64,
        **config,
    )
    return with_random_weights(Grok1MoE(cfg))


def with_random_weights(module: torch.nn.Module) -> torch.nn.Module:
    """Each float matrix N(0, 1/fan_in), so activations keep their size; int8 experts are filled by int8_moe."""
    with torch.no_grad():
        for parameter in module.parameters():
            if parameter.is_floating_point():
                parameter.normal_(0.0, parameter.shape[-1] ** -0.5)
    return module


def plain_moe(moe: Grok1MoE, x: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """Every expert on every token with the given weights, a token's gate zero for the experts it did not pick."""
    flat = x.reshape(-1, x.shape[-1])
    probs = torch.softmax(moe.router(flat).float(), dim=-1)
    weights, index = torch.topk(probs, TOP_K, dim=-1)
    gates = torch.zeros_like(probs).scatter(-1, index, weights).to(x.dtype)
    out = torch.zeros_like(flat)
    for e in range(EXPERTS):
        gate, up = F.linear(flat, gate_up[e]).chunk(2, dim=-1)
        out = out + F.linear(F.gelu(gate, approximate="tanh") * up, down[e]) * gates[:, e, None]
    return out.reshape(x.shape)


def outputs_and_grads(module: torch.nn.Module, compute, x: torch.Tensor) -> list[torch.Tensor]:
    module.zero_grad(set_to_none=True)
    leaf = x.clone().requires_grad_(True)
    out = compute(leaf)
    out.square().sum().backward()
    grads = {name: p.grad for name, p in module.named_parameters() if p.requires_grad}
    return [out.detach(), leaf.grad, *(grads[name] for name in sorted(grads))]


def assert_all_close(got: list[torch.Tensor], want: list[torch.Tensor], tol: float = 1e-5) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@pytest.mark.parametrize("implementation", ["loop", "grouped_mm"])
def test_routed_experts_match_computing_every_expert_forward_and_backward(implementation):
    """fp32 within 1e-5: output, and the gradients of the input, the router and both expert matrices."""
    moe = moe_layer(moe_implementation=implementation)
    x = torch.randn(3, 40, HIDDEN)
    experts = moe.experts
    got = outputs_and_grads(moe, lambda t: moe(t)[0], x)
    want = outputs_and_grads(moe, lambda t: plain_moe(moe, t, experts.gate_up_proj, experts.down_proj), x)
    assert_all_close(got, want)


@pytest.mark.parametrize("implementation", ["loop", "grouped_mm"])
def test_an_expert_no_token_chose_gets_no_work_and_a_zero_gradient(implementation):
    moe = moe_layer(moe_implementation=implementation)
    with torch.no_grad():
        moe.router.weight[5] = -1.0  # expert 5 scores far below the others...
    x = torch.randn(64, HIDDEN).abs()  # ...for positive inputs
    routing = routed.Routing.from_top_k(torch.topk(moe.router(x), TOP_K, dim=-1).indices, EXPERTS)
    assert routing.counts[5] == 0
    got = outputs_and_grads(moe, lambda t: moe(t)[0], x)
    want = outputs_and_grads(moe, lambda t: plain_moe(moe, t, moe.experts.gate_up_proj, moe.experts.down_proj), x)
    assert_all_close(got, want)
    assert not moe.experts.gate_up_proj.grad[5].any() and not moe.experts.down_proj.grad[5].any()


def with_lora(moe: Grok1MoE, ours: bool, rank: int = 4) -> torch.nn.Module:
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_parameters=EXPERT_TARGETS, init_lora_weights=False)
    if ours:
        register_lora_layers(config)
    torch.manual_seed(11)  # the same random A and B for both
    return get_peft_model(copy.deepcopy(moe), config)


@pytest.mark.parametrize("implementation", ["loop", "grouped_mm"])
def test_expert_lora_matches_peft_merging_the_update_forward_and_backward(implementation):
    """LoRA through the factors beside the routed experts computes what PEFT's own wrapper computes by adding
    B @ A to the whole expert stack: the output and the gradients of the input and of every LoRA matrix."""
    moe = moe_layer(moe_implementation=implementation)
    ours, peft_default = with_lora(moe, ours=True), with_lora(moe, ours=False)
    wrapper = ours.base_model.model.experts
    assert isinstance(wrapper, LoraRoutedExperts) and isinstance(wrapper.base_layer, LoraRoutedExperts)
    assert type(peft_default.base_model.model.experts) is ParamWrapper
    # The same adapter: PEFT's own names, so saving, loading and the vLLM export are unchanged.
    assert ours.state_dict().keys() == peft_default.state_dict().keys()
    x = torch.randn(2, 30, HIDDEN)
    got = outputs_and_grads(ours, lambda t: ours(t)[0], x)
    want = outputs_and_grads(peft_default, lambda t: peft_default(t)[0], x)
    assert len(got) == 2 + 4  # output, input, and A and B of both fused parameters
    assert_all_close(got, want)
    assert any(g.abs().sum() > 0 for g in got[2:])

    with ours.disable_adapter():
        torch.testing.assert_close(ours(x)[0], moe(x)[0], rtol=0, atol=0)


def saved_for_backward(compute) -> list[torch.Tensor]:
    saved = []

    def keep(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        compute()
    return saved


_MATRICES = {(2 * FFN, HIDDEN), (HIDDEN, FFN)}
# An expert stack or one expert's matrix, either way round (autograd may keep a transposed view).
WEIGHT_SHAPES = {*_MATRICES, *(m[::-1] for m in _MATRICES), *((EXPERTS, *m) for m in _MATRICES)}


def float_weights_kept(saved: list[torch.Tensor]) -> list[tuple[int, ...]]:
    """The float tensors autograd keeps that are shaped like an expert stack or one expert's matrix."""
    return [tuple(t.shape) for t in saved if t.is_floating_point() and tuple(t.shape) in WEIGHT_SHAPES]


def test_expert_lora_never_builds_the_updated_weights():
    """PEFT's own wrapper keeps W + B @ A of the whole stack for the backward; ours keeps no updated weight at all,
    only the frozen experts it uses in place."""
    moe = moe_layer()
    x = torch.randn(2, 30, HIDDEN, requires_grad=True)  # 120 pairs: no activation is shaped like a weight
    for ours in (True, False):
        model = with_lora(moe, ours=ours)
        base = model.base_model.model.experts.get_base_layer()
        frozen = {base.gate_up_proj.data_ptr(), base.down_proj.data_ptr()}
        saved = saved_for_backward(lambda m=model: m(x)[0].sum())
        built = [t for t in saved if t.is_floating_point() and tuple(t.shape) in WEIGHT_SHAPES]
        built = [t for t in built if t.untyped_storage().data_ptr() not in frozen]
        assert bool(built) != ours, (ours, [tuple(t.shape) for t in built])


def int8_moe(seed: int = 5, blocks: int = 8) -> Grok1MoE:
    """A MoE layer whose experts are int8 + bf16 scales, `blocks` scale blocks along down_proj's input."""
    moe = moe_layer(seed, quantization="int8", quantization_blocks={"down_proj": blocks})
    generator = torch.Generator().manual_seed(seed)
    experts = moe.experts
    with torch.no_grad():
        for name in ("gate_up_proj", "down_proj"):
            getattr(experts, name).copy_(torch.randint(-127, 128, getattr(experts, name).shape, generator=generator))
            scale = getattr(experts, f"{name}_scale")
            # int8 values up to 127 times scales near 1 / (127 sqrt(in)): weights of the size a trained layer has
            in_dim = getattr(experts, name).shape[-1]
            scale.copy_((torch.rand(scale.shape, generator=generator) + 0.5) / (127 * in_dim**0.5))
    return moe


def dequantised(moe: Grok1MoE, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    e = moe.experts
    return (
        dequantize_int8(e.gate_up_proj, e.gate_up_proj_scale, dtype),
        dequantize_int8(e.down_proj, e.down_proj_scale, dtype),
    )


def test_int8_experts_match_their_dequantised_values_forward_and_backward():
    moe = int8_moe()
    x = torch.randn(2, 24, HIDDEN)
    gate_up, down = dequantised(moe)
    got = outputs_and_grads(moe, lambda t: moe(t)[0], x)
    want = outputs_and_grads(moe, lambda t: plain_moe(moe, t, gate_up, down), x)
    assert_all_close(got, want)


def test_int8_experts_keep_no_dequantised_copy_for_the_backward():
    """Each routed expert is dequantised in the forward and again in the backward; autograd holds only int8."""
    moe = int8_moe()
    x = torch.randn(2, 25, HIDDEN, requires_grad=True)
    saved = saved_for_backward(lambda: moe(x)[0].sum())
    assert not float_weights_kept(saved)
    assert any(t.dtype == torch.int8 for t in saved)


def test_lora_on_int8_experts_matches_lora_on_their_dequantised_values():
    """LoRA on int8 experts, which PEFT's own wrapper cannot do (it would add the update to int8 values): the same
    outputs and LoRA gradients as the same adapter on a float copy of the dequantised experts."""
    quantised = int8_moe()
    floating = moe_layer(5)
    gate_up, down = dequantised(quantised)
    with torch.no_grad():
        floating.router.weight.copy_(quantised.router.weight)
        floating.experts.gate_up_proj.copy_(gate_up)
        floating.experts.down_proj.copy_(down)
    on_int8, on_float = with_lora(quantised, ours=True), with_lora(floating, ours=True)
    x = torch.randn(2, 24, HIDDEN)
    got = outputs_and_grads(on_int8, lambda t: on_int8(t)[0], x)
    want = outputs_and_grads(on_float, lambda t: on_float(t)[0], x)
    assert_all_close(got, want)
    assert on_int8.base_model.model.experts.get_param().dtype == torch.int8


def test_merging_expert_lora_into_int8_is_refused_and_into_float_changes_nothing():
    on_int8 = with_lora(int8_moe(), ours=True)
    with pytest.raises(ValueError, match="int8"):
        on_int8.merge_and_unload()
    on_float = with_lora(moe_layer(), ours=True)
    x = torch.randn(20, HIDDEN)
    with torch.no_grad():
        before = on_float(x)[0]
        merged = on_float.merge_and_unload()
        assert type(merged.experts).__name__ == "Grok1Experts"
        torch.testing.assert_close(merged(x)[0], before, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not routed._has_int8_kernel("cpu"), reason="this torch build has no CPU int8 weight-only matmul")
@pytest.mark.parametrize("blocks", [1, 8])
@pytest.mark.parametrize("rows", [1, 2])
def test_int8_decode_kernel_matches_dequantising(blocks, rows):
    generator = torch.Generator().manual_seed(blocks * 10 + rows)
    out_dim, in_dim = 96, 256
    weight = torch.randint(-127, 128, (out_dim, in_dim), dtype=torch.int8, generator=generator)
    scale = (torch.rand(out_dim, blocks, generator=generator) * 0.01 + 1e-3).bfloat16()
    x = torch.randn(rows, in_dim, generator=generator).bfloat16()
    assert routed._int8_kernel_applies(x, weight, scale)
    want = x.float() @ dequantize_int8(weight, scale, torch.float32).T
    got = routed.int8_weight_only_mm(x, weight, scale)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2 * want.abs().max().item())


def test_int8_decode_kernel_is_used_only_where_it_is_right():
    weight = torch.zeros(96, 256, dtype=torch.int8)
    one_block, eight_blocks = torch.ones(96, 1).bfloat16(), torch.ones(96, 8).bfloat16()
    token = torch.zeros(1, 256).bfloat16()
    assert not routed._int8_kernel_applies(token.float(), weight, one_block)  # fp32: dequantising is faster
    assert not routed._int8_kernel_applies(torch.zeros(17, 256).bfloat16(), weight, one_block)  # prefill
    assert not routed._int8_kernel_applies(torch.zeros(3, 256).bfloat16(), weight, eight_blocks)  # 3 x 8 rows
    narrow = torch.zeros(96, 8 * 12, dtype=torch.int8)  # 12-wide blocks: the kernel would sum them wrongly
    assert not routed._int8_kernel_applies(torch.zeros(1, 96).bfloat16(), narrow, eight_blocks)


@pytest.mark.skipif(not routed._has_int8_kernel("cpu"), reason="this torch build has no CPU int8 weight-only matmul")
def test_bf16_decode_through_the_int8_kernel_matches_dequantising(monkeypatch):
    """A whole int8 layer at decode (one token) in bf16: the kernel path against dequantising, bf16 tolerance."""
    moe = int8_moe(blocks=1)  # down_proj's 48-wide input in 8 blocks would be too narrow for the kernel
    moe.router.to(torch.bfloat16)
    x = torch.randn(1, HIDDEN).bfloat16()
    kernel_calls = []
    kernel = routed.int8_weight_only_mm
    monkeypatch.setattr(routed, "int8_weight_only_mm", lambda *a: kernel_calls.append(1) or kernel(*a))
    with torch.no_grad():
        got = moe(x)[0]
        assert len(kernel_calls) == 3 * TOP_K  # gate, up and down of each of the token's experts
        gate_up, down = dequantised(moe, torch.bfloat16)
        want = plain_moe(moe, x, gate_up, down)
    torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2 * want.abs().max().item())


@pytest.mark.parametrize("implementation", ["loop", "grouped_mm"])
def test_bf16_experts_with_lora_match_fp32_within_bf16_tolerance(implementation):
    """The same experts and adapter in bf16 (as on a GPU) against fp32, forward and backward, on the same routing:
    the bf16 paths cast, accumulate and combine where they should (gates and the k-sum in fp32, fp32 LoRA weights on
    a bf16 base)."""
    fp32 = with_lora(moe_layer(moe_implementation=implementation), ours=True, rank=8)  # grouped_mm: 16-byte rows
    bf16 = copy.deepcopy(fp32)
    bf16.base_model.model.experts.get_base_layer().to(torch.bfloat16)  # the experts in bf16; LoRA weights stay fp32

    def experts_in(model, dtype):
        def run(x):
            moe = model.base_model.model
            flat = x.reshape(-1, HIDDEN)
            weights, index = torch.topk(torch.softmax(moe.router(flat), dim=-1), TOP_K, dim=-1)
            return moe.experts(flat.to(dtype), index, weights).float().reshape(x.shape)

        return run

    x = torch.randn(2, 30, HIDDEN)
    want = outputs_and_grads(fp32, experts_in(fp32, torch.float32), x)
    got = outputs_and_grads(bf16, experts_in(bf16, torch.bfloat16), x)
    assert len(got) == len(want) == 2 + 4  # output, input, A and B of both fused parameters
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a.float(), b, rtol=3e-2, atol=3e-2 * b.abs().max().item())


def test_grouped_mm_asked_for_on_misaligned_shapes_says_what_to_do():
    moe = with_lora(moe_layer(moe_implementation="grouped_mm"), ours=True, rank=4)  # 4 x 2 bytes: not 16
    moe.to(torch.bfloat16)
    with pytest.raises(ValueError, match=r"multiple of 16 bytes, and \[4\] do not in torch.bfloat16: use 'auto'"):
        moe(torch.randn(5, HIDDEN).bfloat16())


def mixtral_block(hidden_act: str, seed: int = 3) -> torch.nn.Module:
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    torch.manual_seed(seed)
    config = MixtralConfig(
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_local_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
        hidden_act=hidden_act,
    )
    return with_random_weights(MixtralSparseMoeBlock(config))


@pytest.mark.parametrize("hidden_act", ["silu", "gelu_pytorch_tanh", "relu"])
def test_mixtral_expert_lora_matches_peft_merging_the_update_forward_and_backward(hidden_act):
    """Mixtral's fused experts (transformers' MixtralExperts, the same layout) take the same routed LoRA; an
    activation the routed compute does not have (relu here) keeps PEFT's way, with the same results."""
    block = mixtral_block(hidden_act)
    ours, peft_default = with_lora(block, ours=True), with_lora(block, ours=False)
    assert isinstance(ours.base_model.model.experts, LoraRoutedExperts)
    assert ours.state_dict().keys() == peft_default.state_dict().keys()
    x = torch.randn(2, 30, HIDDEN)
    got = outputs_and_grads(ours, ours, x)
    want = outputs_and_grads(peft_default, peft_default, x)
    assert len(got) == 2 + 4
    assert_all_close(got, want)
    saved = saved_for_backward(lambda: ours(x.requires_grad_()).sum())
    routed_here = hidden_act != "relu"
    frozen = {p.untyped_storage().data_ptr() for p in ours.base_model.model.experts.get_base_layer().parameters()}
    built = [t for t in saved if tuple(t.shape) in WEIGHT_SHAPES and t.untyped_storage().data_ptr() not in frozen]
    assert bool(built) != routed_here  # the routed way builds no updated weight; PEFT's does
