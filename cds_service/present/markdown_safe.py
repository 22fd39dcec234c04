"""Escape untrusted (FHIR-derived) text for card `detail` Markdown that may be rendered WITH raw HTML.

The CDS Hooks sandbox renders `detail` with react-markdown + remark-gfm + rehype-raw; other EHRs show the
Markdown source as plain text. So text taken from a record is escaped only where Markdown or HTML would
misread it, and otherwise left as written (`T-score -2.9 <= -2.5` stays readable as source):

* `<` becomes `&lt;` only where it could open a tag, comment or autolink (before a letter, `/`, `!`,
  `?`); `&` becomes `&amp;` only where it would form an entity (`&lt;`, `&#106;`). A `<` before `=`, a
  space or a digit is plain text to both CommonMark and an HTML parser.
* Inline Markdown characters are backslash-escaped: backslash, `` ` ``, `*`, `_`, `[`, `]`, `~`, `|`
  (emphasis, code spans, links and images, GFM strikethrough and tables).
* A block marker at the start of the text (`#`, `>`, `-`, `+`, `*`, `=`, `1.`, `1)`) is escaped: the text
  may open a list item or a line.
* Literal autolinks are broken with a zero-width space (U+200B): remark-gfm finds `http(s)://`,
  `www.` and e-mail addresses in the *decoded* text, after backslash escapes are resolved, so escaping
  alone does not stop them. Dangerous schemes (`javascript:`, `data:`, `vbscript:`, ...) are broken
  the same way.
* Newlines and other control characters collapse to a single space: one string, one line.
"""

from __future__ import annotations

import re

ZWSP = "\u200b"

_INLINE: dict[str, str] = {c: "\\" + c for c in "\\`*_[]~|"}
_INLINE_TABLE = str.maketrans(_INLINE)
_TAG_OPEN = re.compile(r"<(?=[A-Za-z/!?])")
_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")
_BLOCK_START = re.compile(r"^(?:[#>+=-]|\\\*|(\d{1,9})([.)]))")

# Line breaks, other C0/C1 controls, Unicode line/paragraph separators -> one space.
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# Bidirectional embeddings/overrides/isolates (display spoofing) are dropped.
_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
_SPACES = re.compile(r" {2,}")
# Anything `one_line` would change besides the ends: one scan instead of three substitutions.
_NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]|  ")
# A URI scheme that browsers or GFM treat as a link: break it before its colon.
_SCHEME = re.compile(
    r"(?i)\b(javascript|vbscript|livescript|data|file|blob|about|https?|ftps?|mailto|xmpp|tel|sms|"
    r"[a-z][a-z0-9+.\-]{0,31}(?=\s*:\s*//))(\s*):"
)
_WWW = re.compile(r"(?i)\b(www)\.")


def _neutralise_links(text: str) -> str:
    # Each pattern needs its literal character (`:`, `.`): text without it is skipped, not scanned.
    if ":" in text:
        text = _SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{ZWSP}:", text)
    if "." in text and ("w" in text or "W" in text):  # no other character matches w, ignoring case
        text = _WWW.sub(lambda m: f"{m.group(1)}{ZWSP}.", text)
    return text.replace("@", "@" + ZWSP)


def one_line(text: str) -> str:
    """Collapse line breaks and control characters to single spaces; drop bidi overrides; strip."""
    if _NOT_ONE_LINE.search(text) is None:
        return text.strip()  # the common case: nothing to collapse or drop
    text = _BIDI.sub("", _BREAKS.sub(" ", text))
    return _SPACES.sub(" ", text).strip()


def escape_inline(text: str) -> str:
    """`escape` for text that follows other text on its line (no block marker can start there)."""
    return _escape(text)


def escape(text: str) -> str:
    """Make untrusted text inert as GitHub-flavoured Markdown and as HTML, on one line.

    The result renders as the original characters (plus invisible zero-width spaces that break
    autolinks and URI schemes); characters Markdown would not misread are left as they are.
    """
    return _BLOCK_START.sub(_escape_block_marker, _escape(text))


def _escape(text: str) -> str:
    text = _neutralise_links(one_line(text))
    if "&" in text:
        text = _ENTITY.sub("&amp;", text)
    if "<" in text:
        text = _TAG_OPEN.sub("&lt;", text)
    return text.translate(_INLINE_TABLE)


def _escape_block_marker(match: re.Match[str]) -> str:
    if match.group(1) is not None:  # "1." / "1)" would open an ordered list
        return f"{match.group(1)}\\{match.group(2)}"
    marker = match.group(0)
    return marker if marker.startswith("\\") else "\\" + marker
