"""The small data types of the assistant's API."""

from dataclasses import asdict, dataclass, field

from retrieval import ADMIN_GROUP, validate_groups


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()

    def __post_init__(self):
        if not self.name or not self.name.strip():
            raise ValueError("a user needs a non-empty name")
        object.__setattr__(self, "groups", validate_groups(self.groups))

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

    @property
    def location(self) -> str:
        """Where in the document: 'p. 3' or the heading path."""
        if self.page is not None:
            return f"p. {self.page}"
        return self.heading or ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    text: str
    sources: list[Source]
    model: str
    timings: dict[str, float] = field(default_factory=dict)
    adapter: str | None = None  # the LoRA adapter the model answered with, if any

    def to_dict(self) -> dict:
        answer = {
            "answer": self.text,
            "sources": [s.to_dict() for s in self.sources],
            "model": self.model,
            "timings": self.timings,
        }
        if self.adapter is not None:  # only then: answers without one keep the keys they always had
            answer["adapter"] = self.adapter
        return answer


@dataclass(frozen=True)
class DocumentInfo:
    doc_id: str
    path: str
    groups: tuple[str, ...]
    chunks: int
    size: int
    modified: str
    ingested_at: str

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
