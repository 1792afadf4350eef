"""Who may read what: group names and the filter that enforces them inside every search and listing."""

import re
from collections.abc import Iterable

from retrieval.points import Where

ADMIN_GROUP = "admin"

# Plain names only: no wildcards, no spaces, nothing a filter or a shell could read as syntax. Public, so that the HTTP
# API's OpenAPI document states the same rule.
GROUP_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"
_GROUP_NAME = re.compile(GROUP_NAME_PATTERN)


class InvalidGroupName(ValueError):
    pass


def validate_groups(groups: Iterable[str]) -> tuple[str, ...]:
    """Sorted, de-duplicated group names; raises InvalidGroupName on the first bad one."""
    if isinstance(groups, str):
        raise InvalidGroupName(f"groups must be a list of names, not the string {groups!r}")
    names = set()
    for group in groups:
        if not isinstance(group, str) or not _GROUP_NAME.fullmatch(group):
            raise InvalidGroupName(
                f"invalid group name {group!r}: use 1-64 letters, digits, '_', '.', '@' or '-', "
                "starting with a letter or digit"
            )
        names.add(group)
    return tuple(sorted(names))


def access_filter(groups: Iterable[str]) -> Where | None:
    """The filter every read carries: None (no restriction) only for admins.

    A point is readable when its ``groups`` payload shares a group with the reader. A point
    stored with no groups matches no reader, so only admins see it. A reader with no groups
    gets a filter that matches nothing, rather than no filter.
    """
    groups = validate_groups(groups)
    if ADMIN_GROUP in groups:
        return None
    return Where.match("groups", *groups)
