"""Text from documents, users and models, shown as the characters it holds and never as markup.

A document may hold `![x](http://host/beacon?...)`, `<img src=...>` or `[click](http://evil)`; rendered as Markdown
or HTML, every reader's browser would fetch the image or show the link (and with a model in the loop, an injected
order can put other passages into that URL). So nothing written by someone else reaches `st.markdown`,
`st.write_stream` or any other Markdown-rendering call unescaped:

- a body of text (an answer, a question, a passage) goes through `show_text`: escaped HTML in `st.html`. Escaped,
  the HTML holds no tag at all; and unlike Markdown, `st.html` does not turn bare URLs into links (Streamlit's
  Markdown renderer links `http://...`, `www.` and e-mail addresses found in plain text, after escapes are read:
  `mdast-util-gfm-autolink-literal` in static/static/js/StreamlitMarkdown.*.js).
- a fragment inside the portal's own Markdown (a file name in a label, a caption or an error) goes through `md`:
  every Markdown character backslash-escaped, and an invisible word joiner inside each URL or address pattern so
  that the autolinker finds nothing to link.
"""

from __future__ import annotations

import html
import re
import string
from collections.abc import Iterable

import streamlit as st

# `white-space: pre-wrap` keeps the text's own line breaks and spaces, as Markdown would not; long lines still wrap.
_BLOCK = '<div class="safe-text" style="white-space: pre-wrap; overflow-wrap: anywhere">{}</div>'

# CommonMark lets a backslash escape any ASCII punctuation character, and then reads it as that character only.
_MARKDOWN = re.compile(f"([{re.escape(string.punctuation)}])")
# What remark-gfm's autolink-literal transform links (`https?://`, `www.`, `name@host`), each split by a word joiner
# (U+2060: invisible, and no line break) where its pattern needs two characters side by side.
_WORD_JOINER = "\u2060"
_LINKABLE = re.compile(r"(?<=:)(?=//)|(?<=www)(?=\.)|(?<=@)(?=[\w-])", re.IGNORECASE)


def html_text(text: str) -> str:
    """`text` as an HTML block that shows exactly its characters: no tag, entity or URL in it does anything."""
    # html.escape leaves no `<`, `>`, `&` or quote that a parser could read; DOMPurify then has nothing to keep.
    return _BLOCK.format(html.escape(str(text), quote=True))


def show_text(text: str, container=None) -> None:
    """Shows a body of text written by a document, a user or a model, in `container` (default: where st writes)."""
    (container or st).html(html_text(text))


def md(text: str) -> str:
    """`text` as Markdown that renders to exactly its characters: no image, link, HTML, emphasis or heading."""
    # The joiners first: the autolinker reads the text after escapes are resolved, and a joiner is no punctuation.
    return _MARKDOWN.sub(r"\\\1", _LINKABLE.sub(_WORD_JOINER, str(text)))


def stream_text(pieces: Iterable[str], container=None) -> str:
    """Shows text as it arrives, escaped like show_text, and returns it whole.

    One placeholder is replaced with everything so far at each piece: `st.write_stream` would render Markdown, and
    an image tag completed by the last piece would be fetched the moment it is whole.
    """
    placeholder = (container or st).empty()
    text = ""
    for piece in pieces:
        text += str(piece)
        if text:
            placeholder.html(html_text(text))
    return text
