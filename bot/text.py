"""Text safety for what people type and what the bot shows.

Typed text is capped, stripped of control characters and of bidirectional overrides (which
can make a line display as something other than what it says), and always HTML-escaped
before it is shown. Right-to-left messages isolate left-to-right values so lines do not
scramble.
"""

from __future__ import annotations

import html
import re
import unicodedata

#: Longest typed text the bot looks at at all; flows cap their own answers lower.
MAX_INPUT_CHARS = 2000
#: Room under Telegram's 4096 characters for the bot's own additions.
MAX_CHUNK = 3800

# Embeddings, overrides and isolates: U+202A-U+202E and U+2066-U+2069; also the
# zero-width marks that can hide text.
_BIDI = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))} | {
    "\u200b",
    "\u200e",
    "\u200f",
    "\u061c",
    "\ufeff",
}

LRI, RLI, FSI, PDI = "\u2066", "\u2067", "\u2068", "\u2069"


def clean_input(text: str) -> str:
    """Cap, drop control and bidi-control characters, keep line breaks; trim."""
    text = text[:MAX_INPUT_CHARS]
    kept = []
    for char in text:
        if char in _BIDI:
            continue
        if char in "\n\t":
            kept.append(" " if char == "\t" else char)
            continue
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co"):
            continue
        kept.append(char)
    return "".join(kept).strip()


def esc(text: str) -> str:
    """Escape for Telegram's HTML parse mode."""
    return html.escape(text, quote=False)


def isolate(value: str) -> str:
    """Wrap a left-to-right value (a code, a number, a name) for right-to-left text."""
    return f"{LRI}{value}{PDI}"


_LTR_RUN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 .,:/()+\-]*[A-Za-z0-9)]|[A-Za-z0-9]")


def directional(text: str, rtl: bool) -> str:
    """In right-to-left text, isolate every left-to-right run (codes, numbers, "Tool 1.6").

    Without isolates, a run such as "3/12" or "Tool 1.6" beside Arabic letters is reordered
    by the bidi algorithm and reads scrambled.
    """
    if not rtl:
        return text
    return _LTR_RUN.sub(lambda m: isolate(m.group(0)), text)


def chunks(text: str, limit: int = MAX_CHUNK) -> list[str]:
    """Split a long text at paragraph (else line, else hard) boundaries under ``limit``."""
    out: list[str] = []
    current = ""
    for paragraph in text.split("\n\n"):
        piece = paragraph if not current else current + "\n\n" + paragraph
        if len(piece) <= limit:
            current = piece
            continue
        if current:
            out.append(current)
        rest = paragraph
        while len(rest) > limit:
            cut = rest.rfind("\n", 0, limit)
            cut = cut if cut > 0 else limit
            out.append(rest[:cut])
            rest = rest[cut:].lstrip("\n")
        current = rest
    if current:
        out.append(current)
    return out or [""]
