"""The small data types of the assistant's API."""

from dataclasses import asdict, dataclass, field
from pathlib import Path

from retrieval import ADMIN_GROUP, IngestReport, validate_groups
from retrieval.tables import parse_markdown


@dataclass(frozen=True)
class User:
    name: str  # what people call them: shown in the portal, may change
    groups: tuple[str, ...] = ()
    # Who they are, for good: keys their upload folder, their audit records and their rate limit. A local account's
    # or API key's name; for a sign-in through an identity provider its issuer and subject, since a display name or
    # e-mail address may change hands or collide across providers. Empty: the name.
    id: str = ""

    def __post_init__(self):
        if not self.name or not self.name.strip():
            raise ValueError("a user needs a non-empty name")
        object.__setattr__(self, "groups", validate_groups(self.groups))
        if not self.id:
            object.__setattr__(self, "id", self.name)

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups

    @property
    def own_groups(self) -> tuple[str, ...]:
        """The groups the user belongs to as a reader: admin is a role, not an audience to share documents with."""
        return tuple(group for group in self.groups if group != ADMIN_GROUP)


@dataclass(frozen=True)
class Source:
    doc_id: str
    path: str
    page: int | None
    chunk: int
    score: float
    text: str
    heading: str | None = None
    # What the document calls itself and the period it states; None for documents stored before these were read.
    title: str | None = None
    period: str | None = None
    # The passage is rows of a table, kept as a Markdown grid (header first).
    table: bool = False

    @property
    def location(self) -> str:
        """Where in the document: 'p. 3, Goal 1 > Objective 1.2', the page or the heading path alone, or ''."""
        return ", ".join(part for part in (f"p. {self.page}" if self.page is not None else None, self.heading) if part)

    def grid(self) -> tuple[list[str], list[list[str]]] | None:
        """(header, rows) of a table passage; None for text."""
        return parse_markdown(self.text) if self.table else None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    text: str
    sources: list[Source]
    model: str
    timings: dict[str, float] = field(default_factory=dict)
    adapter: str | None = None  # the LoRA adapter the model answered with, if any
    # A follow-up as the model rewrote it to stand alone, and searched so: shown with the answer.
    search_question: str | None = None

    def to_dict(self) -> dict:
        answer = {
            "answer": self.text,
            "sources": [s.to_dict() for s in self.sources],
            "model": self.model,
            "timings": self.timings,
        }
        # Only when there is one: other answers keep the keys they always had.
        if self.adapter is not None:
            answer["adapter"] = self.adapter
        if self.search_question is not None:
            answer["search_question"] = self.search_question
        return answer

    @classmethod
    def from_dict(cls, data: dict) -> "Answer":
        """An answer as `to_dict` wrote it (a kept conversation's)."""
        return cls(
            text=data["answer"],
            sources=[Source(**source) for source in data.get("sources", [])],
            model=data.get("model", ""),
            timings=data.get("timings", {}),
            adapter=data.get("adapter"),
            search_question=data.get("search_question"),
        )


@dataclass(frozen=True)
class UploadResult:
    """What became of each uploaded file (rows of file name, outcome, reason: no server path), and the ingestion."""

    files: list[dict]
    report: IngestReport | None

    @property
    def summary(self) -> str:
        if self.report is None:
            return "no file could be saved: see each file's reason"
        return self.report.summary()  # counts only, no paths

    def to_dict(self) -> dict:
        """For the uploader: each file by its name, never by where the server keeps it."""
        report = None
        if self.report is not None:
            names = {name: [Path(path).name for path in getattr(self.report, name)] for name in _PATH_LISTS}
            failures = {
                name: [
                    {"path": Path(f.path).name, "reason": row_reason(self.files, f)} for f in getattr(self.report, name)
                ]
                for name in ("failed", "skipped")
            }
            report = {
                **names,
                **failures,
                "chunks": self.report.chunks,
                "seconds": self.report.seconds,
                "redacted": dict(self.report.redacted),
            }
        return {"summary": self.summary, "files": self.files, "report": report}


_PATH_LISTS = ("added", "updated", "unchanged", "removed")


def row_reason(files: list[dict], failure) -> str:
    """A failure's reason as the file's row says it (already free of server paths)."""
    name = Path(failure.path).name
    return next((row["reason"] for row in files if row["file"] == name and row["reason"]), "could not be read")


@dataclass(frozen=True)
class DocumentInfo:
    doc_id: str
    path: str
    groups: tuple[str, ...]
    chunks: int
    size: int
    modified: str
    ingested_at: str
    title: str | None = None
    period: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Health:
    """Whether the assistant can answer now, and for each part that cannot, what to check."""

    store_ok: bool
    store_message: str
    generator_ok: bool
    generator_message: str

    @property
    def ok(self) -> bool:
        return self.store_ok and self.generator_ok
