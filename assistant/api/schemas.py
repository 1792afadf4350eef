"""Request and response models: what each route accepts and answers, and so the OpenAPI document.

Bounds are part of the contract: a question is a sentence or a paragraph (the search reads the first 256 word pieces
of it, and each is written whole to the audit log), and lists are bounded so that one request costs a bounded
amount whatever it holds. The body limit (ASSISTANT_API_MAX_REQUEST_KB) bounds the rest.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from retrieval.access import GROUP_NAME_PATTERN

MAX_QUESTION_CHARS = 8_000
MAX_ANSWER_CHARS = 50_000  # an earlier answer sent back as history: only its first 1,000 characters reach the model
MAX_HISTORY_TURNS = 50  # only the last 3 steer a follow-up; more is accepted so clients need not trim
MAX_MESSAGES = 200


def _encodable(text: str) -> str:
    # JSON may carry lone surrogates ("\ud800"), which no tokenizer, log or store can encode: refused here, in words.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (it holds a lone surrogate)") from None
    return text


def _a_json_number(value: Any) -> Any:
    # As JSON Schema reads the document: an integer may be written 5.0, but `true` and "5" are not numbers. Pydantic's
    # lax mode converts all three, its strict mode none.
    if isinstance(value, (bool, str)):
        raise PydanticCustomError("number_type", "must be a number, not {value}", {"value": repr(value)})
    return value


Text = Annotated[str, AfterValidator(_encodable)]
Count = Annotated[int, BeforeValidator(_a_json_number)]
Number = Annotated[float, BeforeValidator(_a_json_number)]


# One character that is white space neither to JSON Schema (ECMA-262's \s, which has U+FEFF) nor to Python (whose
# str.strip, used by the service, also strips U+001C-U+001F and U+0085): the pattern is a search, so a question
# matches it when it holds anything besides white space.
NOT_BLANK = r"[^\s\u001c-\u001f\u0085\ufeff]"


def _not_blank(text: str) -> str:
    if not re.search(NOT_BLANK, text):
        raise ValueError("is empty or only white space: ask something")
    return text


# The document states the rule with the pattern; the validator says it in words when a request breaks it.
Question = Annotated[
    str,
    Field(min_length=1, max_length=MAX_QUESTION_CHARS, json_schema_extra={"pattern": NOT_BLANK}),
    AfterValidator(_encodable),
    AfterValidator(_not_blank),
]


# A group name as the store accepts it. Stated in the document, checked by the store's own validation (whose refusal
# names the rule in words).
GroupName = Annotated[str, Field(json_schema_extra={"pattern": f"^{GROUP_NAME_PATTERN}$"})]


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, and what to do about it")


class SourceModel(BaseModel):
    doc_id: str
    path: str
    page: int | None
    chunk: int
    score: float
    text: str = Field(description="The passage; a table's rows as a Markdown grid, header first, when table is true")
    heading: str | None = Field(default=None, description="Its section: the heading path, e.g. 'Leave > Sick leave'")
    title: str | None = Field(default=None, description="What its document calls itself (title page or metadata)")
    period: str | None = Field(default=None, description="The period its document states: 'FY 2019', '2023-10-26'")
    table: bool = False


class TurnModel(BaseModel):
    question: Annotated[str, Field(max_length=MAX_QUESTION_CHARS), AfterValidator(_encodable)]
    answer: Annotated[str, Field(max_length=MAX_ANSWER_CHARS), AfterValidator(_encodable)]


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored

    question: Question
    k: Count = Field(default=5, ge=1, le=50, description="How many passages the answer is written from")
    history: list[TurnModel] = Field(
        default_factory=list,
        max_length=MAX_HISTORY_TURNS,
        description="The conversation so far, oldest first: makes a follow-up ('and for part-timers?') answerable",
    )


class AnswerModel(BaseModel):
    answer: str
    sources: list[SourceModel]
    model: str = Field(description="What wrote the answer: a model's name, or 'extractive' (the sources' sentences)")
    timings: dict[str, float] = Field(
        description="retrieve_ms, generate_ms, total_ms and, from a model, first_token_ms"
    )
    adapter: str | None = None
    search_question: str | None = Field(
        default=None, description="A follow-up as the model rewrote it to stand alone, which is what was searched"
    )


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Question
    k: Count = Field(default=10, ge=1, le=100)


class SearchResponse(BaseModel):
    sources: list[SourceModel]


class DocumentModel(BaseModel):
    doc_id: str
    path: str
    groups: list[str] = Field(description="Who may read it; empty: administrators only")
    chunks: int
    size: int
    modified: str
    ingested_at: str
    title: str | None = None
    period: str | None = None


class DocumentsResponse(BaseModel):
    documents: list[DocumentModel]


class FailureModel(BaseModel):
    path: str
    reason: str


class IngestReportModel(BaseModel):
    added: list[str]
    updated: list[str]
    unchanged: list[str]
    removed: list[str]
    failed: list[FailureModel]
    skipped: list[FailureModel]
    chunks: int
    seconds: float
    redacted: dict[str, int]


class FileOutcome(BaseModel):
    file: str
    outcome: Literal["added", "updated", "unchanged", "failed", "refused", "not indexed"]
    reason: str


class IngestResponse(BaseModel):
    summary: str
    files: list[FileOutcome] = Field(description="One row per uploaded file")
    report: IngestReportModel | None = Field(description="The ingestion's report; null when no file could be saved")


class Liveness(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    store: Literal["ok", "failing"]
    generator: Literal["ok", "failing"]


# --- OpenAI-compatible chat completions ------------------------------------------------------------------------


class TextPart(BaseModel):
    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    # OpenAI's clients send more than this (tool calls, names, refusals): accepted, and not used.
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content)


class ChatCompletionRequest(BaseModel):
    """OpenAI's request shape. The answer comes from retrieval over the documents the caller may read.

    The last user message is the question and earlier user/assistant pairs are the conversation. System and developer
    messages are not followed: the assistant's own instructions (answer from the sources, cite them, never from
    elsewhere) are not the caller's to replace. `model` may name anything; the server answers with its configured
    model. `max_tokens` and `temperature` are accepted for compatibility; the server's ASSISTANT_MAX_NEW_TOKENS and
    ASSISTANT_TEMPERATURE apply.
    """

    model_config = ConfigDict(extra="allow")

    model: Annotated[str, Field(max_length=256)]
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = Field(default=False, strict=True)
    max_tokens: Count | None = Field(default=None, ge=1)
    max_completion_tokens: Count | None = Field(default=None, ge=1)
    temperature: Number | None = Field(default=None, ge=0, le=2)
    top_p: Number | None = Field(default=None, ge=0, le=1)
    n: Count = Field(default=1, ge=1, le=1, description="One answer per request")
    user: str | None = Field(default=None, max_length=256)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop"]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    # Extensions, beside OpenAI's fields (clients that do not know them ignore them):
    sources: list[SourceModel] = Field(description="The passages the answer was written from, numbered as cited")
    answer_model: str = Field(description="What wrote the answer: a model's name, or 'extractive'")
    adapter: str | None = None
    timings: dict[str, float]
    search_question: str | None = Field(default=None, description="A follow-up as rewritten and searched")


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: Literal["stop"] | None


class ChatCompletionChunk(BaseModel):
    """One `data:` event of a streamed answer; the last one before `data: [DONE]` carries the sources."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    sources: list[SourceModel] | None = None
    answer_model: str | None = None
    adapter: str | None = None
    timings: dict[str, float] | None = None
    search_question: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entries of the errors a route may answer, each with the JSON body all errors share."""
    meaning = {
        400: "The request is malformed",
        401: "No credentials, or credentials that are not valid (see WWW-Authenticate)",
        403: "The caller may not do this",
        404: "No such document",
        413: "The request body is larger than the limit",
        422: "The request does not have the expected form",
        429: "Too many requests from this caller (see Retry-After)",
        503: "The service cannot answer now (audit log, store or model unavailable)",
    }
    return {status: {"model": ErrorBody, "description": meaning[status]} for status in statuses}
