"""Which files a set of paths names, and which version of a file was read.

Ingestion and fine-tuning's `prepare` read folders the same way, through `list_files`: sorted, hidden entries left
out, links followed only to regular files inside the folder being read, and every entry that is not a document
(a loop, an unreadable folder, a pipe, a name in another encoding) given its own line rather than an exception.
"""

import errno
import hashlib
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from retrieval.loaders import SUPPORTED_SUFFIXES, LoadError
from retrieval.loaders.guards import os_reason

NOT_REGULAR = "not a regular file (a pipe, socket or device), so not a document: copy its content into a file"


@dataclass(frozen=True)
class Failure:
    path: str
    reason: str


@dataclass
class Listing:
    files: list[Path] = field(default_factory=list)
    # Roots that do not exist, with the line that says so: a caller that prunes may instead forget what it stored.
    missing: dict[Path, Failure] = field(default_factory=dict)
    failed: list[Failure] = field(default_factory=list)
    # Entries met while walking a folder that are not documents (other file types, links out of it, pipes):
    # reported, not failed, so one stray file does not make a whole folder "fail".
    skipped: list[Failure] = field(default_factory=list)


def list_files(roots: Iterable[Path]) -> Listing:
    """The files `roots` name, in order, each once; every path or folder entry that is not one gets its line.

    A root is taken whatever its suffix (it was named); a file found in a folder only with a loader's suffix.
    """
    listing = Listing()
    files = listing.files
    seen: set[Path] = set()  # a file reached twice (named twice, or through a link) is read once
    for root in roots:
        if problem := _root_problem(root):
            listing.failed.append(Failure(shown(root), problem))
            continue
        try:
            info = root.stat()
        except OSError as exc:
            failure = Failure(shown(root), _stat_reason(root, exc))
            if exc.errno == errno.ENOENT:
                listing.missing[root] = failure
            else:
                listing.failed.append(failure)
            continue
        if stat.S_ISDIR(info.st_mode):
            found = _walk(root, listing)
        elif stat.S_ISREG(info.st_mode):
            found = [root]
        else:
            listing.failed.append(Failure(shown(root), NOT_REGULAR))
            continue
        for path in found:
            if (real := path.resolve()) not in seen:
                seen.add(real)
                files.append(path)
    return listing


def _walk(root: Path, listing: Listing) -> list[Path]:
    """Files under a folder, depth first in name order; links are followed only to files inside it.

    A stack, not recursion: a folder tree can be deeper than Python's recursion limit.
    """
    inside = root.resolve()
    files: list[Path] = []
    stack = [iter(_listing(root, listing))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if entry.name.startswith("."):
            continue  # hidden files and folders (.git, .DS_Store) are not documents
        path = Path(entry.path)
        if not _utf8(path):
            listing.failed.append(Failure(shown(path), UNDECODABLE))
            continue
        try:
            if entry.is_symlink():
                path = _linked_file(path, inside, listing)
            elif entry.is_dir(follow_symlinks=False):
                stack.append(iter(_listing(path, listing)))
                continue
            elif not entry.is_file(follow_symlinks=False):
                listing.skipped.append(Failure(shown(path), NOT_REGULAR))
                continue
        except OSError as exc:
            listing.failed.append(Failure(shown(path), os_reason(exc)))
            continue
        if path is None:
            continue
        if path.suffix.lower() in SUPPORTED_SUFFIXES:
            files.append(path)
        else:
            reason = f"unsupported file type {path.suffix or '(none)'!r}: left out; convert it to include it"
            listing.skipped.append(Failure(shown(path), reason))
    return files


UNDECODABLE = "the file name is not valid UTF-8 (written in another encoding): rename it, e.g. with convmv"


def _utf8(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, kept by Python as lone surrogates
        return False
    return True


def shown(path: Path) -> str:
    """The path for a report line: as given, except undecodable bytes, shown as \\xNN so the line can be printed."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _root_problem(root: Path) -> str | None:
    if not _utf8(root):
        return UNDECODABLE
    if ".." in root.parts:
        # A caller that builds paths from a name it was given would otherwise let the name climb out of the
        # folder it meant ("uploads/../../etc/shadow"); the real path says plainly where the file is.
        return (
            "the path climbs out of a folder with '..', which could lead anywhere: "
            f"name it by its real path, {root.resolve()}"
        )
    return None


def _stat_reason(root: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        if root.is_symlink():
            return f"broken link: it points to {os.readlink(root)}, which does not exist; fix the link or remove it"
        return "no such file or directory"
    return os_reason(exc)


def read_reason(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "no such file: it was moved or deleted after it was listed; ingest it again once it is back"
    return os_reason(exc)


def _listing(folder: Path, listing: Listing) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError as exc:
        listing.failed.append(Failure(shown(folder), f"cannot list the folder: {os_reason(exc)}"))
        return []


def _linked_file(link: Path, inside: Path, listing: Listing) -> Path | None:
    """The link itself when it leads to a regular file inside the folder being walked; otherwise a report line."""
    try:
        target_info = link.stat()
    except OSError as exc:
        listing.failed.append(Failure(shown(link), _stat_reason(link, exc)))
        return None
    target = link.resolve()
    if not target.is_relative_to(inside):
        # Ingesting a folder for some groups must not hand them whatever a link in it points at.
        listing.skipped.append(
            Failure(
                shown(link),
                f"a link to {target}, outside the folder being ingested: not followed; "
                "ingest that file by its own path if these groups may read it",
            )
        )
    elif stat.S_ISDIR(target_info.st_mode):
        listing.skipped.append(
            Failure(
                shown(link),
                f"a link to the folder {target}: not followed, as links to folders can lead in circles; "
                "its files are read where they are",
            )
        )
    elif not stat.S_ISREG(target_info.st_mode):
        listing.skipped.append(Failure(shown(link), NOT_REGULAR))
    else:
        return link
    return None


def sha256_file(path: Path) -> str:
    # Non-blocking, so a file swapped for a pipe since it was listed is refused instead of waited on forever.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise LoadError(NOT_REGULAR)
        return hashlib.file_digest(handle, "sha256").hexdigest()  # in blocks: the file's size never becomes memory


def changed_since(path: Path, before: os.stat_result, content_hash: str) -> bool:
    try:
        after = path.stat()
        if _version(after) != _version(before):
            return True
        # Same size and time can still be new bytes (a copy that keeps the time, a coarse clock): the hash says.
        return sha256_file(path) != content_hash
    except (OSError, LoadError):
        return True  # gone or unreadable now: what was read cannot be vouched for


def _version(info: os.stat_result) -> tuple[int, ...]:
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns
