"""Each user's conversations, kept on the server: listed, resumed, renamed, deleted, and forgotten after a while.

One JSON file per conversation under `<conversations_dir>/<owner>/`, the owner's folder named by a hash of their id
(an identity provider's id may hold any character), folders 0700 and files 0600: the service account only. A
conversation whose last question is older than the retention is deleted the next time its owner's list is read.
The Assistant decides who may see what (assistant/service.py); this module only keeps the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from assistant.files import write_private

_ID = re.compile(r"^[0-9a-f]{32}$")
TITLE_CHARS = 80


@dataclass
class StoredTurn:
    question: str
    answer: dict  # Answer.to_dict(): the text, its sources and model as they were shown
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class Conversation:
    id: str
    title: str
    created: str
    updated: str
    turns: list[StoredTurn] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> Conversation:
        return cls(**{**data, "turns": [StoredTurn(**turn) for turn in data.get("turns", [])]})


class ConversationStore:
    def __init__(self, root: Path, retention_days: int):
        self.root = Path(root)
        self.retention = timedelta(days=retention_days)

    def list(self, owner: str) -> list[Conversation]:
        """The owner's conversations, the most recent first; expired ones are deleted on the way."""
        folder = self._folder(owner)
        if not folder.is_dir():
            return []
        cutoff = datetime.now(UTC) - self.retention
        kept = []
        for file in folder.glob("*.json"):
            conversation = self._read(file)
            if conversation is None:
                continue
            if datetime.fromisoformat(conversation.updated) < cutoff:
                file.unlink(missing_ok=True)
                continue
            kept.append(conversation)
        return sorted(kept, key=lambda c: c.updated, reverse=True)

    def get(self, owner: str, conversation_id: str) -> Conversation | None:
        file = self._file(owner, conversation_id)
        return self._read(file) if file is not None and file.is_file() else None

    def add_turn(self, owner: str, conversation_id: str | None, turn: StoredTurn) -> Conversation:
        """Appends to the owner's conversation, or starts one (titled by its first question) when the id is None."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        conversation = self.get(owner, conversation_id) if conversation_id else None
        if conversation_id and conversation is None:
            raise KeyError(conversation_id)
        if conversation is None:
            title = " ".join(turn.question.split())[:TITLE_CHARS]
            conversation = Conversation(uuid.uuid4().hex, title, now, now)
        conversation.turns.append(turn)
        conversation.updated = now
        self._write(owner, conversation)
        return conversation

    def rename(self, owner: str, conversation_id: str, title: str) -> Conversation:
        conversation = self.get(owner, conversation_id)
        if conversation is None:
            raise KeyError(conversation_id)
        conversation.title = title
        self._write(owner, conversation)
        return conversation

    def delete(self, owner: str, conversation_id: str) -> bool:
        file = self._file(owner, conversation_id)
        if file is None or not file.is_file():
            return False
        file.unlink()
        return True

    def _folder(self, owner: str) -> Path:
        return self.root / hashlib.sha256(owner.encode("utf-8")).hexdigest()[:32]

    def _file(self, owner: str, conversation_id: str) -> Path | None:
        # An id is 32 hex digits, never a path: nothing else names a file here.
        return self._folder(owner) / f"{conversation_id}.json" if _ID.match(conversation_id or "") else None

    @staticmethod
    def _read(file: Path) -> Conversation | None:
        try:
            return Conversation.from_dict(json.loads(file.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None  # a damaged file is left alone, not shown

    def _write(self, owner: str, conversation: Conversation) -> None:
        folder = self._folder(owner)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)
        write_private(folder / f"{conversation.id}.json", json.dumps(asdict(conversation), ensure_ascii=False))
