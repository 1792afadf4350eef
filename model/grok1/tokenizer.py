"""Grok-1's SentencePiece `tokenizer.model` -> a transformers fast tokenizer, saved next to the weights.

The conversion goes through transformers' `SpmConverter` (offline: it reads the model proto), with byte fallback
kept, so ids match SentencePiece's own. `check_round_trip` proves that on sample text before anything is saved.
"""

from __future__ import annotations

import shutil
import types
from pathlib import Path

# Text the conversion is checked on: plain words, repeated and leading spaces, digits, punctuation, newlines,
# accented and CJK characters (byte fallback), and an empty string.
DEFAULT_SAMPLES = (
    "The answer to life the universe and everything is of course",
    "  two  leading spaces, then   three",
    "numbers 12345 and 3.14159; punctuation: (a) [b] {c}!?",
    "line one\nline two\n\ttabbed",
    "Ünïcödé façade naïve — 数据 東京 ✓ 🙂",
    "",
)


def _converter_class():
    from tokenizers import Tokenizer, decoders
    from tokenizers.models import BPE
    from transformers.convert_slow_tokenizer import SentencePieceExtractor, SpmConverter

    class _GrokSpmConverter(SpmConverter):
        # SentencePiece falls back to <0xNN> byte pieces for unknown characters; keep that behaviour.
        handle_byte_fallback = True

        def tokenizer(self, proto):
            if proto.trainer_spec.model_type != 2:  # Unigram: the stock conversion is right
                return super().tokenizer(proto)
            # BPE: transformers 5.23's SpmConverter passes the wrong argument to its extractor, so build it here.
            extracted = SentencePieceExtractor(self.original_tokenizer.vocab_file).extract(BPE)
            tokenizer = Tokenizer(
                BPE(
                    extracted["vocab"],
                    extracted["merges"],
                    unk_token=proto.trainer_spec.unk_piece,
                    fuse_unk=True,
                    byte_fallback=True,
                    dropout=None,
                )
            )
            tokenizer.add_tokens(extracted["additional_special_tokens"])
            return tokenizer

        def decoder(self, replacement, add_prefix_space):
            # Metaspace alone would print byte pieces as "<0xNN>"; fuse them back into UTF-8 as SentencePiece does,
            # and drop the one space the encoder prepended.
            return decoders.Sequence(
                [
                    decoders.Replace(replacement, " "),
                    decoders.ByteFallback(),
                    decoders.Fuse(),
                    decoders.Strip(content=" ", left=1, right=0),
                ]
            )

    return _GrokSpmConverter


def build_fast_tokenizer(model_file: str | Path):
    """A `PreTrainedTokenizerFast` equivalent to the SentencePiece model `model_file`."""
    import sentencepiece
    from transformers import PreTrainedTokenizerFast

    model_file = Path(model_file)
    if not model_file.is_file():
        raise FileNotFoundError(f"tokenizer model {model_file} not found; pass the release's tokenizer.model")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    stub = types.SimpleNamespace(vocab_file=str(model_file), add_prefix_space=True, legacy=True)
    backend = _converter_class()(stub).converted()

    def piece(index: int) -> str | None:
        return sp.id_to_piece(index) if 0 <= index < sp.get_piece_size() else None

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token=piece(sp.unk_id()),
        bos_token=piece(sp.bos_id()),
        eos_token=piece(sp.eos_id()),
        pad_token=piece(sp.pad_id()),
        clean_up_tokenization_spaces=False,
    )


def check_round_trip(tokenizer, model_file: str | Path, samples=DEFAULT_SAMPLES) -> None:
    """Raise ValueError unless `tokenizer` encodes and decodes every sample exactly as SentencePiece does."""
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
    for text in samples:
        ids, expected = tokenizer.encode(text, add_special_tokens=False), sp.encode(text)
        if ids != expected:
            raise ValueError(f"converted tokenizer encodes {text!r} as {ids}, SentencePiece as {expected}")
        decoded, expected_text = tokenizer.decode(ids), sp.decode(expected)
        if decoded != expected_text:
            raise ValueError(f"converted tokenizer decodes {text!r} to {decoded!r}, SentencePiece to {expected_text!r}")


def convert_tokenizer(model_file: str | Path, out_dir: str | Path, samples=DEFAULT_SAMPLES):
    """Convert, check against SentencePiece, and save into `out_dir` (with a copy of `tokenizer.model`)."""
    tokenizer = build_fast_tokenizer(model_file)
    check_round_trip(tokenizer, model_file, samples)
    out_dir = Path(out_dir)
    tokenizer.save_pretrained(out_dir)
    # The original model too: sentencepiece-based tools (llama.cpp, vLLM's slow path) read it directly.
    shutil.copyfile(model_file, out_dir / "tokenizer.model")
    return tokenizer
