"""Sections of a file -> chunks small enough for the embedder, keeping page and heading."""

from collections.abc import Callable

from llama_index.core import Document
from llama_index.core.node_parser import SentenceSplitter

from retrieval.tables import split_rows

# The least text a chunk holds whatever its heading and document line take: below this a passage says little.
MIN_BUDGET = 64


class Chunker:
    """Splits each section on sentence boundaries into chunks of at most ``chunk_size`` tokens.

    Chunks never cross sections, so every chunk keeps the page or heading it came from. A table is cut
    between rows instead, each piece with the header row again (``retrieval.tables``).
    """

    def __init__(self, count_tokens: Callable[[str], list], chunk_size: int, chunk_overlap: int):
        self._count_tokens = count_tokens
        self._chunk_size = chunk_size
        self._chunk_overlap = chunk_overlap
        self._splitters: dict[int, SentenceSplitter] = {}

    def split(self, sections: list[Document], reserve: int = 0) -> list[tuple[str, dict]]:
        """(text, section metadata) per chunk, in file order.

        ``reserve``: tokens of every chunk's budget that text read with it takes (the document's line). A heading
        is short and most chunks are shorter than the budget, so it is not counted, as it never was.
        """
        chunks = []
        budget = max(self._chunk_size - reserve, MIN_BUDGET)
        for section in sections:
            if section.metadata.get("table"):
                pieces = split_rows(section.text, budget, self._count_tokens)
            else:
                pieces = self._splitter(budget).split_text(section.text)
            for text in pieces:
                if text.strip():
                    chunks.append((text.strip(), dict(section.metadata)))
        return chunks

    def _splitter(self, size: int) -> SentenceSplitter:
        if size not in self._splitters:
            self._splitters[size] = SentenceSplitter(
                chunk_size=size,
                chunk_overlap=min(self._chunk_overlap, size // 2),
                tokenizer=self._count_tokens,
                # Sections are already paragraphs of one file; a blank line is a paragraph break.
                paragraph_separator="\n\n",
            )
        return self._splitters[size]
