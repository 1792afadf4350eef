#!/usr/bin/env python3
"""Render the sample corpus's Markdown sources into PDF, DOCX and HTML.

The sample corpus lives in ``samples/`` (one folder per access group).  Most of
it is authored directly as Markdown there; the documents that demonstrate the
other formats are authored as Markdown in ``scripts/samples_src/`` and rendered
by this script, so that ``samples/`` holds no duplicate copies of them:

    expense-policy.md           -> samples/public/expense-policy.pdf
    product-faq.md              -> samples/public/product-faq.html
    it-security-policy.md       -> samples/security/it-security-policy.docx
    salary-bands-and-reviews.md -> samples/hr/salary-bands-and-reviews.pdf

The output is deterministic: the PDF is written with reportlab's ``invariant``
mode, the DOCX has fixed core properties and fixed ZIP entry timestamps, and
the HTML is a plain template.  Running the script twice gives identical bytes.

Usage:
    python scripts/make_samples.py            # (re)write the generated files
    python scripts/make_samples.py --check    # exit 1 if a generated file is stale
    python scripts/make_samples.py --verify   # check samples/questions.jsonl
                                              # against the extracted text

Needs reportlab, python-docx and markdown-it-py (``--verify`` also needs pypdf
and beautifulsoup4).
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import io
import json
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parent.parent
SRC_DIR = ROOT / "scripts" / "samples_src"
SAMPLES_DIR = ROOT / "samples"

# source file name -> path of the generated file, relative to samples/
TARGETS: dict[str, str] = {
    "expense-policy.md": "public/expense-policy.pdf",
    "product-faq.md": "public/product-faq.html",
    "it-security-policy.md": "security/it-security-policy.docx",
    "salary-bands-and-reviews.md": "hr/salary-bands-and-reviews.pdf",
}

COMPANY = "Northwind Aerial Robotics"
# Fixed timestamp for document metadata and ZIP entries (deterministic output).
FIXED_DATE = dt.datetime(2026, 1, 15, 9, 0, 0)


# --------------------------------------------------------------------------
# Markdown -> a small block model shared by the PDF and DOCX writers
# --------------------------------------------------------------------------


@dataclass
class Run:
    text: str
    bold: bool = False
    italic: bool = False
    code: bool = False


@dataclass
class Block:
    kind: str  # "heading" | "para" | "item" | "table" | "rule"
    runs: list[Run] = field(default_factory=list)
    level: int = 0  # heading level, or list depth (1 = top level) for items
    ordered: bool = False  # items only
    number: int = 0  # items only: the item's number in an ordered list
    rows: list[list[list[Run]]] = field(default_factory=list)  # tables only
    header_rows: int = 0  # tables only


def markdown_parser() -> MarkdownIt:
    # Raw HTML is switched off: the sources are plain Markdown.
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def inline_runs(token) -> list[Run]:
    """Turn an ``inline`` token into formatted runs."""
    runs: list[Run] = []
    bold = italic = 0
    for child in token.children or []:
        t = child.type
        if t == "text":
            runs.append(Run(child.content, bold > 0, italic > 0))
        elif t == "code_inline":
            runs.append(Run(child.content, bold > 0, italic > 0, code=True))
        elif t == "strong_open":
            bold += 1
        elif t == "strong_close":
            bold -= 1
        elif t == "em_open":
            italic += 1
        elif t == "em_close":
            italic -= 1
        elif t == "softbreak":
            runs.append(Run(" ", bold > 0, italic > 0))
        elif t == "hardbreak":
            runs.append(Run("\n", bold > 0, italic > 0))
        elif t in ("link_open", "link_close"):
            pass  # keep the link text, drop the target
        else:
            raise ValueError(f"unsupported inline Markdown element: {t}")
    return runs


def plain(runs: list[Run]) -> str:
    return "".join(r.text for r in runs)


def parse_blocks(text: str) -> list[Block]:
    tokens = markdown_parser().parse(text)
    blocks: list[Block] = []
    lists: list[dict] = []  # open lists: {"ordered": bool, "next": int}
    items: list[Block] = []  # open list items
    table: Block | None = None
    in_thead = False
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        t = tok.type
        if t == "heading_open":
            blocks.append(Block("heading", inline_runs(tokens[i + 1]), level=int(tok.tag[1])))
            i += 3
            continue
        if t == "paragraph_open":
            runs = inline_runs(tokens[i + 1])
            if items:
                item = items[-1]
                if item.runs:
                    item.runs.append(Run(" "))
                item.runs.extend(runs)
            else:
                blocks.append(Block("para", runs))
            i += 3
            continue
        if t in ("bullet_list_open", "ordered_list_open"):
            start = int(tok.attrGet("start") or 1) if t == "ordered_list_open" else 1
            lists.append({"ordered": t == "ordered_list_open", "next": start})
        elif t in ("bullet_list_close", "ordered_list_close"):
            lists.pop()
        elif t == "list_item_open":
            cur = lists[-1]
            item = Block("item", level=len(lists), ordered=cur["ordered"], number=cur["next"])
            cur["next"] += 1
            blocks.append(item)
            items.append(item)
        elif t == "list_item_close":
            items.pop()
        elif t == "table_open":
            table = Block("table")
        elif t == "table_close":
            blocks.append(table)
            table = None
        elif t == "thead_open":
            in_thead = True
        elif t == "thead_close":
            in_thead = False
        elif t == "tr_open":
            table.rows.append([])
            if in_thead:
                table.header_rows += 1
        elif t in ("th_open", "td_open"):
            table.rows[-1].append(inline_runs(tokens[i + 1]))
            i += 3
            continue
        elif t == "hr":
            blocks.append(Block("rule"))
        elif t in ("tbody_open", "tbody_close", "tr_close"):
            pass
        else:
            raise ValueError(f"unsupported Markdown block element: {t}")
        i += 1
    return blocks


def document_title(blocks: list[Block], fallback: str) -> str:
    for b in blocks:
        if b.kind == "heading" and b.level == 1:
            return plain(b.runs).strip()
    return fallback


# --------------------------------------------------------------------------
# PDF (reportlab platypus)
# --------------------------------------------------------------------------


def _rl_markup(runs: list[Run]) -> str:
    """Runs -> reportlab paragraph mini-markup (escaped)."""
    out = []
    for r in runs:
        s = html.escape(r.text, quote=False).replace("\n", "<br/>")
        if r.code:
            s = f'<font face="Courier">{s}</font>'
        if r.italic:
            s = f"<i>{s}</i>"
        if r.bold:
            s = f"<b>{s}</b>"
        out.append(s)
    return "".join(out)


def render_pdf(blocks: list[Block], title: str) -> bytes:
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_LEFT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
    from reportlab.lib.units import mm
    from reportlab.platypus import (
        HRFlowable,
        Paragraph,
        SimpleDocTemplate,
        Spacer,
        Table,
        TableStyle,
    )

    base = getSampleStyleSheet()
    accent = colors.HexColor("#1F4E79")
    body = ParagraphStyle(
        "Body",
        parent=base["Normal"],
        fontName="Helvetica",
        fontSize=10.5,
        leading=14.5,
        spaceAfter=7,
        alignment=TA_LEFT,
    )
    styles = {
        "title": ParagraphStyle(
            "DocTitle",
            parent=base["Title"],
            fontName="Helvetica-Bold",
            fontSize=20,
            leading=25,
            textColor=accent,
            alignment=TA_LEFT,
            spaceAfter=12,
        ),
        1: ParagraphStyle(
            "H1",
            parent=base["Heading1"],
            fontName="Helvetica-Bold",
            fontSize=16,
            leading=20,
            textColor=accent,
            spaceBefore=14,
            spaceAfter=8,
        ),
        2: ParagraphStyle(
            "H2",
            parent=base["Heading2"],
            fontName="Helvetica-Bold",
            fontSize=13.5,
            leading=17,
            textColor=accent,
            spaceBefore=12,
            spaceAfter=6,
        ),
        3: ParagraphStyle(
            "H3",
            parent=base["Heading3"],
            fontName="Helvetica-Bold",
            fontSize=11.5,
            leading=15,
            spaceBefore=8,
            spaceAfter=4,
        ),
    }
    for key in ("title", 1, 2, 3):
        styles[key].keepWithNext = 1  # never strand a heading at a page foot
    cell = ParagraphStyle("Cell", parent=body, fontSize=9, leading=11.5, spaceAfter=0)
    cell_head = ParagraphStyle("CellHead", parent=cell, fontName="Helvetica-Bold")

    page_w, page_h = A4
    margin = 22 * mm
    frame_w = page_w - 2 * margin

    frame_h = page_h - 42 * mm  # top + bottom margin

    class Whole(Paragraph):
        """A paragraph that moves to the next page rather than breaking, so
        that no sentence is split across two pages' extracted text."""

        def split(self, avail_w, avail_h):
            if getattr(self, "height", frame_h + 1) <= frame_h:
                return []
            return super().split(avail_w, avail_h)

    story = []
    seen_title = False
    for n, b in enumerate(blocks):
        if story and blocks[n - 1].kind == "item" and b.kind != "item":
            story.append(Spacer(1, 5))  # breathing room after a list
        if b.kind == "heading":
            if b.level == 1 and not seen_title:
                style = styles["title"]
                seen_title = True
            else:
                style = styles[min(b.level, 3)]
            story.append(Paragraph(_rl_markup(b.runs), style))
        elif b.kind == "para":
            story.append(Whole(_rl_markup(b.runs), body))
        elif b.kind == "item":
            indent = 14 * b.level
            style = ParagraphStyle(
                f"Item{b.level}",
                parent=body,
                leftIndent=indent + 4,
                bulletIndent=indent - 10,
                spaceAfter=3,
            )
            bullet = f"{b.number}." if b.ordered else "\u2022"
            if not b.ordered:
                # Helvetica writes U+2022 as code 0x7F, which pypdf does not
                # map back to a bullet; the Symbol font's bullet extracts fine.
                style.bulletFontName = "Symbol"
            story.append(Whole(_rl_markup(b.runs), style, bulletText=bullet))
        elif b.kind == "table":
            ncols = max(len(r) for r in b.rows)
            # column widths proportional to the longest text in each column,
            # with a floor so that short columns stay readable
            lengths = [max(min(len(plain(r[c])), 60) if c < len(r) else 0 for r in b.rows) + 6 for c in range(ncols)]
            widths = [frame_w * n / sum(lengths) for n in lengths]
            data = [
                [
                    Paragraph(
                        _rl_markup(r[c]) if c < len(r) else "",
                        cell_head if ri < b.header_rows else cell,
                    )
                    for c in range(ncols)
                ]
                for ri, r in enumerate(b.rows)
            ]
            tbl = Table(data, colWidths=widths, repeatRows=b.header_rows, hAlign="LEFT")
            tbl.setStyle(
                TableStyle(
                    [
                        ("GRID", (0, 0), (-1, -1), 0.5, colors.HexColor("#9AA5B1")),
                        (
                            "BACKGROUND",
                            (0, 0),
                            (-1, b.header_rows - 1),
                            colors.HexColor("#DCE6F0"),
                        ),
                        ("VALIGN", (0, 0), (-1, -1), "TOP"),
                        ("TOPPADDING", (0, 0), (-1, -1), 3),
                        ("BOTTOMPADDING", (0, 0), (-1, -1), 4),
                    ]
                )
            )
            story.extend([Spacer(1, 2), tbl, Spacer(1, 9)])
        elif b.kind == "rule":
            story.append(HRFlowable(width="100%", color=colors.grey, spaceBefore=4, spaceAfter=8))

    def footer(canvas, doc):
        canvas.saveState()
        canvas.setFont("Helvetica", 8)
        canvas.setFillColor(colors.grey)
        canvas.drawString(margin, 12 * mm, f"{COMPANY} - {title}")
        canvas.drawRightString(page_w - margin, 12 * mm, f"Page {doc.page}")
        canvas.restoreState()

    class _Doc(SimpleDocTemplate):
        # drawn after the page's content, so that text extraction puts the
        # footer at the end of each page rather than the start
        def afterPage(self):
            footer(self.canv, self)

    buf = io.BytesIO()
    doc = _Doc(
        buf,
        pagesize=A4,
        leftMargin=margin,
        rightMargin=margin,
        topMargin=20 * mm,
        bottomMargin=22 * mm,
        title=title,
        author=COMPANY,
        subject=title,
        creator=COMPANY,
        lang="en",
        invariant=1,
    )
    doc.build(story)
    return buf.getvalue()


