"""Evaluation runs started from the portal, carried out in a thread of the portal's process.

A run over a real question file takes minutes (seconds per question with a reranker or a model). In the page's own
script it would stop the moment the administrator clicked anything or left the page (Streamlit stops a script to
rerun it), and the run would be lost; in a thread it goes on, and the page only shows how far it has got.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from assistant import Assistant, User
from assistant.evaluation.records import EvaluationRun


@dataclass
class Job:
    name: str  # the question file's
    done: int = 0
    total: int = 0
    run: EvaluationRun | None = None
    error: BaseException | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    def progress(self, done: int, total: int) -> None:
        self.done, self.total = done, total


class Jobs:
    """The process's evaluation jobs, one at a time per administrator (by their id)."""

    def __init__(self):
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def current(self, admin: User) -> Job | None:
        with self._lock:
            return self._jobs.get(admin.id)

    def start(self, assistant: Assistant, data: bytes, name: str, admin: User, **options) -> Job:
        with self._lock:
            running = self._jobs.get(admin.id)
            if running is not None and not running.finished.is_set():
                return running  # a second click while it runs starts nothing
            job = self._jobs[admin.id] = Job(name)

        def work() -> None:
            try:
                job.run = assistant.evaluate(data, name, admin, progress=job.progress, **options)
            except Exception as error:  # noqa: BLE001 - handed to the page, which shows it as every page does
                job.error = error
            finally:
                job.finished.set()

        threading.Thread(target=work, name=f"evaluation {name}", daemon=True).start()
        return job

    def forget(self, admin: User, job: Job) -> None:
        with self._lock:
            if self._jobs.get(admin.id) is job:
                del self._jobs[admin.id]
