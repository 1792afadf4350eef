"""Curation of prepare's documents before the split: each step removes what it finds, counts it, and keeps samples.

The steps run in the order a data engineer would: copies first (so that three versions of one policy are one
document before anything counts how often a line repeats), then lines and passages that are not the document's own
prose, then whole documents too short, too repetitive or in another language. What is left is split by document
afterwards, so no near-copy of a held-out page is trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from finetune.sources import Document, Example, Source

from . import near_duplicates, quality
from .text_units import blocks, excerpt, is_heading, join_blocks, normal_block, normal_line, words

# Each step, in the order it runs, and the part of the issue it answers (the report groups them so).
STEPS = {
    "exact_duplicates": "duplicates",
    "near_duplicates": "duplicates",
    "boilerplate_lines": "boilerplate",
    "markup": "boilerplate",
    "navigation": "boilerplate",
    "contents": "boilerplate",
    "symbols": "quality",
    "repeated_passages": "duplicates",
    "short": "quality",
    "repetitive": "quality",
    "language": "quality",
}


class CurationSettings(BaseModel):
    """What curation removes; every step is on by default except the language filter, which needs to be told the
    organisation's languages."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    # Estimated Jaccard similarity of word 5-grams. Bounded where LSH with 128 permutations still has two bands: above
    # 0.98 a copy is an exact one, which the exact step finds.
    near_duplicate_threshold: float = Field(default=0.8, ge=0.05, le=0.98)
    # A line (at least boilerplate_words long) on this many documents or more is boilerplate: footers, disclaimers,
    # navigation. Counted after near-copies are gone, so versions of one document do not vote for their own text.
    boilerplate_documents: int = Field(default=3, ge=2)
    # Documents this alike (but not copies) are one family: they land in the same split, so no near-copy of a held-out
    # page is trained on, and they count once when lines are counted: the versions of a short page share
    # most of their lines, and must not vote them boilerplate.
    family_threshold: float = Field(default=0.5, ge=0.05, le=0.98)
    boilerplate_words: int = Field(default=3, ge=1)
    # The same line this many times inside one document (numbers masked): a running header the loader kept.
    repeats_in_document: int = Field(default=5, ge=2)
    # A passage of three links or more whose words are this much link text is navigation (a menu, a contents list).
    navigation_link_share: float = Field(default=0.8, gt=0, le=1)
    min_text_share: float = Field(default=0.5, ge=0, lt=1)  # letters and digits among a passage's visible characters
    repeated_passage_words: int = Field(default=12, ge=1)  # passages this long are kept once in the whole corpus
    min_words: int = Field(default=30, ge=0)  # of a document's prose after cleaning (not its headings)
    # Share of words in repeated 5-grams: real pages with tables of like rows reach 0.6, extraction loops 0.8 and up.
    max_repeated_ngrams: float = Field(default=0.7, gt=0, le=1)
    languages: tuple[str, ...] = ()  # ISO 639-1 codes to keep; empty: every language
    samples: int = Field(default=5, ge=0)  # examples of each step's removals in the report


@dataclass
class StepCount:
    documents: int = 0
    passages: int = 0
    lines: int = 0
    tokens: int = 0
    samples: list[dict] = field(default_factory=list)


@dataclass
class CurationReport:
    settings: CurationSettings
    steps: dict[str, StepCount] = field(default_factory=lambda: {name: StepCount() for name in STEPS})
    kept_documents: int = 0
    kept_tokens: int = 0
    languages: dict[str, int] = field(default_factory=dict)  # documents kept, by the language langid tells
    # document key -> the key of its family's first document, for documents alike enough to split together
    families: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict:
        """The manifest's record: how much each step removed."""
        return {
            name: {
                "kind": STEPS[name],
                "documents": s.documents,
                "passages": s.passages,
                "lines": s.lines,
                "tokens": s.tokens,
            }
            for name, s in self.steps.items()
        }

    def to_dict(self) -> dict:
        return {
            "settings": self.settings.model_dump(mode="json"),
            "kept": {"documents": self.kept_documents, "tokens": self.kept_tokens, "languages": self.languages},
            "removed": {name: {**self.counts()[name], "samples": s.samples} for name, s in self.steps.items()},
        }


