"""The on-prem assistant: ingest documents, ask questions, get answers with sources.

from assistant import Settings, User, build_assistant

    with build_assistant(Settings(data_dir="/srv/assistant")) as assistant: ...

assistant.retriever (the search as a llama-index retriever), assistant.users (portal accounts), assistant.audit (the audit log), assistant.runs (fine-tuning runs),
assistant.uploads (saving uploaded files), assistant.evaluation (`assistant eval`: question files, scores, kept runs)
and assistant.api (the HTTP API, `assistant serve`) are imported by name where
needed.
"""

from assistant.assembly import build_assistant
from assistant.errors import AssistantError, InvalidRequest, NotFound, NotPermitted, QuotaExceeded, StoreUnavailable
from assistant.service import Assistant
from assistant.settings import Settings
from assistant.types import Answer, DocumentInfo, Health, Source, UploadResult, User

# An earlier (question, answer) of a conversation, passed back with a follow-up; the prompt's own type.
from model.prompt import Turn

# What Assistant.ingest returns: the ingestion's own report.
from retrieval import IngestReport

__all__ = [
    "Answer",
    "Assistant",
    "AssistantError",
    "DocumentInfo",
    "Health",
    "IngestReport",
    "InvalidRequest",
    "NotFound",
    "NotPermitted",
    "QuotaExceeded",
    "Settings",
    "Source",
    "StoreUnavailable",
    "Turn",
    "UploadResult",
    "User",
    "build_assistant",
]
