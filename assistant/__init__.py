"""The on-prem assistant: ingest documents, ask questions, get answers with sources.

from assistant import Assistant, Settings, User

assistant.users (portal accounts), assistant.audit (the audit log), assistant.runs (fine-tuning runs),
assistant.uploads (saving uploaded files) and assistant.api (the HTTP API, `assistant serve`) are imported by name where
needed.
"""

from assistant.service import Assistant, DocumentNotFound
from assistant.settings import Settings
from assistant.types import Answer, DocumentInfo, Health, Source, User

# An earlier (question, answer) of a conversation, passed back with a follow-up; the prompt's own type.
from model.prompt import Turn

# What Assistant.ingest returns: the ingestion's own report.
from retrieval import IngestReport

__all__ = [
    "Answer",
    "Assistant",
    "DocumentInfo",
    "DocumentNotFound",
    "Health",
    "IngestReport",
    "Settings",
    "Source",
    "Turn",
    "User",
]