# --------------------------------------------------------------------------
# DOCX (python-docx)
# --------------------------------------------------------------------------


def _docx_runs(paragraph, runs: list[Run], force_bold: bool = False) -> None:
    for r in runs:
        run = paragraph.add_run(r.text)
        if r.bold or force_bold:
            run.bold = True
        if r.italic:
            run.italic = True
        if r.code:
            run.font.name = "Courier New"


def _normalise_zip(data: bytes) -> bytes:
    """Rewrite a ZIP (DOCX) with fixed entry timestamps and attributes."""
    src = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            zi = zipfile.ZipInfo(info.filename, date_time=FIXED_DATE.timetuple()[:6])
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, src.read(info.filename))
    return out.getvalue()


def render_docx(blocks: list[Block], title: str) -> bytes:
    from docx import Document
    from docx.shared import Pt

    doc = Document()
    props = doc.core_properties
    props.title = title
    props.subject = title
    props.author = COMPANY
    props.last_modified_by = COMPANY
    props.comments = ""
    props.keywords = ""
    props.category = ""
    props.revision = 1
    props.created = FIXED_DATE
    props.modified = FIXED_DATE
    props.last_printed = FIXED_DATE

    for b in blocks:
        if b.kind == "heading":
            # Word's own "Heading 1/2/3" styles, so the structure is real
            p = doc.add_heading(level=min(b.level, 9))
            _docx_runs(p, b.runs)
        elif b.kind == "para":
            _docx_runs(doc.add_paragraph(), b.runs)
        elif b.kind == "item":
            depth = min(b.level, 3)
            if b.ordered:
                # Word's "List Number" continues numbering across separate
                # lists, so ordered items carry their number as text instead.
                p = doc.add_paragraph(style="List Paragraph")
                p.paragraph_format.left_indent = Pt(18 * depth)
                p.add_run(f"{b.number}. ")
            else:
                p = doc.add_paragraph(style="List Bullet" if depth == 1 else f"List Bullet {depth}")
            _docx_runs(p, b.runs)
        elif b.kind == "table":
            ncols = max(len(r) for r in b.rows)
            tbl = doc.add_table(rows=len(b.rows), cols=ncols)
            tbl.style = "Table Grid"
            for ri, r in enumerate(b.rows):
                for c in range(ncols):
                    cell = tbl.cell(ri, c)
                    _docx_runs(
                        cell.paragraphs[0],
                        r[c] if c < len(r) else [],
                        force_bold=ri < b.header_rows,
                    )
            doc.add_paragraph()
        elif b.kind == "rule":
            doc.add_paragraph()

    buf = io.BytesIO()
    doc.save(buf)
    return _normalise_zip(buf.getvalue())


