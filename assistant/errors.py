"""The assistant's refusals, in its own words: the CLI, the HTTP API and the portal translate them into theirs.

Every error here has two texts. `str(error)` is safe to show to whoever asked (it names no server path, no adapter
path and no group the caller is not in) and says what to do next; `detail` is for the server's log and for
administrators. Anything that is not one of these is an internal fault: callers answer it without detail (HTTP 500
with an incident id, "tell an administrator" in the portal) and log it whole.
"""

from __future__ import annotations


class AssistantError(Exception):
    """Something the caller can act on; its message says what."""

    def __init__(self, message: str, *, detail: str | None = None):
        super().__init__(message)
        self.detail = detail or message

    def __str__(self) -> str:
        return str(self.args[0])


class InvalidRequest(AssistantError, ValueError):
    """The request itself is wrong (an empty question, a text over its limit, a rating that is not +1 or -1)."""


class NotPermitted(AssistantError, PermissionError):
    """The policy refuses this user this action (`assistant/policy.py` says which rule)."""


class NotFound(AssistantError, KeyError):
    """No such document, or none this user may know of: the two are deliberately the same answer."""


class QuotaExceeded(NotPermitted):
    """The user's upload folder is full."""


class StoreUnavailable(AssistantError):
    """The document store cannot answer now (a server down, a locked or damaged embedded store)."""
