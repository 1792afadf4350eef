"""`finetune prepare`: documents and examples -> tokens -> a packed dataset split by document, with a manifest.

Sources are files and folders (read by the ingestion loaders, so a PDF is the same text here as in the store) and
JSONL files of examples. With `--group`, only documents the store says every one of those groups may read, in exactly
the version it checked, are used: an adapter remembers what it was trained on and would tell any of its users. The
manifest's "serves" names the groups whose members may use the adapter (`finetune train` copies it into the adapter's
training.json, and the assistant refuses anyone else). Without `--group` no one vouched for who may read the sources,
so the adapter serves administrators only.

Formats of a JSONL line (auto-detected unless --format says):
  text     {"text": ...}                                       every token is learned
  alpaca   {"instruction": ..., "input": ..., "output": ...}   only the output is learned
  chat     {"messages": [{"role": ..., "content": ...}, ...]}  only the assistant turns are learned
Instructions and chats go through the tokenizer's chat template when it has one. Without one they are written as

  ### System:\\n{system}\\n\\n### Instruction:\\n{user}\\n\\n### Response:\\n{assistant}</s>

(an alpaca "input" follows its instruction after a blank line), and every response ends with the EOS token, which is
learned too, so the model learns where to stop. A line may carry "doc" or "source": lines sharing it are one document
for the split.

JSONL cannot be combined with --group: the store never saw those examples, so it cannot say who may read them.
The store is found as the assistant finds it (its settings, from the environment and the file ASSISTANT_CONFIG names,
read by the same loader) unless --store, --qdrant-url or --collection say otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError
from tqdm import tqdm

from finetune import dataset
from finetune.curation.pipeline import CurationReport, CurationSettings, curate
from finetune.lora_model import max_positions
from finetune.sources import (
    FORMATS,
    JSONL_SUFFIX,
    Example,
    PrepareError,
    Problem,
    Source,
    SourceError,
    describe,
    find_files,
    read_document,
    read_jsonl,
    readable_documents,
)
from model.loading import ModelLoadError
from model.named_bases import is_named, named_base
from model.run_layout import SERVES
from retrieval.access import ADMIN_GROUP, InvalidGroupName, validate_groups
from retrieval.installation import CONFIG_FILE_VARIABLE, InstallationSettings
from retrieval.redaction import Redactor
from retrieval.settings import RetrievalSettings

__all__ = ["PrepareError", "PrepareReport", "add_arguments", "prepare", "run"]

SPLITS = dataset.SPLITS
CURATION_REPORT = "curation.json"  # beside the manifest: what curation removed, with samples and reasons
EXAMPLE_FORMATS = ("text", "alpaca", "chat")
PLAIN_HEADERS = {"system": "### System:\n", "user": "### Instruction:\n", "assistant": "### Response:\n"}
# transformers stores "no limit" as a huge integer (1e30) in model_max_length; anything this big means unknown.
SANE_LENGTH = 10_000_000
TOKENIZER_FILE_NAMES = (
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "spiece.model",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass
class PrepareReport:
    out: Path
    manifest: dict
    failed: list[Problem] = field(default_factory=list)  # unreadable files, bad JSONL lines
    refused: list[Problem] = field(default_factory=list)  # documents the groups may not use, or not as vetted
    skipped: list[Problem] = field(default_factory=list)  # files in folders that are not documents
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    curation: CurationReport | None = None

    @property
    def ok(self) -> bool:
        return not self.failed and not self.refused

    def summary(self) -> str:
        counts, splits = self.manifest["counts"], self.manifest["splits"]
        return (
            f"wrote {self.out}: {counts['documents']['train']} train / {counts['documents']['eval']} eval documents, "
            f"{splits['train']['sequences']} + {splits['eval']['sequences']} sequences of {self.manifest['seq_len']} "
            f"tokens ({splits['train']['scored_tokens'] + splits['eval']['scored_tokens']} scored); "
            f"failed {len(self.failed)}, refused {len(self.refused)}, skipped {len(self.skipped)} "
            f"({self.seconds:.1f} s)"
            + (f"; redacted {redacted}" if (redacted := self._redacted()) else "")
            + (f"; {curated}" if (curated := self._curated()) else "")
        )

    def _curated(self) -> str:
        if self.curation is None or not self.curation.settings.enabled:
            return ""
        steps = self.curation.steps
        removed = {name: step for name, step in steps.items() if step.tokens or step.documents}
        if not removed:
            return "curation removed nothing"
        kept = self.curation.kept_tokens
        total = kept + sum(step.tokens for step in removed.values())
        parts = ", ".join(f"{name} {step.tokens}" for name, step in removed.items())
        return (
            f"curation removed {total - kept} of {total} tokens ({parts}) and "
            f"{sum(step.documents for step in removed.values())} whole documents: see {CURATION_REPORT}"
        )

    def _redacted(self) -> str:
        return ", ".join(f"{count} {kind}" for kind, count in (self.manifest.get("redacted") or {}).items() if count)

    def to_dict(self) -> dict:
        data = {**asdict(self), "out": str(self.out)}
        data["curation"] = self.curation.to_dict() if self.curation else None
        return data


# --- the library entry point -----------------------------------------------------------------


def prepare(
    model: str | Path,
    out: str | Path,
    sources: Sequence[str | Path] = (),
    groups: Sequence[str] = (),
    *,
    store: str | Path | None = None,
    qdrant_url: str | None = None,
    collection: str | None = None,
    seq_len: int = 1024,
    eval_fraction: float = 0.1,
    seed: int = 0,
    jsonl_format: str = "auto",
    progress: bool = False,
    redact_pii: bool | None = None,
    pii_region: str | None = None,
    curation: CurationSettings | None = None,
) -> PrepareReport:
    """Build the dataset in `out` from `sources` and/or the store documents `groups` may read.

    Everything that can be checked is checked before any document is read; nothing is written unless the dataset
    has tokens to learn from. Raises PrepareError.

    `redact_pii` replaces personal data in every text and message before tokenisation (retrieval/redaction.py), with
    phone numbers read as dialled in `pii_region`; None follows the installation's settings (redact_pii, pii_region,
    read as the assistant reads them), since documents are read again from their files, whose text the store may
    hold redacted. A stored document that was redacted when ingested is refused when this run does not redact.

    `curation` (default: every safe step on, finetune/curation) removes duplicates, boilerplate and text that is not
    prose after redaction (so the report's samples hold no personal data) and before the split.
    """
    started = time.perf_counter()
    model, out = Path(model).expanduser(), Path(out).expanduser()
    roots = [Path(s).expanduser() for s in sources]
    groups = _check_groups(groups)
    if not roots and not groups:
        raise PrepareError("nothing to prepare: give --source PATH (files, folders, JSONL) and/or --group G")
    if jsonl_format not in FORMATS:
        raise PrepareError(f"unknown --format {jsonl_format!r}: use one of {', '.join(FORMATS)}")
    if not 0 <= eval_fraction < 1:
        raise PrepareError(f"--eval-fraction must be at least 0 and below 1, got {eval_fraction}")
    if groups and (jsonl := [r for r in roots if r.suffix.lower() == JSONL_SUFFIX]):
        raise PrepareError(
            f"{jsonl[0]} is JSONL, which the store cannot vouch for: with --group only ingested documents are used, "
            "so that the adapter never learns text its users may not read. Drop --group (if every user of the "
            "adapter may see all of these examples) or drop the JSONL source"
        )
    _check_out(out)
    installation = _installation(store, qdrant_url, collection)
    model = _base_directory(model, installation)
    redactor = _redactor(installation, redact_pii, pii_region)
    tokenizer = _load_tokenizer(model)
    _check_seq_len(seq_len, model, tokenizer)
    settings = installation if groups else None

    report = PrepareReport(out, {})
    collected = _collect(roots, groups, settings, jsonl_format, report, progress, redacting=redactor is not None)
    redacted = _redact(collected, redactor) if redactor else None
    report.curation = curate(collected, curation or CurationSettings(), _token_counter(tokenizer))
    split_of = _split(collected, report.curation.families, eval_fraction, seed)
    if eval_fraction > 0 and split_of and "eval" not in split_of.values():
        report.warnings.append(
            "only one document (or versions of one): all of it is in train, so there is no held-out evaluation"
        )

    packed, counts = _encode(collected, split_of, _order(list(split_of), seed), Encoder(tokenizer), seq_len, report)
    if packed["train"].scored_tokens == 0:
        raise PrepareError(f"empty dataset: {_why_empty(report)}; nothing was written to {out}")
    out.mkdir(parents=True, exist_ok=True)
    (out / CURATION_REPORT).write_text(json.dumps(report.curation.to_dict(), indent=2, ensure_ascii=False) + "\n")

    manifest = {
        "seq_len": seq_len,
        "tokenizer": _tokenizer_identity(model),
        "counts": counts,
        "sources": [_source_entry(source, split_of) for source in collected],
        "groups": list(groups),
        SERVES: list(groups) or [ADMIN_GROUP],
        "store": describe(settings) if settings else None,
        "eval_fraction": eval_fraction,
        "seed": seed,
        "jsonl_format": jsonl_format,  # "format" is the dataset layout version (dataset.py)
        "redacted": redacted,  # personal data replaced, by kind; None: redaction was off
        "curation": {
            "settings": report.curation.settings.model_dump(mode="json"),
            "removed": report.curation.counts(),
            "kept": {"documents": report.curation.kept_documents, "tokens": report.curation.kept_tokens},
            "report": CURATION_REPORT,
        },
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    report.manifest = dataset.write_dataset(out, packed, manifest)
    report.seconds = time.perf_counter() - started
    return report


# --- checks before any work ------------------------------------------------------------------


def _check_groups(groups: Sequence[str]) -> tuple[str, ...]:
    try:
        return validate_groups(groups)
    except InvalidGroupName as error:
        raise PrepareError(str(error)) from None


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out {out} is a file: give a directory for the dataset")
    # Overwriting an earlier dataset is the normal way to rebuild it; anything else there is someone's data.
    if out.is_dir() and any(out.iterdir()) and not (out / dataset.MANIFEST).is_file():
        raise PrepareError(
            f"--out {out} is a non-empty directory that holds no dataset: give a new or empty directory "
            "(prepare only overwrites an earlier dataset)"
        )


def _base_directory(model: Path, installation: InstallationSettings) -> Path:
    """The model directory, or the directory of a base named as `finetune` knows it (converted once)."""
    if model.exists() or not is_named(model):
        return model
    try:
        return named_base(str(model), installation.data_dir / "models")
    except ModelLoadError as error:
        raise PrepareError(str(error)) from None


def _load_tokenizer(model: Path):
    from transformers import AutoTokenizer

    if not model.is_dir():
        raise PrepareError(f"--model {model} is not a directory: give the local model directory (its tokenizer)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
    except Exception as error:  # transformers raises OSError, ValueError, KeyError... for missing or bad files
        raise PrepareError(
            f"could not load a tokenizer from {model}: {type(error).__name__}: {error}. Save the model's tokenizer "
            "there (tokenizer.json, or tokenizer.model + tokenizer_config.json)"
        ) from error
    if tokenizer.eos_token_id is None:
        raise PrepareError(f"the tokenizer in {model} has no EOS token: examples must end with one")
    return tokenizer


def _check_seq_len(seq_len: int, model: Path, tokenizer) -> None:
    if seq_len < 2:
        raise PrepareError(f"--seq-len must be at least 2, got {seq_len}")
    limits = []
    length = getattr(tokenizer, "model_max_length", None)
    if isinstance(length, int) and 0 < length < SANE_LENGTH:
        limits.append((length, "the tokenizer's model_max_length"))
    config_file = model / "config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError) as error:
            raise PrepareError(f"{config_file} is not readable JSON ({error}): fix or restore it") from None
        # The same limit `finetune train` checks the dataset against.
        if (positions := max_positions(config)) is not None:
            limits.append((positions, f"the position limit in {config_file}"))
    if limits and seq_len > (limit := min(limits))[0]:
        raise PrepareError(
            f"--seq-len {seq_len} is over the model's limit of {limit[0]} ({limit[1]}): use at most that"
        )


def _installation(store: str | Path | None, qdrant_url: str | None, collection: str | None) -> InstallationSettings:
    """The installation's settings as the assistant reads them (environment over ASSISTANT_CONFIG's file), with
    --store, --qdrant-url and --collection winning; the store prepare reads is then the one the assistant wrote."""
    overrides: dict = {}
    if store is not None:  # an embedded store by path: whatever server the installation names is not it
        overrides |= {"qdrant_path": str(Path(store).expanduser()), "qdrant_url": None}
    if qdrant_url is not None:
        overrides |= {"qdrant_url": qdrant_url, "qdrant_path": None}
    if collection is not None:
        overrides["collection"] = collection
    try:
        return InstallationSettings(**overrides)
    except FileNotFoundError as error:
        raise PrepareError(str(error)) from None
    except ValidationError as error:
        problems = "; ".join(
            f"{InstallationSettings.setting_name(str(problem['loc'][0]))}={problem['input']!r}: {problem['msg']}"
            for problem in error.errors()
        )
        raise PrepareError(
            f"the installation's settings are not valid ({problems}): fix them in the environment or in the file "
            f"{CONFIG_FILE_VARIABLE} names"
        ) from None


def _redactor(settings: InstallationSettings, redact_pii: bool | None, pii_region: str | None) -> Redactor | None:
    if not (settings.redact_pii if redact_pii is None else redact_pii):
        return None
    try:
        return Redactor(pii_region or settings.pii_region)
    except ValueError as error:
        raise PrepareError(f"--pii-region (or {settings.setting_name('pii_region')}): {error}") from None


# --- reading the sources ---------------------------------------------------------------------


def _collect(
    roots: list[Path],
    groups: tuple[str, ...],
    settings: RetrievalSettings | None,
    jsonl_format: str,
    report: PrepareReport,
    progress: bool,
    *,
    redacting: bool,
) -> list[Source]:
    files: list[Path] | None = None
    if roots:
        files, report.skipped, report.failed = find_files(roots)
    collected = []
    if groups:
        records, report.refused = readable_documents(settings, groups, files)
        for record in [r for r in records if r.redacted and not redacting]:
            # The store holds this document with personal data replaced, so its readers were promised that; its file
            # still holds it, and this run would put it into the training tokens.
            report.refused.append(
                Problem(
                    record.path,
                    "it was stored with personal data redacted, and this run does not redact: run with --redact-pii "
                    "(or set the installation's redact_pii)",
                )
            )
        records = [r for r in records if redacting or not r.redacted]
        for record in tqdm(records, desc="reading", unit="file", disable=not progress):
            try:
                collected.append(read_document(Path(record.path), record.content_hash, record.groups))
            except SourceError as error:
                report.refused.append(Problem(record.path, str(error)))
        return collected
    for path in tqdm(files, desc="reading", unit="file", disable=not progress):
        try:
            if path.suffix.lower() == JSONL_SUFFIX:
                source, problems = read_jsonl(path, jsonl_format)
                report.failed += problems
            else:
                source = read_document(path)
        except SourceError as error:
            report.failed.append(Problem(str(path), str(error)))
            continue
        if source.documents:
            collected.append(source)
    return collected


def _why_empty(report: PrepareReport) -> str:
    problems = report.failed + report.refused
    if report.curation and report.curation.kept_tokens == 0 and any(s.tokens for s in report.curation.steps.values()):
        return "curation removed every text (see the counts with --json): loosen its settings or run with --no-curation"
    if not problems:
        return "the sources hold no text to learn from"
    shown = "; ".join(f"{p.path}: {p.reason}" for p in problems[:5])
    more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
    return f"no source could be used ({shown}{more})"


def _redact(collected: list[Source], redactor: Redactor) -> dict[str, int]:
    """Personal data replaced in every example of every source, in place; how many of each kind."""
    counts: Counter[str] = Counter()

    def clean(text: str) -> str:
        text, found = redactor.redact(text)
        counts.update(found)
        return text

    for source in collected:
        for document in source.documents:
            document.examples = [
                replace(example, text=clean(example.text), messages=tuple((r, clean(c)) for r, c in example.messages))
                for example in document.examples
            ]
    return dict(sorted(counts.items()))


def _token_counter(tokenizer):
    """Tokens of plain texts, as curation reports what it removed: in the unit training is measured in."""

    def count(texts: list[str]) -> int:
        texts = [text for text in texts if text]
        if not texts:
            return 0
        return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])

    return count


# --- the split -------------------------------------------------------------------------------


def _split(collected: list[Source], families: dict[str, str], eval_fraction: float, seed: int) -> dict[str, str]:
    """Document key -> split, with the documents of one family (curation's near-copies below the copy threshold:
    versions of a page) on the same side."""
    family = {d.key: families.get(d.key, d.key) for source in collected for d in source.documents}
    by_family = split_documents(list(family.values()), eval_fraction, seed)
    return {key: by_family[group] for key, group in family.items()}


def _order(keys: list[str], seed: int) -> dict[str, str]:
    return {key: hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest() for key in keys}


def split_documents(keys: list[str], eval_fraction: float, seed: int) -> dict[str, str]:
    """key -> "train" or "eval", by a seeded hash of the key: the same documents and seed give the same split.

    Whole documents are held out, never parts of one, so the eval loss measures text the model has not seen.
    With two documents or more and a fraction above 0, at least one is held out and at least one is trained on.
    """
    order = _order(keys, seed)
    unique = sorted(set(keys), key=order.__getitem__)
    held_out = 0
    if len(unique) >= 2 and eval_fraction > 0:
        held_out = min(len(unique) - 1, max(1, round(len(unique) * eval_fraction)))
    return {key: "eval" if rank < held_out else "train" for rank, key in enumerate(unique)}


# --- tokens ----------------------------------------------------------------------------------


def _encode(
    collected: list[Source],
    split_of: dict[str, str],
    order: dict[str, str],
    encoder: Encoder,
    seq_len: int,
    report: PrepareReport,
) -> tuple[dict[str, dataset.Packed], dict]:
    """Both splits tokenised and packed, and the manifest's counts.

    Documents go in the seeded hash order, not source order, so a split's sequences do not run folder by folder.
    """
    counts = _empty_counts()
    placed = sorted(
        ((source.path, document) for source in collected for document in source.documents),
        key=lambda item: order[item[1].key],
    )
    examples: dict[str, list[tuple[list[int], list[int]]]] = {name: [] for name in SPLITS}
    for path, document in placed:
        name = split_of[document.key]
        counts["documents"][name] += 1
        for example in document.examples:
            try:
                ids, labels = encoder.encode(example)
            except ValueError as error:
                report.failed.append(Problem(path, str(error)))
                continue
            examples[name].append((ids, labels))
            counts["examples"][name] += 1
            counts["tokens"][name] += len(ids)
            counts["scored_tokens"][example.format][name] += sum(label != dataset.IGNORE for label in labels)
    return {name: dataset.pack(examples[name], seq_len, encoder.pad_id) for name in SPLITS}, counts


class Encoder:
    """Examples -> (token ids, labels): BOS first, EOS last, prompt tokens labelled IGNORE."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.bos = tokenizer.bos_token_id
        self.eos = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos
        self.chat_template = bool(getattr(tokenizer, "chat_template", None))

    def encode(self, example: Example) -> tuple[list[int], list[int]]:
        if example.format == "text":
            # A document that happens to contain "</s>" is text, not an end of sequence.
            ids, scored = self._tokenize([(example.text, True)], split_special_tokens=True)
        else:
            ids, scored = self._tokenize(self._segments(example.messages), split_special_tokens=False)
        if not ids:
            raise ValueError("no tokens: the example is empty")
        labels = [token if learn else dataset.IGNORE for token, learn in zip(ids, scored, strict=True)]
        if self.bos is not None and ids[:1] != [self.bos]:  # a chat template may have written it already
            ids, labels = [self.bos, *ids], [dataset.IGNORE, *labels]
        if ids[-1] != self.eos:
            ids, labels = [*ids, self.eos], [*labels, self.eos if scored[-1] else dataset.IGNORE]
        return ids, labels

    def _segments(self, messages: tuple[tuple[str, str], ...]) -> list[tuple[str, bool]]:
        """The conversation as text pieces, each marked learned or not."""
        if not self.chat_template:
            segments = []
            for role, content in messages:
                if role == "assistant":
                    segments += [(PLAIN_HEADERS[role], False), (content + self.tokenizer.eos_token, True)]
                else:
                    segments.append((f"{PLAIN_HEADERS[role]}{content}\n\n", False))
            return segments
        # Each assistant turn is what its rendering adds to the prompt before it, so the template's own markers
        # (and its end-of-turn token) are learned exactly as the model will meet them when answering.
        chat = [{"role": role, "content": content} for role, content in messages]
        segments, done = [], ""
        for turn, (role, _) in enumerate(messages):
            if role != "assistant":
                continue
            prompt = self._render(chat[:turn], add_generation_prompt=True)
            full = self._render(chat[: turn + 1], add_generation_prompt=False)
            if not (prompt.startswith(done) and full.startswith(prompt)):
                raise ValueError(
                    "the tokenizer's chat template does not render this conversation turn by turn (it rewrites "
                    "earlier turns), so the assistant's part cannot be told apart"
                )
            # Whitespace the template puts after a turn is layout, not answer: the model stops before it.
            answer = full[len(prompt) :].rstrip()
            segments += [(prompt[len(done) :], False), (answer, True), (full[len(prompt) + len(answer) :], False)]
            done = full
        rest = self._render(chat, add_generation_prompt=False)[len(done) :]
        segments.append((rest, False))
        # Trailing layout would hide the final end-of-turn token from the EOS check in `encode`.
        while segments and not segments[-1][0].strip():
            segments.pop()
        return segments

    def _render(self, chat: list[dict], add_generation_prompt: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=add_generation_prompt)
        except Exception as error:  # noqa: BLE001 - templates raise TemplateError or anything a template can raise
            raise ValueError(f"the tokenizer's chat template refused it: {type(error).__name__}: {error}") from None

    def _tokenize(self, segments: list[tuple[str, bool]], split_special_tokens: bool) -> tuple[list[int], list[bool]]:
        """Token ids of the whole text, and for each whether it belongs to a learned segment.

        The text is tokenised whole and tokens are mapped back by their character offsets: tokenising the pieces
        one by one would give different tokens at the seams (SentencePiece adds a space at every start).
        """
        text = "".join(piece for piece, _ in segments)
        spans, start = [], 0
        for piece, learn in segments:
            if learn:
                spans.append((start, start + len(piece)))
            start += len(piece)
        if not self.tokenizer.is_fast:  # no offsets: piece by piece is the best a slow tokenizer allows
            ids, scored = [], []
            for piece, learn in segments:
                piece_ids = self.tokenizer.encode(piece, add_special_tokens=False)
                ids += piece_ids
                scored += [learn] * len(piece_ids)
            return ids, scored
        encoding = self.tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=split_special_tokens
        )
        # A token is learned if it covers any learned character (a zero-width one: if it sits inside a learned span).
        scored = [
            any(lo < max(end, begin + 1) and begin < hi for lo, hi in spans)
            for begin, end in encoding["offset_mapping"]
        ]
        return list(encoding["input_ids"]), scored


