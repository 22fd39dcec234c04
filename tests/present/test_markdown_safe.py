"""markdown_safe.escape: FHIR-derived text must be inert as GFM Markdown and as raw HTML (rehype-raw)."""

from __future__ import annotations

import html
import re

import pytest

from cds_service.present.markdown_safe import ZWSP, escape, one_line

PAYLOADS = [
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil/x.js></SCRIPT>",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "javascript:alert(1)",
    "vbscript:msgbox(1)",
    "data:text/html;base64,PHNjcmlwdD4=",
    "![x](http://evil/)",
    "# heading",
    "| table | x |\n|---|---|\n| a | b |",
    "line one\n# injected heading\n\n- list\r\n> quote",
    "&lt;script&gt;alert(1)&lt;/script&gt; &#106;avascript&#58;alert(1)",
    "<https://evil.example/>",
    "see https://evil.example/path and www.evil.example and a@evil.example",
    "`code` **bold** _em_ ~~strike~~ [ref]: http://evil",
    "<!-- comment --> <a href='javascript:alert(1)'>x</a>",
    "\\<script>",
    "1. ordered\n2) also",
    "text\u2028more\u2029end\x00\x1b[31m",
]

# Characters that Markdown reads inline anywhere in a line: never unescaped in the output.
_MD_INLINE = set("\\`*_[]~|")


def _decode(escaped: str) -> str:
    """What a Markdown renderer shows: backslash escapes resolved, entities decoded, ZWSP removed."""
    text = re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", escaped)
    return html.unescape(text).replace(ZWSP, "")


def _strip_entities(escaped: str) -> str:
    return re.sub(r"&(?:amp|lt);", "", escaped)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_no_raw_html_or_markdown_syntax(payload: str) -> None:
    out = escape(payload)
    assert not re.search(r"<[A-Za-z/!?]", out), "no tag, comment or autolink can open"
    assert "\n" not in out
    assert "\r" not in out
    bare = _strip_entities(out)
    assert not re.search(r"&#?[A-Za-z0-9]+;", bare), "no entity of the input survives"
    assert not re.match(r"[#>+=*-]|\d+[.)]", out), "no block marker at the start"
    i = 0
    while i < len(bare):
        if bare[i] == "\\":
            assert i + 1 < len(bare)
            i += 2
            continue
        assert bare[i] not in _MD_INLINE, (payload, out, i)
        i += 1


@pytest.mark.parametrize("payload", PAYLOADS)
def test_meaning_preserved(payload: str) -> None:
    assert _decode(escape(payload)) == one_line(payload)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_no_link_can_form(payload: str) -> None:
    out = escape(payload)
    low = out.lower()
    assert not re.search(r"(?<!\\)\]\(", out), "a `](` only with the bracket escaped"
    assert not re.search(r"!(?<!\\)\[", out.replace("\\[", "")), "an image needs an unescaped `[`"
    assert "<img" not in low
    assert "<script" not in low
    assert "<a " not in low
    for scheme in ("javascript:", "vbscript:", "data:", "http:", "https:"):
        assert scheme not in low
        # even after resolving backslash escapes and entities (remark-gfm finds autolinks there)
        decoded_raw = html.unescape(re.sub(r"\\(.)", r"\1", out)).lower()
        assert scheme not in decoded_raw
    decoded_raw = html.unescape(re.sub(r"\\(.)", r"\1", out)).lower()
    assert not re.search(r"[a-z0-9+.-]://", decoded_raw)  # a scheme right before "://" = autolink
    assert "www." not in decoded_raw
    assert not re.search(r"[\w.+-]@[\w-]", decoded_raw)


def test_specific_outputs() -> None:
    assert escape("<img src=x onerror=alert(1)>") == "&lt;img src=x onerror=alert(1)>"
    assert escape("# heading") == "\\# heading"
    assert escape("1. first") == "1\\. first"
    assert escape("- item") == "\\- item"
    assert escape("| table |") == "\\| table \\|"
    assert escape("a & b") == "a & b"
    assert escape("&lt;") == "&amp;lt;"
    assert escape('O\'Brien "x"') == 'O\'Brien "x"'
    assert escape("javascript:alert(1)") == f"javascript{ZWSP}:alert(1)"
    assert escape("JavaScript :x") == f"JavaScript {ZWSP}:x"


