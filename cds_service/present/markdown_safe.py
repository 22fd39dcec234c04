"""Escape untrusted (FHIR-derived) text for card `detail` Markdown that may be rendered WITH raw HTML.

The CDS Hooks sandbox renders `detail` with react-markdown + remark-gfm + rehype-raw, so text taken
from a record must be safe both as GitHub-flavoured Markdown and as HTML:

* HTML-significant characters become entities (`&amp;`, `&lt;`, `&gt;`, `&quot;`, `&#39;`): no tag,
  comment or attribute can be formed, and `<...>` autolinks cannot start.
* Markdown control characters are backslash-escaped: no emphasis, links, images, headings, tables,
  lists, code spans or strikethrough.
* Literal autolinks are broken with a zero-width space (U+200B): remark-gfm finds `http(s)://`,
  `www.` and e-mail addresses in the *decoded* text, after backslash escapes are resolved, so escaping
  alone does not stop them. Dangerous schemes (`javascript:`, `data:`, `vbscript:`, ...) are broken
  the same way even though no link syntax survives the escaping.
* Newlines and other control characters collapse to a single space: one string, one line.

Each input character maps to exactly one output form in a single pass, so entities are never
backslash-escaped (which would display them literally) and escapes are never entity-encoded.
"""

from __future__ import annotations

import re

ZWSP = "\u200b"

_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}
_MARKDOWN = frozenset("\\`*_{}[]()#+-.!|~=^$:")
_MAP: dict[str, str] = {c: "\\" + c for c in _MARKDOWN}
_MAP.update(_HTML)

# Line breaks, other C0/C1 controls, Unicode line/paragraph separators -> one space.
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# Bidirectional embeddings/overrides/isolates (display spoofing) are dropped.
_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
_SPACES = re.compile(r" {2,}")
# A URI scheme that browsers or GFM treat as a link: break it before its colon.
_SCHEME = re.compile(
    r"(?i)\b(javascript|vbscript|livescript|data|file|blob|about|https?|ftps?|mailto|xmpp|tel|sms|"
    r"[a-z][a-z0-9+.\-]{0,31}(?=\s*:\s*//))(\s*):"
)
_WWW = re.compile(r"(?i)\b(www)\.")


def _neutralise_links(text: str) -> str:
    text = _SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{ZWSP}:", text)
    text = _WWW.sub(lambda m: f"{m.group(1)}{ZWSP}.", text)
    return text.replace("@", "@" + ZWSP)


def one_line(text: str) -> str:
    """Collapse line breaks and control characters to single spaces; drop bidi overrides; strip."""
    text = _BIDI.sub("", _BREAKS.sub(" ", text))
    return _SPACES.sub(" ", text).strip()


def escape(text: str) -> str:
    """Make untrusted text inert as GitHub-flavoured Markdown and as HTML, on one line.

    The result renders as the original characters (plus invisible zero-width spaces that break
    autolinks and URI schemes).
    """
    text = _neutralise_links(one_line(text))
    return "".join(_MAP.get(char, char) for char in text)