# --- the manifest ----------------------------------------------------------------------------


def _empty_counts() -> dict:
    per_split = dict.fromkeys(SPLITS, 0)
    return {
        "documents": dict(per_split),
        "examples": dict(per_split),
        "tokens": dict(per_split),
        "scored_tokens": {name: dict(per_split) for name in EXAMPLE_FORMATS},
    }


def _source_entry(source: Source, split_of: dict[str, str]) -> dict:
    splits = Counter(split_of[document.key] for document in source.documents)
    entry = {
        "path": source.path,
        "sha256": source.sha256,
        "format": source.documents[0].examples[0].format if source.kind == "document" else _jsonl_format(source),
        # A JSONL file's lines may fall on both sides; its "examples" says how many went where.
        "split": "+".join(name for name in SPLITS if splits[name]),
    }
    if source.kind == "jsonl":
        entry["examples"] = {
            name: sum(len(d.examples) for d in source.documents if split_of[d.key] == name) for name in SPLITS
        }
    if source.groups is not None:
        entry["groups"] = list(source.groups)
    return entry


def _jsonl_format(source: Source) -> str:
    formats = {example.format for document in source.documents for example in document.examples}
    return formats.pop() if len(formats) == 1 else "mixed"


def _tokenizer_identity(model: Path) -> dict:
    """The tokenizer the token ids belong to: training on another one would read them as different text."""
    files = sorted(
        path
        for path in model.iterdir()
        if path.is_file() and (path.name.startswith("tokenizer") or path.name in TOKENIZER_FILE_NAMES)
    )
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return {"path": str(model.resolve()), "sha256": digest.hexdigest(), "files": [path.name for path in files]}


