"""What `finetune prepare` may train on: files read through the ingestion loaders, JSONL examples, and the store's
word on which documents a set of groups may read.

Nothing here tokenises; it turns sources into `Document`s (each a list of `Example`s) and says, for every source it
could not use, why (`Problem`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from llama_index.core import Document as Section

from retrieval.access import ADMIN_GROUP

# A path and why it was left out: the same record ingestion reports, so prepare's report reads like ingest's.
from retrieval.files import Failure as Problem
from retrieval.files import changed_since, list_files, sha256_file
from retrieval.ingest import document_id
from retrieval.loaders import LoadError, load
from retrieval.settings import RetrievalSettings
from retrieval.store import COMPLETE, ChunkStore, DocumentRecord, StoreLockedError, StoreNotFound

FORMATS = ("auto", "text", "alpaca", "chat")
ROLES = ("system", "user", "assistant")
JSONL_SUFFIX = ".jsonl"
# Lines that share one of these values are one document for the train/eval split (e.g. questions about one file).
GROUPING_FIELDS = ("doc", "source")


class PrepareError(ValueError):
    """The whole preparation cannot go on; the message names the culprit and what to do."""


class ExampleError(ValueError):
    """A JSONL record is not a usable example; `str()` says what is wrong with it."""


class SourceError(Exception):
    """One source cannot be used; `str()` is the reason, without the path (the caller reports that)."""


@dataclass(frozen=True)
class Example:
    """One training example. `text` is learned whole; of `messages` (role, content) only assistant turns are."""

    format: str  # "text", "alpaca" or "chat": how it was written, for the counts
    text: str = ""
    messages: tuple[tuple[str, str], ...] = ()


@dataclass
class Document:
    """The unit of the train/eval split: documents with the same `key` always land in the same split."""

    key: str
    examples: list[Example]


@dataclass
class Source:
    path: str
    sha256: str
    kind: str  # "document" or "jsonl"
    documents: list[Document] = field(default_factory=list)
    groups: tuple[str, ...] | None = None  # the groups the store records, when the store vouched for it


# --- files -----------------------------------------------------------------------------------


def find_files(roots: Iterable[Path]) -> tuple[list[Path], list[Problem], list[Problem]]:
    """(files, skipped, failed) for the --source paths, each file once.

    Folders are walked as ingestion walks them (retrieval.files), so a folder yields the same documents here as in
    the store, and a link out of a folder is no more followed here than there.
    """
    roots = list(roots)
    listing = list_files(roots)
    skipped = [
        # A folder may hold JSONL that is not training data (samples/questions.jsonl): only named ones count.
        Problem(entry.path, "JSONL files are read only when named as a --source")
        if entry.path.lower().endswith(JSONL_SUFFIX)
        else entry
        for entry in listing.skipped
    ]
    failed = [*listing.failed, *listing.missing.values()]
    for root in roots:
        if root.is_dir() and not any(path.is_relative_to(root) for path in listing.files):
            failed.append(Problem(str(root), "no documents in this folder (nothing a loader reads)"))
    return listing.files, skipped, failed


def document_text(sections: list[Section]) -> str:
    """A loaded file as one text: sections joined by blank lines, each heading written once, Markdown-style.

    Loaders give each section its heading path ("Leave > Annual leave") rather than heading lines, so the headings
    that change from one section to the next are written back as `#` lines: the model sees the document's outline
    the way a reader does, not a repeated path.
    """
    parts: list[str] = []
    previous: list[str] = []
    for section in sections:
        heading = section.metadata.get("heading")
        path = [name.strip() for name in heading.split(" > ")] if heading else []
        same = 0
        while same < min(len(path), len(previous)) and path[same] == previous[same]:
            same += 1
        parts += [f"{'#' * (depth + 1)} {name}" for depth, name in enumerate(path) if depth >= same]
        previous = path
        if section.text.strip():
            parts.append(section.text.strip())
    return "\n\n".join(parts)


def read_document(path: Path, expected_sha256: str | None = None, groups: tuple[str, ...] | None = None) -> Source:
    """One file through the ingestion loaders; with `expected_sha256`, only if it is still the vetted version."""
    try:
        info = path.stat()
        # Ingestion's hash (retrieval.files): it refuses a pipe or device rather than wait on it forever.
        before = sha256_file(path)
    except FileNotFoundError:
        raise SourceError("gone since ingestion: re-ingest it" if expected_sha256 else "no such file") from None
    except OSError as error:
        raise SourceError(f"cannot read the file: {error.strerror or error}") from None
    except LoadError as error:
        raise SourceError(str(error)) from None
    if expected_sha256 is not None and before != expected_sha256:
        raise SourceError("changed since ingestion: re-ingest it so the store checks this version")
    try:
        sections = load(path)
    except LoadError as error:
        raise SourceError(str(error)) from None
    except Exception as error:  # noqa: BLE001 - a loader bug must cost one file, never the run
        raise SourceError(f"unexpected {type(error).__name__} while reading: {error}") from None
    # Checked again after loading: a file rewritten while it was read would be text nobody vetted.
    if changed_since(path, info, before):
        raise SourceError("changed while it was being read: run prepare again")
    text = document_text(sections)
    if not text:
        raise SourceError("no text in it (a scanned PDF without a text layer?)")
    # Keyed by content, not path: a copy of a file elsewhere lands in the same split, so it cannot leak into eval.
    return Source(str(path), before, "document", [Document(before, [Example("text", text=text)])], groups)


# --- JSONL -----------------------------------------------------------------------------------


def read_jsonl(path: Path, jsonl_format: str = "auto") -> tuple[Source, list[Problem]]:
    """Every line an example; a bad line is a Problem naming its number, and the other lines still count."""
    try:
        data = path.read_bytes()
        lines = data.decode("utf-8").splitlines()
    except OSError as error:
        raise SourceError(f"cannot read the file: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise SourceError(f"not UTF-8 text ({error.reason} at byte {error.start}): save it as UTF-8") from None
    source = Source(str(path), hashlib.sha256(data).hexdigest(), "jsonl")
    problems: list[Problem] = []
    by_key: dict[str, Document] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            example = parse_example(record, jsonl_format)
        except ValueError as error:  # json.JSONDecodeError is a ValueError too
            problems.append(Problem(str(path), f"line {number}: {error}"))
            continue
        group = next((record[name] for name in GROUPING_FIELDS if isinstance(record.get(name), str)), None)
        key = f"{GROUPING_FIELDS[0]}:{group}" if group else hashlib.sha256(_canonical(record)).hexdigest()
        if key not in by_key:
            by_key[key] = Document(key, [])
            source.documents.append(by_key[key])
        by_key[key].examples.append(example)
    return source, problems


def _canonical(record: dict) -> bytes:
    # Identical lines hash alike, so a duplicated example cannot sit in train and eval at once.
    return json.dumps(record, sort_keys=True, ensure_ascii=False).encode()


def parse_example(record: object, jsonl_format: str = "auto") -> Example:
    """One JSONL record as an Example, or ExampleError."""
    if not isinstance(record, dict):
        raise ExampleError(f"expected a JSON object, got {type(record).__name__}")
    kind = jsonl_format if jsonl_format != "auto" else _detect(record)
    if kind == "text":
        return Example("text", text=_string(record, "text"))
    if kind == "alpaca":
        instruction, output = _string(record, "instruction"), _string(record, "output")
        extra = record.get("input")
        if extra is not None and not isinstance(extra, str):
            raise ExampleError('"input" must be a string when present')
        prompt = f"{instruction}\n\n{extra.strip()}" if extra and extra.strip() else instruction
        return Example("alpaca", messages=(("user", prompt), ("assistant", output)))
    if kind == "chat":
        return Example("chat", messages=_messages(record))
    raise ExampleError(f"unknown format {jsonl_format!r}: use one of {', '.join(FORMATS)}")


def _detect(record: dict) -> str:
    for key, kind in (("messages", "chat"), ("instruction", "alpaca"), ("text", "text")):
        if key in record:
            return kind
    raise ExampleError(
        'not an example: expected {"text": ...}, {"instruction": ..., "output": ...} or {"messages": [...]}'
    )


def _string(record: dict, key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ExampleError(f'"{key}" must be a non-empty string')
    return value


def _messages(record: dict) -> tuple[tuple[str, str], ...]:
    messages = record.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ExampleError('"messages" must be a non-empty list of {"role": ..., "content": ...}')
    turns = []
    for number, message in enumerate(messages, 1):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if role not in ROLES or not isinstance(content, str):
            raise ExampleError(f"message {number} needs a role ({', '.join(ROLES)}) and a string content")
        turns.append((role, content))
    if not any(role == "assistant" and content.strip() for role, content in turns):
        raise ExampleError("no assistant message: there is nothing to learn from it")
    return tuple(turns)


# --- the store -------------------------------------------------------------------------------


def describe(settings: RetrievalSettings) -> str:
    return settings.qdrant_url or str(settings.qdrant_path)


def readable_documents(
    settings: RetrievalSettings, groups: tuple[str, ...], paths: list[Path] | None
) -> tuple[list[DocumentRecord], list[Problem]]:
    """The finished documents `groups` may read: all of them, or those among `paths`; and why each other is out.

    The store is opened only for this and closed again before any file is read, since embedded Qdrant lets one
    process at a time hold it (the portal may want it back).
    """
    store = open_store(settings)
    try:
        # Every named group, not any: the adapter will answer members of each of them, so each must be allowed to
        # read everything it learned.
        readable = {
            record.doc_id: record for record in store.list_documents(groups) if readable_by_all(record.groups, groups)
        }
        if paths is None:
            candidates = list(readable.values())
            refused: list[Problem] = []
            if not candidates:
                raise PrepareError(
                    f"no document in the store at {describe(settings)} may be read by every one of "
                    f"{', '.join(groups)}: check the group names (`assistant documents` lists each document's groups)"
                )
        else:
            candidates, refused = [], []
            for path in paths:
                record = readable.get(document_id(path))
                if record is not None:
                    candidates.append(record)
                elif (stored := store.get_document(document_id(path))) is not None:
                    allowed = ", ".join(stored.groups) or "admins only"
                    outside = ", ".join(g for g in groups if not readable_by_all(stored.groups, (g,)))
                    refused.append(Problem(str(path), f"not readable by {outside} (stored for {allowed})"))
                else:
                    refused.append(Problem(str(path), "not in the store: ingest it with its groups first"))
    finally:
        store.close()
    kept = []
    for record in candidates:
        if record.status == COMPLETE:
            kept.append(record)
        else:
            refused.append(Problem(record.path, f"its ingestion did not finish ({record.status}): re-ingest it"))
    return kept, refused


def readable_by_all(document_groups: Iterable[str], groups: Iterable[str]) -> bool:
    """Whether every one of `groups` may read a document stored for `document_groups` (admins read everything)."""
    return all(group == ADMIN_GROUP or group in document_groups for group in groups)


def open_store(settings: RetrievalSettings) -> ChunkStore:
    """The existing store, read-only in spirit: a store without collections is an error, never created here."""
    where = describe(settings)
    try:
        # No dimension: the store is opened as it is, whichever embedder built it (no vectors are made here,
        # so the embedding model need not be loaded).
        return ChunkStore(settings, None)
    except StoreNotFound:
        raise PrepareError(
            f"no documents ingested at {where}: ingest them with `assistant ingest PATH --group G`"
        ) from None
    except StoreLockedError:
        raise PrepareError(
            f"the store at {where} is open in another process (the assistant's portal or API, or another command), "
            "and an embedded store allows one process at a time: stop the assistant and run prepare again, or run "
            "the assistant against a Qdrant server and give prepare its URL with --qdrant-url"
        ) from None
