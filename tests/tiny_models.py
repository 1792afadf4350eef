"""Tiny random Grok-1 and Mixtral checkpoints with a real (tiny) tokenizer, written as model directories.

The fine-tuning tests need whole model directories (config.json + safetensors + tokenizer) the way an operator
has them; these are the smallest ones that still route tokens through several experts.
"""

from __future__ import annotations

from pathlib import Path

import torch

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
VOCAB = 512
SPECIAL = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3: pad, bos, eos, unk


def _corpus() -> list[str]:
    lines = []
    for path in sorted(SAMPLES.rglob("*.md")):
        lines += [line for line in path.read_text().splitlines() if line.strip()]
    return lines


def write_tokenizer(directory: Path, vocab_size: int = VOCAB):
    """A byte-level BPE trained on the sample Markdown, saved as tokenizer.json + tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(directory)
    return fast


SHAPE = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 256,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "initializer_range": 0.1,  # wide enough that a few dozen LoRA steps visibly move the loss
}


def grok1_config(**overrides):
    from model.grok1 import Grok1Config

    return Grok1Config(**{**SHAPE, "num_experts": 4, "embedding_multiplier_scale": 1.0, **overrides})


def mixtral_config(**overrides):
    from transformers import MixtralConfig

    return MixtralConfig(**{**SHAPE, "num_local_experts": 4, "tie_word_embeddings": False, **overrides})


def dbrx_config(**overrides):
    from transformers import DbrxConfig

    values = {
        "d_model": 32,
        "n_heads": 4,
        "n_layers": 2,
        "max_seq_len": 128,
        "vocab_size": 256,
        # As in DBRX's released config.json: transformers 5.23 reads rope_theta from attn_config and has no default;
        # clip_qkv is set because PEFT fails on DBRX without it.
        "attn_config": {"clip_qkv": 8, "kv_n_heads": 2, "rope_theta": 500000.0},
        "ffn_config": {"ffn_hidden_size": 48, "moe_num_experts": 4, "moe_top_k": 2},
    }
    return DbrxConfig(**{**values, **overrides})


def write_model(directory: str | Path, kind: str = "grok-1", seed: int = 0, dtype=torch.float32, **overrides) -> Path:
    """Write a random `kind` ("grok-1" or "mixtral") model and the tiny tokenizer to `directory`."""
    from transformers import MixtralForCausalLM

    from model.grok1 import Grok1ForCausalLM

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    if kind == "grok-1":
        model = Grok1ForCausalLM(grok1_config(**overrides))
    elif kind == "mixtral":
        model = MixtralForCausalLM(mixtral_config(**overrides))
    else:
        raise ValueError(f"unknown tiny model kind {kind!r}")
    model.to(dtype).save_pretrained(directory)
    write_tokenizer(directory)
    return directory
