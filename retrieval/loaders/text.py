"""Plain text and RTF: one section each."""

from __future__ import annotations

from pathlib import Path

from llama_index.core import Document
from striprtf.striprtf import rtf_to_text

from .decoding import decode_text
from .errors import LoadError
from .sections import Section, tidy, to_documents

NO_TEXT_REASON = "no text: the file holds only whitespace"
RTF_NO_TEXT_REASON = "no text: the RTF holds only formatting"


def load_text(path: Path) -> list[Document]:
    text = decode_text(path.read_bytes())
    return to_documents([Section(text=text)], empty_reason=NO_TEXT_REASON)


def load_rtf(path: Path) -> list[Document]:
    source = decode_text(path.read_bytes())
    if not source.lstrip().startswith("{\\rtf"):
        raise LoadError(
            "not a readable RTF: it does not start with {\\rtf, so it is another format "
            "renamed to .rtf; re-save it as RTF"
        )
    # striprtf drops control words and keeps text; RTF layout is not worth a full parser here.
    text = rtf_to_text(source, errors="ignore")
    return to_documents([Section(text=tidy(text))], empty_reason=RTF_NO_TEXT_REASON)