# --------------------------------------------------------------------------
# HTML (markdown-it-py)
# --------------------------------------------------------------------------

HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="author" content="{company}">
<title>{title} | {company}</title>
<style>
  body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; line-height: 1.55;
         max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #1d2733; }}
  h1, h2 {{ color: #1f4e79; }}
  h2 {{ border-bottom: 1px solid #d5dde6; padding-bottom: .2rem; margin-top: 2rem; }}
  h3 {{ margin-bottom: .3rem; }}
  table {{ border-collapse: collapse; }}
  th, td {{ border: 1px solid #9aa5b1; padding: .25rem .5rem; text-align: left; }}
  footer {{ margin-top: 3rem; font-size: .85rem; color: #5b6773; }}
</style>
</head>
<body>
<main>
{body}</main>
<footer>
<p>{company}, Bergen Lake. Customer support: support@northwind-aerial.example</p>
</footer>
</body>
</html>
"""


def render_html(text: str, title: str) -> bytes:
    body = markdown_parser().render(text)
    page = HTML_TEMPLATE.format(title=html.escape(title), company=html.escape(COMPANY), body=body)
    return page.encode("utf-8")


# --------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------


def render(src: Path) -> bytes:
    text = src.read_text(encoding="utf-8")
    target = TARGETS[src.name]
    blocks = parse_blocks(text)
    title = document_title(blocks, src.stem)
    suffix = Path(target).suffix
    if suffix == ".pdf":
        return render_pdf(blocks, title)
    if suffix == ".docx":
        return render_docx(blocks, title)
    if suffix == ".html":
        return render_html(text, title)
    raise ValueError(f"no renderer for {target}")


def sources() -> list[Path]:
    found = sorted(SRC_DIR.glob("*.md"))
    unknown = [p.name for p in found if p.name not in TARGETS]
    if unknown:
        raise SystemExit(f"no target declared in TARGETS for: {', '.join(unknown)}")
    missing = sorted(set(TARGETS) - {p.name for p in found})
    if missing:
        raise SystemExit(f"missing sources in {SRC_DIR}: {', '.join(missing)}")
    return found


def build(check: bool) -> int:
    stale = 0
    for src in sources():
        data = render(src)
        out = SAMPLES_DIR / TARGETS[src.name]
        rel = out.relative_to(ROOT)
        if check:
            if not out.exists() or out.read_bytes() != data:
                print(f"stale: {rel} (run scripts/make_samples.py)")
                stale += 1
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists() and out.read_bytes() == data:
            print(f"unchanged {rel}")
        else:
            out.write_bytes(data)
            print(f"wrote     {rel} ({len(data):,} bytes)")
    return 1 if stale else 0


def extract_text(path: Path) -> str:
    """Plain text of a corpus file, the way a loader would see it."""
    suffix = path.suffix.lower()
    if suffix == ".pdf":
        from pypdf import PdfReader

        return "\n".join(p.extract_text() or "" for p in PdfReader(path).pages)
    if suffix == ".docx":
        from docx import Document

        doc = Document(path)
        parts = [p.text for p in doc.paragraphs]
        for tbl in doc.tables:
            for row in tbl.rows:
                parts.append(" | ".join(c.text for c in row.cells))
        return "\n".join(parts)
    if suffix in (".html", ".htm"):
        from bs4 import BeautifulSoup

        return BeautifulSoup(path.read_bytes(), "html.parser").get_text("\n")
    return path.read_text(encoding="utf-8")


def verify() -> int:
    """Every question's answer phrase must be in its expected file's text."""
    qfile = SAMPLES_DIR / "questions.jsonl"
    failures = 0
    cache: dict[Path, str] = {}
    for n, line in enumerate(qfile.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        q = json.loads(line)
        [expected] = q["expected"]
        path = SAMPLES_DIR / expected
        if path not in cache:
            cache[path] = re.sub(r"\s+", " ", extract_text(path))
        phrase = re.sub(r"\s+", " ", q["answer"])
        ok = phrase in cache[path]
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} line {n}: {expected}: {phrase!r}")
    print(f"{failures} failure(s)")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    group.add_argument(
        "--verify",
        action="store_true",
        help="check samples/questions.jsonl against the extracted text",
    )
    args = ap.parse_args(argv)
    if args.verify:
        return verify()
    return build(check=args.check)


if __name__ == "__main__":
    sys.exit(main())
