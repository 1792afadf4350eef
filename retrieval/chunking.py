"""Sections of a file -> chunks small enough for the embedder, keeping page and heading."""

from collections.abc import Callable

from llama_index.core import Document
from llama_index.core.node_parser import SentenceSplitter


class Chunker:
    """Splits each section on sentence boundaries into chunks of at most ``chunk_size`` tokens.

    Chunks never cross sections, so every chunk keeps the page or heading it came from.
    """

    def __init__(self, count_tokens: Callable[[str], list], chunk_size: int, chunk_overlap: int):
        self._splitter = SentenceSplitter(
            chunk_size=chunk_size,
            chunk_overlap=min(chunk_overlap, chunk_size // 2),
            tokenizer=count_tokens,
            # Sections are already paragraphs of one file; a blank line is a paragraph break.
            paragraph_separator="\n\n",
        )

    def split(self, sections: list[Document]) -> list[tuple[str, dict]]:
        """(text, section metadata) per chunk, in file order."""
        chunks = []
        for section in sections:
            for text in self._splitter.split_text(section.text):
                if text.strip():
                    chunks.append((text.strip(), dict(section.metadata)))
        return chunks
