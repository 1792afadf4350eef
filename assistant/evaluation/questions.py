"""An evaluation's question file: one JSON object per line, read and checked line by line.

    {"question": "...", "expected": ["public/expense-policy.pdf", "*.md", "<document id>"],
     "answer": "EUR 70 per day", "page": 2, "groups": ["staff"], "kind": ["table"]}

`expected` names the documents that answer the question: each entry a document id, or a glob matched against the
document's path from its right end (`expense-policy.pdf`, `public/*.pdf`; an absolute pattern must match the whole
path). `answer` is a figure or phrase the right passage holds, `page` the page of the first expected document it is on, `groups` the groups to ask
as (when the run names no reader), `kind` free labels the report breaks the figures down by.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from retrieval import validate_groups

# A question file an administrator uploads is read whole into memory, and each question costs a search: bounded.
MAX_QUESTIONS = 10_000
MAX_FILE_BYTES = 20 * 1024 * 1024

_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class Question(BaseModel):
    # A misspelt key ("expeted") is an error, not a question silently scored against nothing.
    model_config = ConfigDict(extra="forbid", frozen=True)

    question: _Text
    expected: tuple[_Text, ...] = Field(min_length=1)
    answer: _Text | None = None
    page: int | None = Field(default=None, ge=1)
    groups: tuple[str, ...] | None = None
    kind: tuple[_Text, ...] = ()
    line: int = Field(default=0, exclude=True)  # where it was read, for messages

    @field_validator("expected", "kind", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("groups")
    @classmethod
    def _group_names(cls, groups):
        return None if groups is None else validate_groups(groups)

    def expects(self, doc_id: str, path: str) -> bool:
        """Whether a passage of the document `doc_id` at `path` is one this question expects."""
        return any(_matches(doc_id, path, pattern) for pattern in self.expected)

    def on_page(self, doc_id: str, path: str, page: int | None) -> bool:
        """Whether a passage is on `page` of the first expected document, the one the page is counted in."""
        return self.page is not None and page == self.page and _matches(doc_id, path, self.expected[0])


class Problem(BaseModel):
    """A line of the file that is not a question, and why: the run goes on without it, and reports it."""

    model_config = ConfigDict(frozen=True)

    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class QuestionFileError(ValueError):
    """The file as a whole cannot be evaluated (not text, too large, no question in it)."""


def read_questions(raw: bytes, *, max_chars: int) -> tuple[list[Question], list[Problem]]:
    """The questions of a JSON-lines file, and the lines that are not questions (with the reason for each)."""
    if len(raw) > MAX_FILE_BYTES:
        raise QuestionFileError(
            f"the question file has {len(raw):,} bytes, over the limit of {MAX_FILE_BYTES:,}: split it into several runs"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise QuestionFileError(f"the question file is not UTF-8 text ({error}): save it as UTF-8 JSON lines") from None
    questions: list[Question] = []
    problems: list[Problem] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
        except ValueError as error:
            problems.append(Problem(line=number, reason=f"not JSON ({error})"))
            continue
        if not isinstance(fields, dict):
            problems.append(
                Problem(line=number, reason='not a JSON object: each line is {"question": ..., "expected": [...]}')
            )
            continue
        try:
            question = Question.model_validate({**fields, "line": number})
        except ValidationError as error:
            problems.append(Problem(line=number, reason=_reasons(error)))
            continue
        if len(question.question) > max_chars:
            problems.append(
                Problem(
                    line=number, reason=f"the question has {len(question.question):,} characters, over {max_chars:,}"
                )
            )
            continue
        questions.append(question)
    if len(questions) > MAX_QUESTIONS:
        raise QuestionFileError(f"the file holds {len(questions):,} questions, over {MAX_QUESTIONS:,}: split it")
    if not questions:
        found = f" ({problems[0]}{' and more' if len(problems) > 1 else ''})" if problems else ""
        raise QuestionFileError(
            f"the file holds no question{found}: each line is a JSON object such as "
            '{"question": "...", "expected": ["handbook.pdf"]}'
        )
    return questions, problems


def _matches(doc_id: str, path: str, pattern: str) -> bool:
    # PurePath.match compares from the right end, so a pattern written relative to the folder an operator ingested
    # (public/x.pdf) matches wherever that folder lies on the server; an absolute pattern must match the whole path.
    return doc_id == pattern or PurePosixPath(path).match(pattern)


def _reasons(error: ValidationError) -> str:
    reasons = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "the line"
        if problem["type"] == "extra_forbidden":
            reasons.append(f"{where}: not a field (question, expected, answer, page, groups, kind)")
        elif problem["type"] == "too_short":
            reasons.append(f"{where}: empty; name at least one document (a path glob or a document id)")
        else:
            reasons.append(f"{where}: {problem['msg']}")
    return "; ".join(reasons)
