"""E-mail (EML, Outlook MSG): the message as one section, plus its readable attachments.

An attachment whose type is itself supported is written to a temporary file and read
through ``load``, so it gets the same treatment as a file on disk; its sections are
headed "Subject > attachment name". Attachments of other types, and ones that fail to
load, are skipped: a bad attachment should not cost the reader the message itself.
"""

from __future__ import annotations

import email
import logging
import mimetypes
import tempfile
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from pathlib import Path, PurePath, PureWindowsPath

import extract_msg
from llama_index.core import Document

from .decoding import decode_text
from .errors import LoadError
from .sections import Section, join_heading, one_line, tidy, to_documents
from .web import html_to_text

log = logging.getLogger(__name__)

NO_TEXT_REASON = "no text: the message has no headers, body or readable attachments"
# Forwarded messages inside forwarded messages: real threads stop after a few; a message nested hundreds deep is
# made to cost a re-serialisation and a parse per level (60 levels took 3.6 s, growing with the square).
MAX_NESTED_MESSAGES = 8
_nesting: ContextVar[int] = ContextVar("message_nesting", default=0)
_HEADER_NAMES = ("From", "To", "Cc", "Date", "Subject")


@dataclass
class _Attachment:
    name: str
    suffix: str
    data: bytes


# --- EML -----------------------------------------------------------------------------


def load_eml(path: Path) -> list[Document]:
    data = path.read_bytes()
    # Decoding first rejects binary files renamed to .eml; the parser would accept anything.
    decode_text(data)
    message = email.message_from_bytes(data, policy=policy.default)
    subject = one_line(str(message["subject"] or "")) or None
    headers = {name: str(message[name]) for name in _HEADER_NAMES if message[name]}
    body = _eml_body(message)
    return _message_documents(subject, headers, body, _eml_attachments(message))


def _eml_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    text = _part_text(part)
    return html_to_text(text) if part.get_content_subtype() == "html" else text


def _part_text(part: EmailMessage) -> str:
    try:
        return part.get_content()
    except (LookupError, UnicodeError):
        # An unknown or wrong charset label: detect the encoding from the bytes instead.
        try:
            return decode_text(part.get_payload(decode=True) or b"")
        except LoadError:
            return ""  # a binary "text" body holds nothing to read; attachments may


def _eml_attachments(message: EmailMessage) -> Iterator[_Attachment]:
    for part in message.iter_attachments():
        content_type = part.get_content_type()
        name = part.get_filename() or ""
        suffix = PurePath(name).suffix.lower() or _suffix_for_type(content_type)
        if content_type == "message/rfc822":
            data = part.get_content().as_bytes()  # a forwarded message, kept as a message
        else:
            data = part.get_payload(decode=True) or b""
        yield _Attachment(name=_display_name(name, suffix), suffix=suffix, data=data)


def _suffix_for_type(content_type: str) -> str:
    if content_type == "message/rfc822":
        return ".eml"
    return mimetypes.guess_extension(content_type) or ""


# --- MSG -----------------------------------------------------------------------------


def load_msg(path: Path) -> list[Document]:
    # extract_msg reads Outlook's OLE compound format, which the stdlib cannot.
    message = extract_msg.openMsg(str(path))
    try:
        subject = one_line(message.subject or "") or None
        headers = _msg_headers(message)
        body = message.body or ""
        if not body.strip() and getattr(message, "htmlBody", None):
            body = html_to_text(message.htmlBody)
        attachments = list(_msg_attachments(message))
    finally:
        message.close()
    return _message_documents(subject, headers, body, iter(attachments))


def _msg_headers(message) -> dict[str, str]:
    values = {
        "From": getattr(message, "sender", None),
        "To": getattr(message, "to", None),
        "Cc": getattr(message, "cc", None),
        "Date": getattr(message, "date", None),
        "Subject": getattr(message, "subject", None),
    }
    return {name: str(value) for name, value in values.items() if value}


def _msg_attachments(message) -> Iterator[_Attachment]:
    for attachment in getattr(message, "attachments", []):
        data = attachment.data
        if isinstance(data, bytes):
            name = getattr(attachment, "longFilename", None) or getattr(attachment, "shortFilename", None) or ""
            suffix = PurePath(name).suffix.lower()
        elif hasattr(data, "exportBytes"):
            # An embedded Outlook item (a forwarded message): re-export it as its own .msg.
            name = one_line(getattr(data, "subject", None) or "") or "attached message"
            suffix, data = ".msg", data.exportBytes()
        else:
            continue
        yield _Attachment(name=_display_name(name, suffix), suffix=suffix, data=data)


# --- shared --------------------------------------------------------------------------


def _display_name(name: str, suffix: str) -> str:
    # Senders' file names may carry folders (Windows or POSIX); the heading shows the name.
    return PureWindowsPath(name).name or f"attachment{suffix}"


def _message_documents(
    subject: str | None,
    headers: dict[str, str],
    body: str,
    attachments: Iterator[_Attachment],
) -> list[Document]:
    header_lines = "\n".join(f"{name}: {one_line(value)}" for name, value in headers.items())
    sections = [Section(text=f"{header_lines}\n\n{tidy(body)}", heading=subject)]
    for attachment in attachments:
        sections.extend(_attachment_sections(subject, attachment))
    return to_documents(sections, empty_reason=NO_TEXT_REASON)


def _attachment_sections(subject: str | None, attachment: _Attachment) -> list[Section]:
    from . import SUPPORTED_SUFFIXES, load  # late: the package imports this module

    if attachment.suffix not in SUPPORTED_SUFFIXES:
        log.debug("skipping attachment %r: its type is not supported", attachment.name)
        return []
    if not attachment.data:
        log.warning("skipping attachment %r: it is empty", attachment.name)
        return []
    depth = _nesting.get()
    if depth >= MAX_NESTED_MESSAGES:
        log.warning("skipping attachment %r: attachments nested more than %d deep", attachment.name, depth)
        return []
    with tempfile.TemporaryDirectory(prefix="loader-attachment-") as folder:
        # The attachment's own name could be a path; only its suffix is trusted.
        temporary = Path(folder) / f"attachment{attachment.suffix}"
        temporary.write_bytes(attachment.data)
        token = _nesting.set(depth + 1)
        try:
            documents = load(temporary)
        except LoadError as exc:
            log.warning("skipping attachment %r: %s", attachment.name, exc)
            return []
        finally:
            _nesting.reset(token)
    return [
        Section(
            text=document.text,
            heading=join_heading(subject, attachment.name, document.metadata.get("heading")),
            page=document.metadata.get("page"),
        )
        for document in documents
    ]