@dataclass
class _Unit:
    """One example being curated, with where it came from."""

    path: str
    document: Document
    example: Example
    text: str  # the text judged (a text example's text; the messages of a conversation, for the exact step)
    document_file: bool  # read from a document; JSONL examples were written as training data and are only deduplicated
    dropped: bool = False


TokenCounter = Callable[[list[str]], int]


def curate(sources: list[Source], settings: CurationSettings, count_tokens: TokenCounter) -> CurationReport:
    """Remove what the settings call noise from `sources`, in place; documents left empty are dropped."""
    report = CurationReport(settings)
    units = [
        _Unit(
            source.path,
            document,
            example,
            example.text if example.format == "text" else _conversation(example),
            source.kind == "document",
        )
        for source in sorted(sources, key=lambda s: s.path)
        for document in source.documents
        for example in document.examples
    ]
    if settings.enabled:
        run = _Run(report, settings, count_tokens)
        run.exact_duplicates(units)
        texts = [unit for unit in units if unit.example.format == "text" and not unit.dropped]
        run.near_duplicates(texts)
        texts = [unit for unit in texts if not unit.dropped and unit.document_file]
        run.boilerplate_lines(texts)
        run.passages(texts)
        run.documents(texts)
    kept = [unit for unit in units if not unit.dropped]
    for unit in kept:
        if unit.example.format == "text":
            report.languages[code] = report.languages.get(code := _language(unit), 0) + 1
    _write_back(sources, kept)
    report.kept_documents = len({id(unit.document) for unit in kept})
    report.kept_tokens = count_tokens([unit.text for unit in kept])
    return report


class _Run:
    def __init__(self, report: CurationReport, settings: CurationSettings, count_tokens: TokenCounter):
        self.report, self.settings, self.count_tokens = report, settings, count_tokens
        self.family: dict[int, int] = {}  # id(unit) -> its family (documents alike enough to share lines)

    def _removed(self, step: str, unit: _Unit, text: str, reason: str, *, document=False, passage=False, lines=0):
        count = self.report.steps[step]
        count.documents += document
        count.passages += passage
        count.lines += lines
        count.tokens += self.count_tokens([text])
        if len(count.samples) < self.settings.samples:
            count.samples.append({"path": unit.path, "reason": reason, "text": excerpt(text)})

    def _drop(self, step: str, unit: _Unit, reason: str) -> None:
        unit.dropped = True
        self._removed(step, unit, unit.text, reason, document=True)

    # --- copies --------------------------------------------------------------------------------

    def exact_duplicates(self, units: list[_Unit]) -> None:
        first: dict[str, _Unit] = {}
        for unit in units:
            key = hashlib.sha256(normal_block(unit.text).encode()).hexdigest() if unit.text.strip() else None
            if key is None:
                continue
            if key in first:
                self._drop("exact_duplicates", unit, f"the same text as {first[key].path}")
            else:
                first[key] = unit

    def near_duplicates(self, units: list[_Unit]) -> None:
        threshold = self.settings.near_duplicate_threshold
        groups, signatures = near_duplicates.clusters([unit.text for unit in units], threshold)
        families, _ = near_duplicates.clusters([u.text for u in units], self.settings.family_threshold, signatures)
        self.family = {id(unit): index for index, unit in enumerate(units)}
        for family in families:
            for index in family:
                self.family[id(units[index])] = family[0]
                self.report.families[units[index].document.key] = units[family[0]].document.key
        for group in groups:
            # The fullest version stays: the others are older or partial copies of it.
            keep = max(group, key=lambda index: (len(words(units[index].text)), -index))
            for index in group:
                if index != keep:
                    alike = signatures[keep].jaccard(signatures[index])
                    self._drop("near_duplicates", units[index], f"{alike:.2f} alike to {units[keep].path}, kept")

    # --- lines and passages --------------------------------------------------------------------

    def boilerplate_lines(self, units: list[_Unit]) -> None:
        settings = self.settings
        families_with: dict[str, set[int]] = defaultdict(set)
        for unit in units:
            for line in unit.text.splitlines():
                if _judged(line, settings):
                    families_with[_line_key(line)].add(self.family.get(id(unit), id(unit)))
        documents_with = Counter({line: len(families) for line, families in families_with.items()})
        for unit in units:
            inside = Counter(normal_line(line) for line in unit.text.splitlines() if _judged(line, settings))
            kept, removed = [], defaultdict(list)
            for line in unit.text.splitlines():
                if _judged(line, settings) and documents_with[_line_key(line)] >= settings.boilerplate_documents:
                    removed[f"on {documents_with[_line_key(line)]} documents"].append(line)
                elif _judged(line, settings) and inside[normal_line(line)] >= settings.repeats_in_document:
                    removed[f"{inside[normal_line(line)]} times in this document"].append(line)
                else:
                    kept.append(line)
            for reason, lines in removed.items():
                self._removed("boilerplate_lines", unit, "\n".join(lines), reason, lines=len(lines))
            if removed:
                unit.text = "\n".join(kept)

    def passages(self, units: list[_Unit]) -> None:
        settings = self.settings
        seen: dict[str, str] = {}
        for unit in units:
            kept = []
            for block in blocks(unit.text):
                step, reason = self._judge_passage(block, seen, unit.path)
                if step:
                    self._removed(step, unit, block, reason, passage=True)
                    continue
                if (visible := quality.strip_markup(block)) != block:
                    # Link targets and template tags go, the words a reader sees stay.
                    self._removed("markup", unit, quality.markup(block), "link targets and template tags")
                    block = visible
                if block.strip():
                    kept.append(block)
                    if len(words(block)) >= settings.repeated_passage_words:
                        seen.setdefault(normal_block(block), unit.path)
            unit.text = join_blocks(kept)

    def _judge_passage(self, block: str, seen: dict[str, str], path: str) -> tuple[str | None, str]:
        settings = self.settings
        if all(is_heading(line) for line in block.splitlines() if line.strip()):
            return None, ""
        links, share = quality.link_share(block)
        if links >= 3 and share >= settings.navigation_link_share:
            return "navigation", f"{links} links and little else"
        if quality.is_contents(block):
            return "contents", "a table of contents"
        if (text := quality.text_share(block)) is not None and text < settings.min_text_share:
            return "symbols", f"{text:.0%} letters and digits"
        if len(words(block)) >= settings.repeated_passage_words and (first := seen.get(normal_block(block))):
            return "repeated_passages", "already in this document" if first == path else f"already in {first}"
        return None, ""

    # --- whole documents -----------------------------------------------------------------------

    def documents(self, units: list[_Unit]) -> None:
        settings = self.settings
        for unit in units:
            prose = [line for line in unit.text.splitlines() if not is_heading(line)]
            count = len(words("\n".join(prose)))
            if count < settings.min_words:
                self._drop("short", unit, f"{count} words of prose left (fewer than {settings.min_words})")
            elif (share := quality.repeated_ngram_share(unit.text)) > settings.max_repeated_ngrams:
                self._drop("repetitive", unit, f"{share:.0%} of its words in repeated 5-grams")
            elif settings.languages and (code := _language(unit)) not in settings.languages:
                self._drop("language", unit, f"in {code}, not {', '.join(settings.languages)}")


def _judged(line: str, settings: CurationSettings) -> bool:
    """Lines long enough to call boilerplate; headings are the document's outline and always stay."""
    return not is_heading(line) and len(words(line)) >= settings.boilerplate_words


def _line_key(line: str) -> str:
    # Across documents numbers count: "Age: 32" on two forms is their content, not a footer.
    return " ".join(line.split()).lower()


def _language(unit: _Unit) -> str:
    return quality.language(unit.text)[0] if unit.text.strip() else "none"


def _conversation(example: Example) -> str:
    return json.dumps(example.messages, ensure_ascii=False)


def _write_back(sources: list[Source], kept: list[_Unit]) -> None:
    examples: dict[int, list[Example]] = defaultdict(list)
    for unit in kept:
        text_example = unit.example.format == "text"
        examples[id(unit.document)].append(Example("text", text=unit.text) if text_example else unit.example)
    for source in sources:
        source.documents = [d for d in source.documents if examples.get(id(d))]
        for document in source.documents:
            document.examples = examples[id(document)]
    sources[:] = [source for source in sources if source.documents]