# --- the command -----------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        type=Path,
        help="the model directory (its tokenizer is used), or smollm2-135m-instruct: the bundled SmolLM2, converted "
        "once under the data directory",
    )
    parser.add_argument(
        "--source", action="append", default=[], type=Path, help="a file, folder or .jsonl of examples (repeat)"
    )
    parser.add_argument(
        "--group",
        action="append",
        default=[],
        help=(
            "use only ingested documents every one of these groups may read (repeat), and let the adapter answer "
            "their members; without --source: all such documents. Without --group the adapter answers admins only"
        ),
    )
    parser.add_argument(
        "--store",
        type=Path,
        default=None,
        help="an embedded store (default: the installation's store, found as the assistant finds it)",
    )
    parser.add_argument("--qdrant-url", default=None, help="a Qdrant server instead of the installation's store")
    parser.add_argument("--collection", default=None, help="the store's collection (default: the installation's)")
    parser.add_argument("--out", required=True, type=Path, help="the dataset directory to write")
    parser.add_argument("--seq-len", type=int, default=1024, help="tokens per training sequence (default 1024)")
    parser.add_argument("--eval-fraction", type=float, default=0.1, help="share of documents held out (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="decides which documents are held out (default 0)")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="the format of JSONL lines (default auto)")
    parser.add_argument(
        "--redact-pii",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replace e-mail addresses, phone, card, IBAN and account numbers and national ids with placeholders "
        "before tokenising (default: the installation's redact_pii setting, environment or ASSISTANT_CONFIG file)",
    )
    parser.add_argument(
        "--pii-region",
        default=None,
        help="the country whose phone numbers are written without +country (default: the installation's pii_region)",
    )
    curation = parser.add_argument_group("curation (finetune/curation; the report is written to OUT/curation.json)")
    curation.add_argument(
        "--no-curation",
        dest="curation",
        action="store_false",
        help="keep every text as read: no deduplication, boilerplate or quality filtering",
    )
    defaults = CurationSettings()
    curation.add_argument(
        "--near-duplicate-threshold",
        type=float,
        default=defaults.near_duplicate_threshold,
        help=f"estimated Jaccard similarity of word 5-grams at which two documents are copies "
        f"(default {defaults.near_duplicate_threshold})",
    )
    curation.add_argument(
        "--boilerplate-documents",
        type=int,
        default=defaults.boilerplate_documents,
        help=f"a line on this many documents is boilerplate (default {defaults.boilerplate_documents})",
    )
    curation.add_argument(
        "--min-words",
        type=int,
        default=defaults.min_words,
        help=f"documents with fewer words of prose after cleaning are left out (default {defaults.min_words})",
    )
    curation.add_argument(
        "--language",
        action="append",
        default=[],
        help="keep only documents in this language (ISO 639-1 code such as en; repeat); default: every language",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 if any source failed or was refused")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


CURATION_FLAGS = {
    "near_duplicate_threshold": "--near-duplicate-threshold",
    "boilerplate_documents": "--boilerplate-documents",
    "min_words": "--min-words",
    "languages": "--language",
}


def _curation_problem(error: ValidationError) -> str:
    return "; ".join(
        f"{CURATION_FLAGS.get(str(problem['loc'][0]), problem['loc'][0])} {problem['input']!r}: {problem['msg']}"
        for problem in error.errors()
    )


def run(args: argparse.Namespace) -> int:
    try:
        report = prepare(
            args.model,
            args.out,
            # The operator's shell paths: `../docs` means what it says (folders are walked as ingestion walks them,
            # which refuses '..' in a path it is handed).
            [os.path.abspath(os.path.expanduser(source)) for source in args.source],
            args.group,
            store=args.store,
            qdrant_url=args.qdrant_url,
            collection=args.collection,
            seq_len=args.seq_len,
            eval_fraction=args.eval_fraction,
            seed=args.seed,
            jsonl_format=args.format,
            progress=not args.json,
            redact_pii=args.redact_pii,
            pii_region=args.pii_region,
            curation=CurationSettings(
                enabled=args.curation,
                near_duplicate_threshold=args.near_duplicate_threshold,
                boilerplate_documents=args.boilerplate_documents,
                min_words=args.min_words,
                languages=tuple(args.language),
            ),
        )
    except ValidationError as error:
        print(f"finetune prepare: {_curation_problem(error)}", file=sys.stderr)
        return 2
    except PrepareError as error:
        print(f"finetune prepare: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for label, problems in (("failed", report.failed), ("refused", report.refused), ("skipped", report.skipped)):
            for problem in problems:
                print(f"{label}: {problem.path}: {problem.reason}", file=sys.stderr)
        for warning in report.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        print(report.summary())
    return 1 if args.strict and not report.ok else 0
