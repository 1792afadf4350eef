"""The on-prem assistant: ingest documents, ask questions, get answers with sources.

from assistant import Assistant, Settings, User
"""

from assistant.service import Assistant, DocumentNotFound
from assistant.settings import Settings
from assistant.types import Answer, DocumentInfo, Source, User

__all__ = ["Answer", "Assistant", "DocumentInfo", "DocumentNotFound", "Settings", "Source", "User"]
