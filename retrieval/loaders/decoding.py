"""Bytes of a text-like file (plain text, Markdown, CSV, RTF, EML) to ``str``."""

from __future__ import annotations

import codecs
import re

import charset_normalizer

from .errors import LoadError

BINARY_REASON = "not a text file: the bytes are binary or in an unknown encoding"
_ADVICE = "; if it is text, save it as UTF-8, otherwise leave it out"
_NUL_REASON = f"{BINARY_REASON} (it holds NUL bytes){_ADVICE}"

# BOMs that decide the encoding outright; UTF-32 first because its LE BOM starts like UTF-16's.
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Control characters that never occur in real text (tab, newlines, form feed excluded).
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f\ufffd]")
_SAMPLE_CHARS = 64 * 1024
_MAX_CONTROL_SHARE = 0.05
# UTF-16 without a BOM, as some Windows tools write it: text in Latin scripts has a NUL in (nearly) every
# other byte, and almost none in the bytes between.
_UTF16_MIN_NUL_SHARE = 0.7
_UTF16_MAX_OTHER_NUL_SHARE = 0.05


def refuse_binary(data: bytes) -> None:
    """Cheap check for formats whose parser decodes by itself (HTML): NUL bytes mean binary."""
    if b"\x00" in data[:_SAMPLE_CHARS] and not any(data.startswith(bom) for bom, _ in _BOMS):
        raise LoadError(_NUL_REASON)


def decode_text(data: bytes) -> str:
    """Decode as UTF-8 (BOM-aware), else charset-normalizer's best guess; refuse binary."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return _checked(data.decode(encoding))
            except UnicodeDecodeError:
                raise LoadError(BINARY_REASON + _ADVICE) from None
    if b"\x00" in data:
        text = _utf16_without_bom(data)
        if text is None:
            raise LoadError(_NUL_REASON)
        return _checked(text)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        best = charset_normalizer.from_bytes(data).best()
        if best is None:
            raise LoadError(BINARY_REASON + _ADVICE) from None
        text = str(best)
    return _checked(text)


def _utf16_without_bom(data: bytes) -> str | None:
    if len(data) % 2:
        return None  # UTF-16 is two bytes a code unit
    sample = data[: _SAMPLE_CHARS * 2]
    even, odd = sample[0::2], sample[1::2]
    shares = (even.count(0) / len(even), odd.count(0) / len(odd))
    for encoding, nul_share, other_share in (("utf-16-le", shares[1], shares[0]), ("utf-16-be", shares[0], shares[1])):
        if nul_share >= _UTF16_MIN_NUL_SHARE and other_share <= _UTF16_MAX_OTHER_NUL_SHARE:
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                return None
    return None


def _checked(text: str) -> str:
    sample = text[:_SAMPLE_CHARS]
    if sample and len(_CONTROL.findall(sample)) > _MAX_CONTROL_SHARE * len(sample):
        raise LoadError(BINARY_REASON + _ADVICE)
    return text