def test_clinical_text_is_not_over_escaped() -> None:
    """Issue 11: `T\\-score \\-2\\.9 &lt;\\=` was unreadable where the EHR shows the Markdown source."""
    text = "T-score -2.9 (lumbar spine, 2021-02-15) <= -2.5; eGFR 75 mL/min/{1.73_m2}"
    assert escape(text) == "T-score -2.9 (lumbar spine, 2021-02-15) <= -2.5; eGFR 75 mL/min/{1.73\\_m2}"


def test_newlines_and_controls_collapse() -> None:
    assert escape("a\r\n\r\nb\tc\x00d") == "a b c d"
    assert escape("x\u2028y") == "x y"
    assert escape("  padded  ") == "padded"
    assert escape("") == ""


def test_bidi_overrides_dropped() -> None:
    assert escape("abc\u202edef\u2066g") == "abcdefg"


def test_plain_clinical_text_readable() -> None:
    text = "total hip ΔT +0.10 < 0.20 (2021-02-15 → 2024-05-20)"
    out = escape(text)
    assert "ΔT" in out
    assert "→" in out
    assert _decode(out) == text


def test_times_and_ratios_untouched_by_scheme_rule() -> None:
    out = escape("given at 10:30, ratio 1:2, note: check")
    assert ZWSP not in out


# -- the fast paths (skipped scans, one translate) give exactly what the plain three-pass version gave ------

_REF_INLINE = {c: "\\" + c for c in "\\`*_[]~|"}
_REF_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_REF_BIDI = re.compile(r"[\u202a-\u202e\u2066-\u2069]")
_REF_SPACES = re.compile(r" {2,}")
_REF_SCHEME = re.compile(
    r"(?i)\b(javascript|vbscript|livescript|data|file|blob|about|https?|ftps?|mailto|xmpp|tel|sms|"
    r"[a-z][a-z0-9+.\-]{0,31}(?=\s*:\s*//))(\s*):"
)
_REF_WWW = re.compile(r"(?i)\b(www)\.")
_REF_BLOCK_START = re.compile(r"^(?:[#>+=-]|\\\*|(\d{1,9})([.)]))")


def _reference_one_line(text: str) -> str:
    text = _REF_BIDI.sub("", _REF_BREAKS.sub(" ", text))
    return _REF_SPACES.sub(" ", text).strip()


def _reference_escape(text: str) -> str:
    text = _reference_one_line(text)
    text = _REF_SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{ZWSP}:", text)
    text = _REF_WWW.sub(lambda m: f"{m.group(1)}{ZWSP}.", text).replace("@", "@" + ZWSP)
    text = re.sub(r"&(?=#?[A-Za-z0-9]+;)", "&amp;", text)
    text = re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)
    text = "".join(_REF_INLINE.get(char, char) for char in text)

    def marker(match: re.Match[str]) -> str:
        if match.group(1) is not None:
            return f"{match.group(1)}\\{match.group(2)}"
        return match.group(0) if match.group(0).startswith("\\") else "\\" + match.group(0)

    return _REF_BLOCK_START.sub(marker, text)


_ALPHABET = (
    "aAwW.:/@&#;<>!?=-+*_`[]~|\\ 1)( \t\n\r\x00\x1f\x7f\x85\x9f\u00a0\u2000\u2028\u2029\u202a\u202e"
    "\u2066\u2069\u3000\u200bKk\u212aſsS"
)


@pytest.mark.parametrize("seed", range(40))
def test_fast_paths_equal_the_three_pass_version(seed: int) -> None:
    import random

    rng = random.Random(seed)
    texts = [*PAYLOADS, "", " ", "  x  ", "WWW.Evil.example", "JavaScript :x", "plain text, no marks"]
    texts += ["".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 40))) for _ in range(200)]
    texts += [rng.choice(PAYLOADS) + "".join(rng.choice(_ALPHABET) for _ in range(8)) for _ in range(50)]
    for text in texts:
        assert one_line(text) == _reference_one_line(text), repr(text)
        assert escape(text) == _reference_escape(text), repr(text)
