"""Who may do what: the assistant's rules, in the one place the service enforces them.

The CLI, the HTTP API and the portal ask the `Assistant`, which applies these checks before it acts; they translate
the refusals (`NotPermitted`, `NotFound`) into their own words, and never decide themselves. Who may *read* a
document is decided inside every search by the store's access filter (`retrieval/access.py`); `may_read` states the
same rule for the places that hold one document (its deletion, its file).

`user=None` in the service means the operator's own process (the `assistant` command or a Python program run with
the data directory at hand): it holds the store and its files anyway, so no rule here could stop it, and what it does
is still audited where it names itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from assistant.errors import InvalidRequest, NotPermitted
from assistant.types import User
from retrieval.access import ADMIN_GROUP

METRICS_GROUP = "metrics"  # the group whose members (a Prometheus key) may read /metrics


class AdapterNotPermitted(NotPermitted):
    """The configured adapter learned documents this user may not read, so it may not answer them."""


def may_read(user: User, document_groups: Iterable[str]) -> bool:
    """The store's access rule for one document: admins read everything; others one of its groups (none: nobody)."""
    return user.is_admin or bool(set(user.groups) & set(document_groups))


def check_share(user: User, groups: tuple[str, ...]) -> None:
    """A user shares documents only with groups they are in, and names one: with none, only admins could read it.

    Sharing with a group one is not in would hand its members text nobody vetted for them.
    """
    if user.is_admin:
        return
    if not groups:
        raise InvalidRequest(
            "choose at least one group that may read the files: a document with no group can only be read by "
            "administrators"
        )
    outside = sorted(set(groups) - set(user.groups))
    if outside:
        # Names only the groups the user chose, which they already know of.
        raise NotPermitted(f"you may share documents only with your own groups, not with {', '.join(outside)}")


def check_delete(user: User) -> None:
    """Only administrators delete; checked before the document is looked up, so a refusal says nothing of it."""
    if not user.is_admin:
        raise NotPermitted("only administrators delete documents: ask one, or upload the file again to replace it")


def check_evaluate(user: User) -> None:
    """Evaluations are for administrators: a run asks as whichever readers it names, and keeps what they were shown."""
    if not user.is_admin:
        raise NotPermitted("only administrators run and read evaluations of the assistant")


def check_metrics(user: User) -> None:
    """The service's counters (requests, refusals, ingestions) are for administrators and the monitoring group."""
    if not (user.is_admin or METRICS_GROUP in user.groups):
        raise NotPermitted(f"metrics are for administrators and members of the group {METRICS_GROUP!r}")


def check_ingest_paths(
    user: User, paths: Iterable[Path], upload_folder: Path, is_stored: Callable[[Path], bool]
) -> None:
    """Which server files a user may have read into the store.

    Anyone: the files in their own upload folder. Administrators also: the paths the store already holds (re-reading
    a document the operator ingested). Nobody acting through the portal or the API names another server path: it
    would put any file the service can read (its keys, its accounts) into the store.
    """
    folder = upload_folder.resolve()
    for path in paths:
        resolved = Path(path).expanduser().resolve()
        if resolved.is_relative_to(folder):
            continue
        if user.is_admin and is_stored(Path(path)):
            continue
        raise NotPermitted(
            "files are added through an upload; only the server's operator indexes other files on the server "
            "(`assistant ingest`)",
            detail=f"{user.name} asked to ingest {path}, outside their upload folder {folder}",
        )


def check_adapter(user: User, audience: tuple[str, ...] | None, adapter: str) -> None:
    """An adapter can repeat what it was trained on whatever the sources say: a user who may not read all of that is
    not answered with it at all. `audience`: the groups it may answer (None: answers come from no adapter)."""
    if audience is None or user.is_admin or set(user.groups) & set(audience):
        return
    trained_on = (
        "on text no group was vouched for, so it answers administrators only"
        if audience == (ADMIN_GROUP,)
        else f"on documents that only {', '.join(audience)} may read, and {user.name} is in none of those groups"
    )
    raise AdapterNotPermitted(
        # The user learns neither where the adapter lies nor which groups' documents it learned.
        "the model that answers here was fine-tuned on documents you may not read, so it cannot answer you: ask an "
        "administrator to switch to another adapter (portal: Models) or to train one on your groups' documents",
        detail=f"the adapter {adapter} was trained {trained_on}",
    )
