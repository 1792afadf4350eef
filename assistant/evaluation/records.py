"""Evaluation runs as kept under the data directory: one JSON file each, with what produced it."""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from pydantic import BaseModel, ValidationError, computed_field

from assistant.evaluation.questions import Problem
from assistant.evaluation.scoring import Measured, QuestionResult, by_kind, latency, summarise
from assistant.files import write_private

_ID = re.compile(r"\d{8}-\d{6}-\d{3}-[0-9a-f]{4}")
LATEST = "latest"

Setting = str | int | float | bool | None


class EvaluationRun(BaseModel):
    id: str
    started: str  # ISO 8601, UTC
    seconds: float
    by: str  # who ran it
    questions_file: str  # its name, as given
    questions_sha256: str
    k: int
    reader: str  # whom the questions were asked as, in words
    answers: bool  # whether the assistant's answers were checked too
    # What produced the figures: the version, the search's settings, the model and adapter, the store's documents.
    snapshot: dict[str, Setting]
    results: list[QuestionResult]
    problems: list[Problem] = []  # the lines that were not asked

    # The figures, from the results (written into the file for whoever reads it without this code, never read back).
    @computed_field
    @cached_property
    def metrics(self) -> dict[str, Measured]:
        return summarise(self.results)

    @computed_field
    @cached_property
    def by_kind(self) -> dict[str, dict[str, Measured]]:
        return by_kind(self.results)

    @computed_field
    @cached_property
    def latency_ms(self) -> dict[str, float]:
        return latency(self.results)

    def figure(self, metric: str) -> float | None:
        measured = self.metrics.get(metric)
        return None if measured is None else measured.value


def new_run_id(now: datetime | None = None) -> str:
    # Sorts by time, to the millisecond; the random tail keeps two runs started in the same millisecond apart.
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%d-%H%M%S}-{now.microsecond // 1000:03d}-{secrets.token_hex(2)}"


def is_run_id(text: str) -> bool:
    return bool(_ID.fullmatch(text))


class RunNotFound(LookupError):
    pass


class RunStore:
    """The kept runs in one directory (readable by the data directory's owner only), newest last."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def save(self, run: EvaluationRun) -> Path:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.directory / f"{run.id}.json"
        write_private(path, run.model_dump_json(indent=1))
        return path

    def ids(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(path.stem for path in self.directory.glob("*.json") if is_run_id(path.stem))

    def runs(self) -> list[EvaluationRun]:
        """Every kept run, oldest first; a damaged file is left out (load names it)."""
        runs = []
        for run_id in self.ids():
            try:
                runs.append(self.load(run_id))
            except RunNotFound:
                continue
        return runs

    def load(self, run_id: str) -> EvaluationRun:
        if not is_run_id(run_id):
            raise RunNotFound(f"{run_id!r} is not a run id (such as 20261204-093000-250-1a2b): `assistant eval --list`")
        return read_run(self.directory / f"{run_id}.json")

    def latest(self, questions_file: str | None = None) -> EvaluationRun:
        """The newest kept run, on a question file of this name where one is given."""
        for run in reversed(self.runs()):
            if questions_file is None or run.questions_file == questions_file:
                return run
        if questions_file is None:
            raise RunNotFound("no evaluation run is kept yet: `assistant eval QUESTIONS.jsonl` makes one")
        raise RunNotFound(f"no kept run on {questions_file} to compare with: run it once without --compare")


def read_run(path: Path) -> EvaluationRun:
    try:
        return EvaluationRun.model_validate_json(Path(path).read_bytes())
    except FileNotFoundError:
        raise RunNotFound(f"no evaluation run {Path(path).stem}: `assistant eval --list` lists the kept ones") from None
    except (OSError, ValidationError, json.JSONDecodeError) as error:
        raise RunNotFound(f"{path} is not a readable evaluation run ({str(error).splitlines()[0]})") from None
