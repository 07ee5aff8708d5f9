"""Loopback fake of the Telegram Bot API, checked against the official spec.

The real python-telegram-bot stack (``Application`` + ``HTTPXRequest``) talks to
:class:`FakeBotAPI` over HTTP on 127.0.0.1. Every request is validated against
``api.json`` (the machine-readable Bot API spec kept in ``../shared`` beside the
project root): unknown methods and fields, missing required fields, value types
(recursively through object types and unions), documented length limits and
``parse_mode`` markup. Anything the real Telegram would reject because the *bot*
is wrong is recorded in :attr:`FakeBotAPI.violations` and answered with HTTP 400;
the :func:`fake_bot_api` fixture fails the test at teardown when any were recorded.

Benchmarks run it in a separate process instead (``python -m tests.fakes.telegram_api``,
see :func:`serve`), so its request handling does not compete with the bot under test for
one interpreter's GIL; there, a few control endpoints under ``/_fake/`` replace the Python
calls (violations, CPU time, callback query ids for updates the driver builds itself).

Normal API errors that a correct bot must cope with (``message to edit not
found``, ``message is not modified``, injected 429/5xx faults, an unreachable
server) are *not* violations: they are answered like Telegram answers them.

Text lengths are counted in UTF-16 code units, as Telegram counts them (an emoji
outside the BMP counts as 2); byte limits (``callback_data``) count UTF-8 bytes.
Limits that Telegram measures "after entities parsing" are measured on the
visible text after applying ``parse_mode`` and trimming surrounding whitespace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import email.parser
import email.policy
import html
import json
import math
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar, cast

import pytest

__all__ = [
    "BOT_ID",
    "BOT_USER",
    "CONTROL_PREFIX",
    "SPEC_ENV",
    "BotApiSpec",
    "FakeBotAPI",
    "Parsed",
    "UploadedFile",
    "clear_proxy_env",
    "default_spec_path",
    "fake_bot_api",
    "parse_formatted",
    "serve",
    "utf16_len",
]

JSON = dict[str, Any]
_T = TypeVar("_T")

BOT_ID: Final = 123456
BOT_USER: Final[JSON] = {
    "id": BOT_ID,
    "is_bot": True,
    "first_name": "Waymark Test",
    "username": "waymark_test_bot",
    "can_join_groups": True,
    "can_read_all_group_messages": False,
    "supports_inline_queries": False,
}
# The "from" of messages the bot sends carries only the short User form, like Telegram.
_BOT_FROM: Final[JSON] = {k: BOT_USER[k] for k in ("id", "is_bot", "first_name", "username")}
SPEC_ENV: Final = "WAYMARK_BOT_API_SPEC"

PARSE_MODES: Final = frozenset({"HTML", "MarkdownV2", "Markdown"})
CHAT_ACTIONS: Final = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
MEDIA_KINDS: Final = ("photo", "voice", "sticker", "document", "location", "video")
_PROXY_VARS: Final = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
# Control endpoints of a fake started with control=True (the separate process of serve()).
CONTROL_PREFIX: Final = "/_fake/"
# Long polls are capped so a test never waits long for an empty getUpdates to return.
_POLL_BLOCK_CAP: Final = 0.5
_NOT_MODIFIED: Final = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
_DEFAULT_FAULT_DESCRIPTIONS: Final[dict[int, str]] = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


def default_spec_path() -> Path:
    """Return the location of ``api.json``.

    Returns:
        ``$WAYMARK_BOT_API_SPEC`` when set, else ``../shared/telegram-bot-api/api.json``
        beside the project root.
    """
    override = os.environ.get(SPEC_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2].parent / "shared" / "telegram-bot-api" / "api.json"


def utf16_len(text: str) -> int:
    """Return the length of ``text`` in UTF-16 code units, the unit Telegram counts in.

    Args:
        text: Any string.

    Returns:
        The number of UTF-16 code units.
    """
    return len(text.encode("utf-16-le")) // 2


def clear_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove proxy variables so httpx talks to 127.0.0.1 directly.

    Args:
        monkeypatch: The test's monkeypatch fixture (undone at teardown).
    """
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request (an ``InputFile`` upload).

    Attributes:
        filename: The file name the client sent.
        content_type: The part's content type.
        data: The raw bytes.
    """

    filename: str
    content_type: str
    data: bytes = field(repr=False)


# --------------------------------------------------------------------------- formatting


class Parsed(NamedTuple):
    """Result of applying a ``parse_mode`` to a text.

    Attributes:
        text: The visible text (markup removed, entities decoded).
        entities: MessageEntity dicts with UTF-16 offsets (HTML only; empty otherwise).
        errors: Problems Telegram would reject with "can't parse entities".
    """

    text: str
    entities: list[JSON]
    errors: list[str]


_HTML_TAG_RE: Final = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)([^<>]*)>")
_HTML_ATTR_RE: Final = re.compile(
    r"""\s+([A-Za-z_:][-\w:.]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?"""
)
_HTML_ENTITY_RE: Final = re.compile(r"&(?:lt|gt|amp|quot|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});")
_HTML_TAGS: Final[dict[str, str]] = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "span": "spoiler",
    "tg-spoiler": "spoiler",
    "a": "text_link",
    "code": "code",
    "pre": "pre",
    "blockquote": "blockquote",
    "tg-emoji": "custom_emoji",
    # The spec's MessageEntity lists "date_time"; its HTML form is <tg-time unix=...>.
    "tg-time": "date_time",
}
_MDV2_RESERVED: Final = frozenset("_*[]()~`>#+-=|{}.!")


def _parse_html_attrs(rest: str) -> tuple[dict[str, str], bool]:
    attrs: dict[str, str] = {}
    pos = 0
    for match in _HTML_ATTR_RE.finditer(rest):
        if match.start() != pos:
            return attrs, False
        value = next((g for g in match.groups()[1:] if g is not None), "")
        attrs[match.group(1).lower()] = html.unescape(value)
        pos = match.end()
    return attrs, not rest[pos:].strip(" \t\r\n/")


def parse_html(text: str) -> Parsed:
    """Parse Telegram-flavoured HTML into visible text and entities.

    A deliberately small checker: it accepts exactly the tags Telegram documents,
    requires them to nest properly, and rejects bare ``<`` and ``&`` that do not
    start a tag or a supported entity (``&lt; &gt; &amp; &quot;`` and numeric).

    Args:
        text: The marked-up text.

    Returns:
        The visible text, the entities it defines and any parse errors.
    """
    out: list[str] = []
    errors: list[str] = []
    entities: list[JSON] = []
    stack: list[tuple[str, JSON | None, int]] = []
    n16 = 0
    pos = 0
    while pos < len(text):
        stops = [i for i in (text.find("<", pos), text.find("&", pos)) if i >= 0]
        nxt = min(stops) if stops else len(text)
        if nxt > pos:
            chunk = text[pos:nxt]
            out.append(chunk)
            n16 += utf16_len(chunk)
            pos = nxt
            continue
        if text[pos] == "&":
            ent_match = _HTML_ENTITY_RE.match(text, pos)
            if ent_match is None:
                errors.append(f"unescaped '&' at offset {pos} (write &amp;)")
                char = "&"
                pos += 1
            else:
                char = html.unescape(ent_match.group(0))
                pos = ent_match.end()
            out.append(char)
            n16 += utf16_len(char)
            continue
        tag = _HTML_TAG_RE.match(text, pos)
        if tag is None:
            errors.append(f"unescaped '<' at offset {pos} (write &lt;)")
            out.append("<")
            n16 += 1
            pos += 1
            continue
        pos = tag.end()
        closing, name, rest = tag.group(1) == "/", tag.group(2).lower(), tag.group(3)
        if closing:
            if rest.strip():
                errors.append(f"end tag </{name}> must not have attributes")
            if not stack:
                errors.append(f"unexpected end tag </{name}>")
                continue
            top, open_entity, start = stack[-1]
            if top != name:
                errors.append(f"unmatched end tag </{name}>, expected </{top}>")
                continue
            stack.pop()
            if open_entity is not None and n16 > start:
                open_entity["offset"] = start
                open_entity["length"] = n16 - start
                entities.append(open_entity)
            continue
        attrs, attrs_ok = _parse_html_attrs(rest)
        if not attrs_ok:
            errors.append(f"malformed attributes in <{name}{rest}>")
        entity: JSON | None = None
        if name not in _HTML_TAGS:
            errors.append(f"unsupported start tag <{name}>")
        elif name == "span" and attrs.get("class") != "tg-spoiler":
            errors.append('<span> is only supported as <span class="tg-spoiler">')
        elif name == "a" and not attrs.get("href"):
            errors.append("<a> needs an href attribute")
        elif name == "tg-emoji" and not attrs.get("emoji-id"):
            errors.append("<tg-emoji> needs an emoji-id attribute")
        elif name == "tg-time" and not attrs.get("unix", "").lstrip("-").isdigit():
            errors.append("<tg-time> needs a numeric unix attribute")
        elif name == "code" and stack and stack[-1][0] == "pre":
            # <pre><code class="language-x"> sets the pre block's language, no own entity.
            pre_entity = stack[-1][1]
            lang = attrs.get("class", "")
            if pre_entity is not None and lang.startswith("language-"):
                pre_entity["language"] = lang.removeprefix("language-")
        else:
            entity = {"type": _HTML_TAGS[name]}
            if name == "a":
                entity["url"] = attrs["href"]
            elif name == "blockquote" and "expandable" in attrs:
                entity["type"] = "expandable_blockquote"
            elif name == "tg-emoji":
                entity["custom_emoji_id"] = attrs["emoji-id"]
            elif name == "tg-time":
                entity["unix_time"] = int(attrs["unix"])
                if attrs.get("format"):
                    entity["date_time_format"] = attrs["format"]
        stack.append((name, entity, n16))
    # Unsupported tags were already reported; don't repeat them as unclosed.
    errors.extend(
        f"can't find end tag for <{name}>" for name, _, _ in reversed(stack) if name in _HTML_TAGS
    )
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return Parsed("".join(out), entities, errors)


def parse_markdown_v2(text: str) -> Parsed:
    """Approximately parse MarkdownV2: visible text plus reserved-character errors.

    Checks what bots most often get wrong: unescaped reserved characters
    (``_*[]()~`>#+-=|{}.!``), unterminated entities and code blocks. Entities are not
    reconstructed (the returned list is empty).

    Args:
        text: The marked-up text.

    Returns:
        The approximate visible text, no entities, and parse errors.
    """
    out: list[str] = []
    errors: list[str] = []
    stack: list[str] = []
    in_expandable = False
    i, n = 0, len(text)

    def toggle(marker: str) -> None:
        if stack and stack[-1] == marker:
            stack.pop()
        elif marker in stack:
            errors.append(f"entity '{marker}' at offset {i} closes out of nesting order")
            stack.remove(marker)
        else:
            stack.append(marker)

    while i < n:
        char = text[i]
        line_start = i == 0 or text[i - 1] == "\n"
        if char == "\\":
            if i + 1 < n and 0 < ord(text[i + 1]) <= 126:
                out.append(text[i + 1])
                i += 2
            else:
                errors.append(f"character '\\' at offset {i} must be escaped")
                i += 1
            continue
        if char == "`":
            fence = "```" if text.startswith("```", i) else "`"
            j = i + len(fence)
            buf: list[str] = []
            closed = False
            while j < n:
                if text[j] == "\\" and j + 1 < n:
                    buf.append(text[j + 1])
                    j += 2
                    continue
                if text.startswith(fence, j):
                    closed = True
                    break
                buf.append(text[j])
                j += 1
            content = "".join(buf)
            if not closed:
                errors.append(f"can't find end of the code entity starting at offset {i}")
                out.append(content)
                break
            if fence == "```" and "\n" in content:
                first, body = content.split("\n", 1)
                if first and not first.strip().count(" "):
                    content = body
            out.append(content)
            i = j + len(fence)
            continue
        if line_start and text.startswith("**>", i):
            in_expandable = True
            i += 3
            continue
        if line_start and char == ">":
            i += 1
            continue
        if text.startswith("||", i):
            if "||" not in stack and in_expandable and (i + 2 >= n or text[i + 2] == "\n"):
                in_expandable = False
            else:
                toggle("||")
            i += 2
            continue
        if text.startswith("__", i):
            toggle("__")
            i += 2
            continue
        if char in "*_~":
            toggle(char)
            i += 1
            continue
        if text.startswith("![", i):
            stack.append("![")
            i += 2
            continue
        if char == "[":
            stack.append("[")
            i += 1
            continue
        if char == "]" and stack and stack[-1] in ("[", "!["):
            stack.pop()
            if not text.startswith("(", i + 1):
                errors.append(f"']' at offset {i} is not followed by '(url)'")
                i += 1
                continue
            j = i + 2
            while j < n and text[j] != ")":
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                errors.append(f"can't find end of the URL starting at offset {i + 2}")
                break
            i = j + 1
            continue
        if char in _MDV2_RESERVED:
            errors.append(
                f"character '{char}' at offset {i} is reserved and must be escaped with '\\'"
            )
        out.append(char)
        i += 1
    errors.extend(f"can't find end of the '{marker}' entity" for marker in stack)
    return Parsed("".join(out), [], errors)


def parse_markdown_legacy(text: str) -> Parsed:
    """Approximately parse legacy Markdown (``*bold*``, ``_italic_``, code, links).

    Args:
        text: The marked-up text.

    Returns:
        The approximate visible text, no entities, and unterminated-entity errors.
    """
    out: list[str] = []
    errors: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "\\" and i + 1 < n and text[i + 1] in "_*`[":
            out.append(text[i + 1])
            i += 2
            continue
        if char in "*_`":
            fence = "```" if text.startswith("```", i) else char
            end = text.find(fence, i + len(fence))
            if end < 0:
                errors.append(f"can't find end of the entity starting at offset {i}")
                out.append(text[i + len(fence) :])
                break
            out.append(text[i + len(fence) : end])
            i = end + len(fence)
            continue
        if char == "[":
            close = text.find("](", i)
            end = text.find(")", close + 2) if close >= 0 else -1
            if close >= 0 and end >= 0:
                out.append(text[i + 1 : close])
                i = end + 1
                continue
        out.append(char)
        i += 1
    return Parsed("".join(out), [], errors)


def _trim(parsed: Parsed) -> Parsed:
    # Telegram strips leading/trailing whitespace from message texts after parsing.
    text = parsed.text
    stripped = text.strip()
    if stripped == text:
        return parsed
    lead16 = utf16_len(text[: len(text) - len(text.lstrip())])
    total16 = utf16_len(stripped)
    entities: list[JSON] = []
    for entity in parsed.entities:
        start = max(entity["offset"] - lead16, 0)
        end = min(entity["offset"] + entity["length"] - lead16, total16)
        if end > start:
            entities.append({**entity, "offset": start, "length": end - start})
    return Parsed(stripped, entities, parsed.errors)


def parse_formatted(
    text: str, parse_mode: object = None, entities: object = None, *, trim: bool = True
) -> Parsed:
    """Apply ``parse_mode`` (or explicit ``entities``) to a text, as Telegram does.

    Args:
        text: The text as sent by the bot.
        parse_mode: ``"HTML"``, ``"MarkdownV2"``, ``"Markdown"`` or ``None``.
        entities: Explicit MessageEntity list (used when there is no parse_mode).
        trim: Strip surrounding whitespace like Telegram (entity offsets follow).

    Returns:
        Visible text, entities and parse errors.
    """
    if parse_mode == "HTML":
        parsed = parse_html(text)
    elif parse_mode == "MarkdownV2":
        parsed = parse_markdown_v2(text)
    elif parse_mode == "Markdown":
        parsed = parse_markdown_legacy(text)
    else:
        explicit = [dict(e) for e in entities] if isinstance(entities, list) else []
        parsed = Parsed(text, explicit, [])
    return _trim(parsed) if trim else parsed


# --------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class _Limit:
    low: int | None
    high: int | None
    unit: str  # "chars" (UTF-16 units), "bytes" (UTF-8) or "items"
    parsed: bool = False  # measured after entities parsing


@dataclass
class _Owner:
    """A method or an object type from the spec: its fields and derived rules."""

    name: str
    fields: dict[str, list[str]]
    required: frozenset[str]
    descriptions: dict[str, str]
    limits: dict[str, _Limit]
    subtypes: tuple[str, ...] = ()
    returns: tuple[str, ...] = ()
    discriminator: tuple[str, str] | None = None
    has_fields: bool = True


_STR_LIMIT_RE: Final = re.compile(r"\b(\d+)-(\d+) (characters|bytes)\b")
_ARRAY_RANGE_RE: Final = re.compile(r"\blist of (\d+)-(\d+)\b|\b(\d+)-(\d+) items\b")
_ARRAY_MAX_RE: Final = re.compile(
    r"\b(?:[Aa]t most|up to) (\d+) (?:items|[a-z ]*?(?:can be specified|identifiers))"
)
_DISCRIMINATOR_RE: Final = re.compile(r"(?:always|must be) \"?([a-z0-9_]+)\"?\s*$")
# Hard-coded so these stay enforced even if the description wording changes.
_HARD_LIMITS: Final[dict[tuple[str, str], _Limit]] = {
    ("sendMessage", "text"): _Limit(1, 4096, "chars", parsed=True),
    ("editMessageText", "text"): _Limit(1, 4096, "chars", parsed=True),
    ("InlineKeyboardButton", "callback_data"): _Limit(1, 64, "bytes"),
    ("answerCallbackQuery", "text"): _Limit(0, 200, "chars"),
    ("deleteMessages", "message_ids"): _Limit(1, 100, "items"),
    ("setMyCommands", "commands"): _Limit(None, 100, "items"),
    ("BotCommand", "command"): _Limit(1, 32, "chars"),
    ("BotCommand", "description"): _Limit(1, 256, "chars"),
}
_PATTERNS: Final[dict[tuple[str, str], tuple[re.Pattern[str], str]]] = {
    ("BotCommand", "command"): (
        re.compile(r"[a-z0-9_]+"),
        "only lowercase English letters, digits and underscores",
    ),
}
# Fields other than these on an InlineKeyboardButton select its action; exactly one is allowed.
_BUTTON_NON_ACTION: Final = frozenset({"text", "icon_custom_emoji_id", "style"})
_INT64_LIMIT: Final = 2**63


def _extract_limit(types: list[str], description: str) -> _Limit | None:
    if types == ["String"]:
        match = _STR_LIMIT_RE.search(description)
        if match:
            unit = "bytes" if match.group(3) == "bytes" else "chars"
            parsed = "after entit" in description
            return _Limit(int(match.group(1)), int(match.group(2)), unit, parsed)
    elif all(t.startswith("Array of ") for t in types):
        rng = _ARRAY_RANGE_RE.search(description)
        if rng:
            low, high = (
                (rng.group(1), rng.group(2)) if rng.group(1) else (rng.group(3), rng.group(4))
            )
            return _Limit(int(low), int(high), "items")
        most = _ARRAY_MAX_RE.search(description)
        if most:
            return _Limit(None, int(most.group(1)), "items")
    return None


def _describe(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    kind = {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)
    return f"{kind} {text[:60]}{'…' if len(text) > 60 else ''}"


class BotApiSpec:
    """The Bot API spec (``api.json``) as a validator.

    Args:
        data: The parsed ``api.json`` document.
    """

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.version: str = str(data.get("version", "?"))
        self.types: dict[str, _Owner] = {
            name: self._owner(name, raw, is_type=True) for name, raw in data["types"].items()
        }
        self.methods: dict[str, _Owner] = {
            name.lower(): self._owner(name, raw, is_type=False)
            for name, raw in data["methods"].items()
        }

    @classmethod
    def load(cls, path: Path | None = None) -> BotApiSpec:
        """Load (and cache) the spec.

        Args:
            path: The ``api.json`` to load; :func:`default_spec_path` when omitted.

        Returns:
            The validator.
        """
        return _load_spec(str((path or default_spec_path()).resolve()))

    @staticmethod
    def _owner(name: str, raw: Mapping[str, Any], *, is_type: bool) -> _Owner:
        raw_fields: list[JSON] = list(raw.get("fields", []))
        fields = {f["name"]: list(f["types"]) for f in raw_fields}
        descriptions = {f["name"]: str(f.get("description", "")) for f in raw_fields}
        limits: dict[str, _Limit] = {}
        for fname, types in fields.items():
            limit = _HARD_LIMITS.get((name, fname)) or _extract_limit(types, descriptions[fname])
            if limit is not None:
                limits[fname] = limit
        discriminator = None
        if is_type and raw.get("subtype_of"):
            for key in ("type", "status", "source"):
                match = _DISCRIMINATOR_RE.search(descriptions.get(key, ""))
                if match:
                    discriminator = (key, match.group(1))
                    break
        return _Owner(
            name=name,
            fields=fields,
            required=frozenset(f["name"] for f in raw_fields if f.get("required")),
            descriptions=descriptions,
            limits=limits,
            subtypes=tuple(raw.get("subtypes", ())),
            returns=tuple(raw.get("returns", ())),
            discriminator=discriminator,
            has_fields="fields" in raw,
        )

    def method(self, name: str) -> _Owner | None:
        """Look a method up case-insensitively, as Telegram does.

        Args:
            name: The method name from the URL.

        Returns:
            The method, or ``None`` when the spec has no such method.
        """
        return self.methods.get(name.lower())

    # ---------------------------------------------------------------- decoding

    def decode_params(self, method: _Owner | None, raw: Mapping[str, Any], *, typed: bool) -> JSON:
        """Turn transport values into JSON values according to the declared types.

        Form and multipart values are strings: PTB sends strings raw and everything
        else JSON-encoded, so a field declared String stays raw and other fields are
        JSON-decoded. JSON bodies are already typed, but Telegram also accepts objects
        as JSON-serialized strings there, so those are decoded too.

        Args:
            method: The method (``None`` for unknown methods: decode best-effort).
            raw: Parameter name to transport value.
            typed: True for JSON bodies.

        Returns:
            The decoded parameters.
        """
        out: JSON = {}
        for key, value in raw.items():
            types = method.fields.get(key) if method else None
            if isinstance(value, str) and not (typed and (types is None or "String" in types)):
                out[key] = self._decode_string(value, types)
            else:
                out[key] = value
        return out

    def _decode_string(self, raw: str, types: list[str] | None) -> Any:
        if types is not None and all(t in ("String", "InputFile") for t in types):
            return raw
        try:
            decoded = json.loads(raw)
        except ValueError:
            return raw
        if types is None or "String" not in types:
            return decoded
        others = [t for t in types if t != "String"]
        return decoded if not self.check_value(decoded, others, "") else raw

    # ---------------------------------------------------------------- checking

    def check_params(self, method: _Owner, params: Mapping[str, Any]) -> list[str]:
        """Validate a method call.

        Args:
            method: The method from :meth:`method`.
            params: Decoded parameters.

        Returns:
            Human-readable problems; empty when the call is valid.
        """
        errors = self._check_fields(method, params, "")
        name = method.name
        if name.startswith("editMessage") and "inline_message_id" not in params:
            missing = [k for k in ("chat_id", "message_id") if k not in params]
            if missing:
                errors.append(f"{' and '.join(missing)} required when inline_message_id is absent")
        if name == "editMessageText" and "text" not in params and "rich_message" not in params:
            errors.append("text: required (rich_message not specified)")
        action = params.get("action")
        if name == "sendChatAction" and isinstance(action, str) and action not in CHAT_ACTIONS:
            errors.append(f"action: unknown chat action {action!r}")
        return errors

    def check_value(
        self, value: object, types: Sequence[str], path: str, depth: int = 0
    ) -> list[str]:
        """Check a value against alternative declared types (any may match).

        Args:
            value: The decoded value.
            types: Declared types, e.g. ``["Integer", "String"]``.
            path: Where the value sits, for messages.
            depth: Recursion depth (guards against cyclic types).

        Returns:
            Problems; empty when at least one alternative matches.
        """
        if depth > 40:
            return []
        best: list[str] | None = None
        for type_name in types:
            errors = self._check_one(value, type_name, path, depth)
            if not errors:
                return []
            if best is None or len(errors) < len(best):
                best = errors
        if best is None:
            return []
        if len(types) > 1 and all(e.endswith(_describe(value)) for e in best):
            return [f"{path or 'value'}: expected {' or '.join(types)}, got {_describe(value)}"]
        return best

    def _check_one(self, value: object, type_name: str, path: str, depth: int) -> list[str]:
        where = path or "value"

        def wrong() -> list[str]:
            return [f"{where}: expected {type_name}, got {_describe(value)}"]

        if type_name == "Integer":
            ok = isinstance(value, int) and not isinstance(value, bool)
            if ok and not -_INT64_LIMIT <= cast(int, value) < _INT64_LIMIT:
                return [f"{where}: integer out of 64-bit range"]
            return [] if ok else wrong()
        if type_name == "Float":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            return [] if ok and math.isfinite(cast(float, value)) else wrong()
        if type_name == "Boolean":
            return [] if isinstance(value, bool) else wrong()
        if type_name == "True":
            return [] if value is True else wrong()
        if type_name == "String":
            return [] if isinstance(value, str) else wrong()
        if type_name == "InputFile":
            # Uploads are accepted loosely: a multipart file, or a file_id/URL/attach:// string.
            return [] if isinstance(value, UploadedFile | str) else wrong()
        if type_name.startswith("Array of "):
            if not isinstance(value, list):
                return wrong()
            inner = type_name.removeprefix("Array of ")
            errors: list[str] = []
            for index, item in enumerate(value):
                errors += self.check_value(item, [inner], f"{path}[{index}]", depth + 1)
            return errors
        owner = self.types.get(type_name)
        if owner is None:
            return []  # a type the spec does not describe cannot be checked
        if owner.subtypes:
            return self._check_union(value, owner, path, depth)
        if not isinstance(value, dict):
            return wrong()
        if not owner.has_fields:
            return []  # placeholder types ("holds no information") accept any object
        return self._check_fields(owner, value, path, depth)

    def _check_union(self, value: object, owner: _Owner, path: str, depth: int) -> list[str]:
        if isinstance(value, dict):
            # Prefer the subtype whose discriminator ("type": "chat") the value names.
            for sub in owner.subtypes:
                sub_owner = self.types.get(sub)
                disc = sub_owner.discriminator if sub_owner else None
                if disc and value.get(disc[0]) == disc[1]:
                    return self._check_one(value, sub, path, depth + 1)
        errors = self.check_value(value, list(owner.subtypes), path, depth + 1)
        if errors:
            return [f"{path or 'value'}: does not match any {owner.name} variant: {errors[0]}"]
        return []

    def _check_fields(
        self, owner: _Owner, obj: Mapping[str, Any], path: str, depth: int = 0
    ) -> list[str]:
        def at(key: str) -> str:
            return f"{path}.{key}" if path else key

        errors = [
            f"{at(key)}: missing required field" for key in sorted(owner.required - obj.keys())
        ]
        for key, value in obj.items():
            types = owner.fields.get(key)
            if types is None:
                errors.append(f"{at(key)}: unknown field (not a parameter of {owner.name})")
                continue
            problems = self.check_value(value, types, at(key), depth + 1)
            if not problems:
                problems = self._check_rules(owner, key, value, obj, at(key))
            errors += problems
        if owner.discriminator:
            key, expected = owner.discriminator
            if key in obj and obj[key] != expected:
                errors.append(f"{at(key)}: must be {expected!r} for {owner.name}")
        if owner.name == "InlineKeyboardButton":
            actions = sorted(k for k in obj if k not in _BUTTON_NON_ACTION)
            if len(actions) != 1:
                errors.append(
                    f"{path or 'button'}: exactly one action field (callback_data, url, ...) "
                    f"must be set, got {actions or 'none'}"
                )
        errors += _check_formatting(obj, path)
        return errors

    @staticmethod
    def _check_rules(
        owner: _Owner, key: str, value: object, obj: Mapping[str, Any], where: str
    ) -> list[str]:
        errors: list[str] = []
        limit = owner.limits.get(key)
        if limit is not None:
            size: int | None = None
            if limit.unit == "items" and isinstance(value, list):
                size = len(value)
            elif limit.unit == "bytes" and isinstance(value, str):
                size = len(value.encode("utf-8"))
            elif limit.unit == "chars" and isinstance(value, str):
                text = value
                if limit.parsed:
                    mode_key = _parse_mode_key(key)
                    text = parse_formatted(
                        value, obj.get(mode_key), obj.get(_entities_key(key))
                    ).text
                size = utf16_len(text)
            if size is not None and not (
                (limit.low is None or size >= limit.low)
                and (limit.high is None or size <= limit.high)
            ):
                span = f"{limit.low if limit.low is not None else 0}-{limit.high}"
                unit = {"chars": "characters", "bytes": "bytes", "items": "items"}[limit.unit]
                after = " after entities parsing" if limit.parsed else ""
                errors.append(f"{where}: must be {span} {unit}{after}, got {size}")
        pattern = _PATTERNS.get((owner.name, key))
        if pattern is not None and isinstance(value, str) and not pattern[0].fullmatch(value):
            errors.append(f"{where}: may contain {pattern[1]}, got {value!r}")
        return errors


@lru_cache(maxsize=4)
def _load_spec(path: str) -> BotApiSpec:
    if not Path(path).is_file():
        raise FileNotFoundError(f"Bot API spec not found at {path}; set ${SPEC_ENV} to override")
    with Path(path).open(encoding="utf-8") as fh:
        return BotApiSpec(json.load(fh))


def _parse_mode_key(text_key: str) -> str:
    return (
        "parse_mode"
        if text_key in ("text", "caption", "message_text")
        else f"{text_key}_parse_mode"
    )


def _entities_key(text_key: str) -> str:
    return {"text": "entities", "message_text": "entities", "caption": "caption_entities"}.get(
        text_key, f"{text_key}_entities"
    )


def _check_formatting(obj: Mapping[str, Any], path: str) -> list[str]:
    """Check every ``*parse_mode`` in an object and the markup of the text it governs."""
    errors: list[str] = []
    for key, mode in obj.items():
        if key != "parse_mode" and not key.endswith("_parse_mode"):
            continue
        where = f"{path}.{key}" if path else key
        if not isinstance(mode, str):
            continue  # the type check reports it
        if mode not in PARSE_MODES:
            errors.append(f"{where}: unsupported parse mode {mode!r} (use {sorted(PARSE_MODES)})")
            continue
        if key == "parse_mode":
            targets = [k for k in ("text", "caption", "message_text") if k in obj]
        else:
            targets = [key.removesuffix("_parse_mode")]
        for target in targets:
            text = obj.get(target)
            if isinstance(text, str):
                label = f"{path}.{target}" if path else target
                errors += [
                    f"{label}: can't parse entities ({mode}): {problem}"
                    for problem in parse_formatted(text, mode, trim=False).errors
                ]
    return errors


# --------------------------------------------------------------------------- state


@dataclass
class _Stored:
    chat_id: int
    message_id: int
    from_bot: bool
    kind: str
    json: JSON
    raw_text: str | None = None
    parse_mode: str | None = None
    reply_markup: JSON | None = None
    protect_content: bool = False
    edited: bool = False
    deleted: bool = False

    def snapshot(self) -> JSON:
        message = copy.deepcopy(self.json)
        markup = copy.deepcopy(self.reply_markup)
        rows = (markup or {}).get("inline_keyboard") or []
        return {
            "message_id": self.message_id,
            "chat_id": self.chat_id,
            "from_bot": self.from_bot,
            "kind": self.kind,
            "text": message.get("text"),
            "caption": message.get("caption"),
            "entities": message.get("entities") or message.get("caption_entities") or [],
            "raw_text": self.raw_text,
            "parse_mode": self.parse_mode,
            "reply_markup": markup,
            "buttons": [[button.get("text") for button in row] for row in rows],
            "protect_content": self.protect_content,
            "edited": self.edited,
            "deleted": self.deleted,
            "message": message,
        }


@dataclass
class _Queued:
    update: JSON
    delivered: bool = False
    replay: bool = False  # explicitly re-injected id: bypasses earlier confirmation once


@dataclass
class _Fault:
    status: int
    description: str
    retry_after: int | None


@dataclass
class _ChatInfo:
    type: str
    title: str | None = None
    username: str | None = None
    first_name: str | None = None


@dataclass
class _FileEntry:
    unique_id: str
    path: str
    data: bytes


class _ApiError(Exception):
    def __init__(self, status: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"


def _json_response(status: int, payload: object) -> _Response:
    return _Response(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"))


def _error_response(status: int, description: str, parameters: JSON | None = None) -> _Response:
    payload: JSON = {"ok": False, "error_code": status, "description": description}
    if parameters:
        payload["parameters"] = parameters
    return _json_response(status, payload)


def _update_type(update: Mapping[str, Any]) -> str:
    return next((k for k in update if k != "update_id"), "")


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    # The default backlog of 5 resets connections when hundreds of clients call at once.
    request_queue_size = 1024
    daemon_threads = True

    def __init__(self, fake: FakeBotAPI, port: int) -> None:
        self.fake = fake
        super().__init__(("127.0.0.1", port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore client disconnects; real faults are recorded as violations."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like api.telegram.org
    server_version = "WaymarkFakeBotAPI/1.0"

    @property
    def _fake(self) -> FakeBotAPI:
        return cast(_Server, self.server).fake

    def setup(self) -> None:
        super().setup()
        # Without TCP_NODELAY, headers and body leave in two segments and the client's
        # delayed ACK adds ~40 ms to every call: the fake, not the bot, would be measured.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._fake._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, verb: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        response = self._fake._handle_http(verb, self.path, dict(self.headers.items()), body)
        if response is None:
            # Simulated outage: hang up without a response, like a dropped connection.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
        except OSError:
            self.close_connection = True  # the client went away (cancelled long poll)


# --------------------------------------------------------------------------- the fake


class FakeBotAPI:
    """A stateful, spec-checking fake of the Telegram Bot API on 127.0.0.1.

    Args:
        spec_path: ``api.json`` to validate against; :func:`default_spec_path` by default.
        control: Also answer the control endpoints under :data:`CONTROL_PREFIX` (for a fake
            in another process, see :func:`serve`). Off by default: then those paths are
            unknown paths like any other (a violation and 404, as Telegram answers them).

    Attributes:
        violations: Problems a real Telegram would reject, one line each.
        calls: Every request as ``(method, decoded params)``, in arrival order.
        left_chats: Chat ids the bot called ``leaveChat`` for.
        unimplemented: Spec methods answered generically (validated, not emulated).
        commands: Commands set via ``setMyCommands``, keyed by ``(scope JSON, language)``.
    """

    def __init__(self, spec_path: Path | None = None, *, control: bool = False) -> None:
        self.spec = BotApiSpec.load(spec_path)
        self._control = control
        self.violations: list[str] = []
        self.calls: list[tuple[str, JSON]] = []
        self.left_chats: list[int | str] = []
        self.unimplemented: list[str] = []
        self.commands: dict[tuple[str, str], list[JSON]] = {}
        self._cond = threading.Condition(threading.RLock())
        self._queue: list[_Queued] = []
        self._next_update_id = 1
        self._allowed_updates: frozenset[str] | None = None
        self._poll_generation = 0
        self._webhook_url = ""
        self._chats: dict[int, _ChatInfo] = {}
        self._messages: dict[int, dict[int, _Stored]] = {}
        self._next_message_id: dict[int, int] = {}
        self._callback_ids: set[str] = set()
        self._next_callback = 4_200_000_000_000_000
        self._files: dict[str, _FileEntry] = {}
        self._faults: dict[str, deque[_Fault]] = {}
        self._blocked: set[int] = set()
        self._unreachable_until: float | None = None
        self._inflight = 0
        self._last_activity = time.monotonic()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._handlers: dict[str, Callable[[JSON], Any]] = {
            "getme": self._get_me,
            "getupdates": self._get_updates,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
            "setmycommands": self._set_my_commands,
            "deletemycommands": self._delete_my_commands,
            "getmycommands": self._get_my_commands,
            "sendchataction": self._send_chat_action,
            "leavechat": self._leave_chat,
            "answercallbackquery": self._answer_callback_query,
            "sendmessage": self._send_message,
            "editmessagetext": self._edit_message_text,
            "editmessagecaption": self._edit_message_caption,
            "editmessagereplymarkup": self._edit_message_reply_markup,
            "deletemessage": self._delete_message,
            "deletemessages": self._delete_messages,
            "getfile": self._get_file,
            "getchat": self._get_chat,
        }

    # ---------------------------------------------------------------- lifecycle

    def start(self, port: int = 0) -> FakeBotAPI:
        """Start serving on 127.0.0.1 in a daemon thread.

        Args:
            port: TCP port; 0 (the default) picks a free ephemeral one.

        Returns:
            ``self``, for chaining.
        """
        if self._server is not None:
            return self
        self._stopping = False
        self._server = _Server(self, port)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-bot-api:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        server.shutdown()
        with self._cond:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    @classmethod
    @contextlib.contextmanager
    def running(cls, spec_path: Path | None = None) -> Iterator[FakeBotAPI]:
        """Run a fake for the duration of a ``with`` block (for non-pytest use).

        Args:
            spec_path: Optional ``api.json`` override.

        Yields:
            The started fake.
        """
        fake = cls(spec_path).start()
        try:
            yield fake
        finally:
            fake.stop()

    @property
    def port(self) -> int:
        """The TCP port the fake listens on."""
        if self._server is None:
            raise RuntimeError("FakeBotAPI is not running; call start()")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """Value for ``ApplicationBuilder().base_url(...)``."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        """Value for ``ApplicationBuilder().base_file_url(...)``."""
        return f"http://127.0.0.1:{self.port}/file/bot"

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._cond:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # ---------------------------------------------------------------- test set-up helpers

    def register_chat(
        self,
        chat_id: int,
        chat_type: str,
        *,
        title: str | None = None,
        username: str | None = None,
    ) -> None:
        """Declare a chat's type (``private``, ``group``, ``supergroup``, ``channel``).

        Args:
            chat_id: The chat id.
            chat_type: Its Telegram chat type.
            title: Title for non-private chats.
            username: Lets the bot address the chat as ``@username``.
        """
        with self._cond:
            info = self._chats.get(chat_id)
            if info is None:
                self._chats[chat_id] = _ChatInfo(chat_type, title, username)
            else:
                info.type = chat_type
                info.title = title or info.title
                info.username = username or info.username

    def set_blocked(self, chat_id: int, blocked: bool = True) -> None:
        """Make every send/edit to ``chat_id`` fail with 403 "bot was blocked by the user".

        Args:
            chat_id: The user's private chat id.
            blocked: False to unblock.
        """
        with self._cond:
            (self._blocked.add if blocked else self._blocked.discard)(chat_id)

    def fail_next(
        self,
        method: str,
        *,
        status: int = 429,
        retry_after: int = 1,
        count: int = 1,
        description: str | None = None,
    ) -> None:
        """Answer the next ``count`` valid calls of ``method`` with an error.

        Args:
            method: Method name (case-insensitive), or ``"*"`` for any method.
            status: HTTP status / error_code: 429 adds ``parameters.retry_after``.
            retry_after: Seconds for 429 answers.
            count: How many calls fail.
            description: Override the Telegram-like description.
        """
        if status == 429:
            text = description or f"Too Many Requests: retry after {retry_after}"
            fault = _Fault(429, text, retry_after)
        else:
            text = description or _DEFAULT_FAULT_DESCRIPTIONS.get(status, f"Error {status}")
            fault = _Fault(status, text, None)
        with self._cond:
            self._faults.setdefault(method.lower(), deque()).extend([fault] * count)

    def set_unreachable(self, seconds: float | bool) -> None:
        """Hang up on every request (no response) for a while.

        Args:
            seconds: Duration; ``True`` until cleared; ``False`` (or 0) to end it now.
        """
        with self._cond:
            if seconds is True:
                self._unreachable_until = math.inf
            elif not seconds:
                self._unreachable_until = None
            else:
                self._unreachable_until = time.monotonic() + float(seconds)

    def reset(self) -> None:
        """Forget calls, violations, messages, updates, chats and faults."""
        with self._cond:
            self.violations.clear()
            self.calls.clear()
            self.left_chats.clear()
            self.unimplemented.clear()
            self.commands.clear()
            self._queue.clear()
            self._chats.clear()
            self._messages.clear()
            self._next_message_id.clear()
            self._faults.clear()
            self._blocked.clear()
            self._unreachable_until = None

    # ---------------------------------------------------------------- update injection

    def inject(self, update: JSON, *, validate: bool = True) -> int:
        """Enqueue a raw Update for ``getUpdates``.

        An explicit ``update_id`` lower than ones already confirmed is still
        delivered once (it simulates Telegram redelivering a duplicate).

        Args:
            update: The Update dict; ``update_id`` is assigned when missing.
            validate: Check it against the spec's ``Update`` type first.

        Returns:
            The update_id.

        Raises:
            ValueError: The update does not match the spec.
        """
        update = copy.deepcopy(update)
        with self._cond:
            explicit = "update_id" in update
            if not explicit:
                update["update_id"] = self._next_update_id
            update_id = int(update["update_id"])
            replay = explicit and update_id < self._next_update_id
            self._next_update_id = max(self._next_update_id, update_id + 1)
        if validate:
            problems = self.spec.check_value(update, ["Update"], "update")
            if problems:
                raise ValueError("injected update does not match the spec: " + "; ".join(problems))
        with self._cond:
            self._queue.append(_Queued(update, replay=replay))
            self._last_activity = time.monotonic()
            self._cond.notify_all()
        return update_id

    def user_text(
        self,
        chat_id: int,
        text: str,
        *,
        user_id: int | None = None,
        language_code: str | None = "en",
        chat_type: str = "private",
        first_name: str = "Test",
        title: str | None = None,
        update_id: int | None = None,
    ) -> int:
        """Inject a text message from a user (``/command`` gets a bot_command entity).

        Args:
            chat_id: Chat the message is in.
            text: Message text.
            user_id: Sender; the chat id for private chats, 42 otherwise.
            language_code: The sender's client language (``None`` omits it).
            chat_type: ``private``, ``group`` or ``supergroup``.
            first_name: Sender's first name.
            title: Group title.
            update_id: Explicit id (e.g. to inject a duplicate).

        Returns:
            The update_id.
        """
        content: JSON = {"text": text}
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0] if text.strip() else text
            content["entities"] = [
                {"type": "bot_command", "offset": 0, "length": utf16_len(command)}
            ]
        return self._user_message(
            chat_id,
            "text",
            content,
            user_id=user_id,
            language_code=language_code,
            chat_type=chat_type,
            first_name=first_name,
            title=title,
            update_id=update_id,
        )

    def user_media(
        self,
        chat_id: int,
        kind: str,
        *,
        caption: str | None = None,
        user_id: int | None = None,
        language_code: str | None = "en",
        chat_type: str = "private",
        first_name: str = "Test",
        title: str | None = None,
        update_id: int | None = None,
    ) -> int:
        """Inject a media message from a user.

        Args:
            chat_id: Chat the message is in.
            kind: One of ``photo``, ``voice``, ``sticker``, ``document``, ``location``, ``video``.
            caption: Optional caption (not for sticker/location).
            user_id: Sender; the chat id for private chats, 42 otherwise.
            language_code: The sender's client language.
            chat_type: ``private``, ``group`` or ``supergroup``.
            first_name: Sender's first name.
            title: Group title.
            update_id: Explicit id.

        Returns:
            The update_id.

        Raises:
            ValueError: Unknown kind.
        """
        if kind not in MEDIA_KINDS:
            raise ValueError(f"unknown media kind {kind!r}; use one of {MEDIA_KINDS}")
        with self._cond:
            content = self._media_content(kind, {})
        if caption is not None and kind not in ("sticker", "location"):
            content["caption"] = caption
        return self._user_message(
            chat_id,
            kind,
            content,
            user_id=user_id,
            language_code=language_code,
            chat_type=chat_type,
            first_name=first_name,
            title=title,
            update_id=update_id,
        )

    def press(
        self,
        chat_id: int,
        message_id: int,
        data: str,
        *,
        user_id: int | None = None,
        language_code: str | None = "en",
        first_name: str = "Test",
        update_id: int | None = None,
    ) -> int:
        """Inject a callback_query for a button press on a stored message.

        Args:
            chat_id: Chat of the message.
            message_id: The (live) message carrying the button.
            data: The callback data (not checked against the keyboard on purpose).
            user_id: Presser; the chat id for private chats, 42 otherwise.
            language_code: The presser's client language.
            first_name: Presser's first name.
            update_id: Explicit id.

        Returns:
            The update_id.

        Raises:
            AssertionError: The message does not exist or was deleted.
        """
        with self._cond:
            stored = self._live(chat_id, message_id)
            if stored is None:
                raise AssertionError(f"press: no live message {message_id} in chat {chat_id}")
            query_id = str(self._next_callback)
            self._next_callback += 1
            self._callback_ids.add(query_id)
            message = copy.deepcopy(stored.json)
            user = self._user(chat_id, user_id, first_name, language_code)
        update: JSON = {
            "callback_query": {
                "id": query_id,
                "from": user,
                "message": message,
                "chat_instance": str(-(abs(chat_id) * 7919 + 17)),
                "data": data,
            }
        }
        if update_id is not None:
            update["update_id"] = update_id
        return self.inject(update)

    def press_button(
        self,
        chat_id: int,
        text_or_index: str | tuple[int, int],
        *,
        message_id: int | None = None,
        user_id: int | None = None,
        language_code: str | None = "en",
        update_id: int | None = None,
    ) -> int:
        """Press an inline button on the bot's most recent live keyboard in a chat.

        Args:
            chat_id: The chat.
            text_or_index: Exact button text, or ``(row, column)``.
            message_id: Target this message instead of the most recent keyboard.
            user_id: Presser.
            language_code: The presser's client language.
            update_id: Explicit id.

        Returns:
            The update_id.

        Raises:
            AssertionError: No keyboard, or no such button (the message lists what exists).
        """
        with self._cond:
            candidates = [
                m
                for m in self._messages.get(chat_id, {}).values()
                if m.from_bot
                and not m.deleted
                and (message_id is None or m.message_id == message_id)
            ]
            keyboards = [
                m for m in candidates if (m.json.get("reply_markup") or {}).get("inline_keyboard")
            ]
            if not keyboards:
                raise AssertionError(
                    f"press_button: no live bot message with an inline keyboard in chat {chat_id}"
                )
            target = max(keyboards, key=lambda m: m.message_id)
            rows: list[list[JSON]] = target.json["reply_markup"]["inline_keyboard"]
        button: JSON | None = None
        if isinstance(text_or_index, tuple):
            row, col = text_or_index
            if 0 <= row < len(rows) and 0 <= col < len(rows[row]):
                button = rows[row][col]
        else:
            button = next((b for r in rows for b in r if b.get("text") == text_or_index), None)
        if button is None or "callback_data" not in button:
            layout = [[b.get("text") for b in r] for r in rows]
            why = "has no callback_data" if button is not None else "not found"
            raise AssertionError(
                f"press_button: button {text_or_index!r} {why} on message "
                f"{target.message_id} in chat {chat_id}; buttons: {layout}"
            )
        return self.press(
            chat_id,
            target.message_id,
            str(button["callback_data"]),
            user_id=user_id,
            language_code=language_code,
            update_id=update_id,
        )

    def reserve_callback_queries(self, count: int) -> list[str]:
        """Return ``count`` fresh callback query ids that ``answerCallbackQuery`` accepts.

        For a driver that builds callback_query updates itself instead of calling
        :meth:`press` (the fake in another process, where it cannot see them).

        Args:
            count: How many ids.

        Returns:
            The ids, in the form :meth:`press` uses.
        """
        with self._cond:
            first = self._next_callback
            self._next_callback += count
            ids = [str(first + i) for i in range(count)]
            self._callback_ids.update(ids)
        return ids

    def take_updates(self) -> list[JSON]:
        """Remove and return the queued updates (to deliver them by webhook instead).

        Returns:
            The updates, oldest first.
        """
        with self._cond:
            taken = [copy.deepcopy(q.update) for q in self._queue]
            self._queue.clear()
            return taken

    def pending_updates(self) -> list[JSON]:
        """Return updates not yet confirmed by the bot (delivered or not).

        Returns:
            Copies of the queued Update dicts.
        """
        with self._cond:
            return [copy.deepcopy(q.update) for q in self._queue]

    # ---------------------------------------------------------------- inspection

    def messages(
        self, chat_id: int, *, include_user: bool = False, include_deleted: bool = False
    ) -> list[JSON]:
        """Messages in a chat, oldest first.

        Each dict has ``message_id``, ``chat_id``, ``from_bot``, ``kind``, ``text``
        (visible, after parse_mode), ``caption``, ``entities``, ``raw_text`` (as sent),
        ``parse_mode``, ``reply_markup`` (any kind), ``buttons`` (inline button texts),
        ``protect_content``, ``edited``, ``deleted`` and ``message`` (the Message JSON).

        Args:
            chat_id: The chat.
            include_user: Also list messages injected as sent by users.
            include_deleted: Also list deleted messages.

        Returns:
            Snapshots (copies) of the messages.
        """
        with self._cond:
            return [
                m.snapshot()
                for m in sorted(
                    self._messages.get(chat_id, {}).values(), key=lambda m: m.message_id
                )
                if (include_user or m.from_bot) and (include_deleted or not m.deleted)
            ]

    def last_message(self, chat_id: int) -> JSON | None:
        """Return the bot's most recent live message in a chat, or ``None``.

        Args:
            chat_id: The chat.

        Returns:
            A snapshot as in :meth:`messages`.
        """
        found = self.messages(chat_id)
        return found[-1] if found else None

    def calls_of(self, method: str) -> list[JSON]:
        """Parameters of every call of ``method`` (case-insensitive), in order.

        Args:
            method: Method name.

        Returns:
            The decoded parameter dicts.
        """
        wanted = method.lower()
        with self._cond:
            return [params for name, params in self.calls if name.lower() == wanted]

    def wait_for(self, predicate: Callable[[], _T], timeout: float = 5.0) -> _T:
        """Poll (blocking) until ``predicate()`` is truthy. Not for use on an event loop.

        Args:
            predicate: Zero-argument callable.
            timeout: Seconds before giving up.

        Returns:
            The first truthy value.

        Raises:
            AssertionError: Timed out (the message lists recent calls).
        """
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(self._timeout_message(timeout))
            time.sleep(0.01)

    # A polling deadline, not a cancellation scope: asyncio.timeout() would not fit (ASYNC109).
    async def await_for(self, predicate: Callable[[], _T], timeout: float = 5.0) -> _T:
        """Like :meth:`wait_for`, but sleeps with ``asyncio.sleep`` so the bot keeps running.

        Args:
            predicate: Zero-argument callable.
            timeout: Seconds before giving up.

        Returns:
            The first truthy value.

        Raises:
            AssertionError: Timed out (the message lists recent calls).
        """
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(self._timeout_message(timeout))
            await asyncio.sleep(0.01)

    async def wait_idle(self, *, quiet: float = 0.2, timeout: float = 5.0) -> None:
        """Wait until every update was delivered and no request arrived for ``quiet`` s.

        Empty long polls do not count as activity.

        Args:
            quiet: Required silence in seconds.
            timeout: Seconds before giving up.

        Raises:
            AssertionError: Still busy at the deadline.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                undelivered = sum(not q.delivered for q in self._queue)
                inflight = self._inflight
                silent = time.monotonic() - self._last_activity
            if not undelivered and not inflight and silent >= quiet:
                return
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"not idle after {timeout}s: {undelivered} undelivered updates, "
                    f"{inflight} requests in flight; {self._timeout_message(timeout)}"
                )
            await asyncio.sleep(0.02)

    def _timeout_message(self, timeout: float) -> str:
        with self._cond:
            recent = [name for name, _ in self.calls if name.lower() != "getupdates"][-10:]
        return f"condition not met within {timeout}s; recent calls: {recent}"

    # ---------------------------------------------------------------- request handling

    def _handle_http(
        self, verb: str, raw_path: str, headers: Mapping[str, str], body: bytes
    ) -> _Response | None:
        url = urllib.parse.urlsplit(raw_path)
        path = urllib.parse.unquote(url.path)
        if self._control and path.startswith(CONTROL_PREFIX):
            control = self._handle_control(verb, path.removeprefix(CONTROL_PREFIX), url.query)
            if control is not None:
                return control
        with self._cond:
            until = self._unreachable_until
            if until is not None and time.monotonic() >= until:
                self._unreachable_until = until = None
        if until is not None:
            return None
        if path.startswith("/file/bot"):
            return self._serve_file(path)
        match = re.fullmatch(r"/bot([^/]*)/([^/]+)", path)
        if match is None:
            self._violation(f"{verb} {path}: not a Bot API path (expected /bot<token>/<method>)")
            return _error_response(404, "Not Found")
        token, method_name = match.groups()
        is_poll = method_name.lower() == "getupdates"
        if not is_poll:
            with self._cond:
                self._inflight += 1
                self._last_activity = time.monotonic()
        try:
            return self._handle_api(token, method_name, url.query, headers, body)
        except Exception as exc:  # a fake bug must surface, not hang the bot
            self._violation(f"{method_name}: fake crashed: {exc!r}")
            return _error_response(500, f"Internal Server Error: fake crashed: {exc!r}")
        finally:
            if not is_poll:
                with self._cond:
                    self._inflight -= 1
                    self._last_activity = time.monotonic()

    def _handle_control(self, verb: str, name: str, query: str) -> _Response | None:
        """Answer a control request, or ``None`` for an unknown one (a Bot API 404 then)."""
        if verb == "GET" and name == "violations":
            with self._cond:
                return _json_response(200, {"violations": list(self.violations)})
        if verb == "GET" and name == "stats":
            with self._cond:
                calls, connections = len(self.calls), len(self._connections)
            return _json_response(
                200,
                {
                    # The client cannot see this process's CPU use any other portable way.
                    "cpu_s": time.process_time(),
                    "threads": threading.active_count(),
                    "connections": connections,
                    "calls": calls,
                },
            )
        if verb == "POST" and name == "callback_ids":
            count = dict(urllib.parse.parse_qsl(query)).get("count", "1")
            if not count.isdigit():
                return _error_response(400, f"Bad Request: count must be a number, not {count!r}")
            return _json_response(200, {"ids": self.reserve_callback_queries(int(count))})
        return None

    def _handle_api(
        self, token: str, method_name: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> _Response:
        if not re.fullmatch(rf"{BOT_ID}:[^/]+", token):
            self._violation(f"{method_name}: bad bot token {token!r} (expected '{BOT_ID}:...')")
            return _error_response(401, "Unauthorized")
        method = self.spec.method(method_name)
        try:
            raw, typed = _read_params(query, headers, body)
        except ValueError as exc:
            self._record(method.name if method else method_name, {})
            self._violation(f"{method_name}: unreadable request body: {exc}")
            return _error_response(400, f"Bad Request: {exc}")
        params = self.spec.decode_params(method, raw, typed=typed)
        if method is None:
            self._record(method_name, params)
            self._violation(f"{method_name}: unknown method (not in {self.spec.version})")
            return _error_response(400, f"Bad Request: unknown method {method_name!r}")
        self._record(method.name, params)
        problems = self.spec.check_params(method, params)
        if problems:
            for problem in problems:
                self._violation(f"{method.name}: {problem}")
            return _error_response(400, "Bad Request: " + "; ".join(problems))
        fault = self._take_fault(method.name)
        if fault is not None:
            parameters = (
                {"retry_after": fault.retry_after} if fault.retry_after is not None else None
            )
            return _error_response(fault.status, fault.description, parameters)
        try:
            result = self._dispatch(method, params)
        except _ApiError as err:
            return _error_response(err.status, err.description, err.parameters)
        problems = self.spec.check_value(result, list(method.returns), "result")
        if problems:
            self._violation(f"{method.name}: fake produced an invalid result: {problems}")
        return _json_response(200, {"ok": True, "result": result})

    def _dispatch(self, method: _Owner, params: JSON) -> Any:
        handler = self._handlers.get(method.name.lower())
        if handler is not None:
            return handler(params)
        if (
            method.returns == ("Message",)
            and "chat_id" in params
            and method.name.startswith("send")
        ):
            return self._send_other(method.name, params)
        with self._cond:
            self.unimplemented.append(method.name)
        return self._synth(method.returns[0] if method.returns else "Boolean", top=True)

    def _record(self, name: str, params: JSON) -> None:
        with self._cond:
            self.calls.append((name, params))

    def _violation(self, text: str) -> None:
        with self._cond:
            self.violations.append(text)

    def _take_fault(self, name: str) -> _Fault | None:
        with self._cond:
            for key in (name.lower(), "*"):
                pending = self._faults.get(key)
                if pending:
                    return pending.popleft()
        return None

    def _serve_file(self, path: str) -> _Response:
        match = re.fullmatch(r"/file/bot([^/]*)/(.+)", path)
        if match is None or not re.fullmatch(rf"{BOT_ID}:[^/]+", match.group(1)):
            self._violation(f"GET {path}: bad file URL or token")
            return _error_response(404, "Not Found")
        with self._cond:
            entry = next((f for f in self._files.values() if f.path == match.group(2)), None)
        if entry is None:
            return _error_response(404, "Not Found")
        return _Response(200, entry.data, "application/octet-stream")

    # ---------------------------------------------------------------- state helpers

    def _chat_id(self, value: object) -> int:
        if isinstance(value, int):
            return value
        text = str(value)
        if re.fullmatch(r"-?\d+", text):
            return int(text)
        with self._cond:
            for chat_id, info in self._chats.items():
                if info.username and f"@{info.username}".lower() == text.lower():
                    return chat_id
        raise _ApiError(400, "Bad Request: chat not found")

    def _target_chat(self, params: JSON) -> int:
        chat_id = self._chat_id(params["chat_id"])
        with self._cond:
            if chat_id in self._blocked:
                raise _ApiError(403, "Forbidden: bot was blocked by the user")
        return chat_id

    def _chat_json(self, chat_id: int) -> JSON:
        info = self._chats.get(chat_id)
        if info is None:
            kind = "private" if chat_id > 0 else ("supergroup" if chat_id < -(10**12) else "group")
            info = _ChatInfo(kind)
        chat: JSON = {"id": chat_id, "type": info.type}
        if info.type == "private":
            chat["first_name"] = info.first_name or "Test"
        else:
            chat["title"] = info.title or "Test Group"
        if info.username:
            chat["username"] = info.username
        return chat

    def _user(
        self, chat_id: int, user_id: int | None, first_name: str, language_code: str | None
    ) -> JSON:
        info = self._chats.get(chat_id)
        private = chat_id > 0 if info is None else info.type == "private"
        user: JSON = {
            "id": user_id if user_id is not None else (chat_id if private else 42),
            "is_bot": False,
            "first_name": first_name,
        }
        if language_code is not None:
            user["language_code"] = language_code
        return user

    def _new_message_id(self, chat_id: int) -> int:
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        return message_id

    def _store(self, stored: _Stored) -> None:
        self._messages.setdefault(stored.chat_id, {})[stored.message_id] = stored

    def _live(self, chat_id: int, message_id: object) -> _Stored | None:
        if not isinstance(message_id, int):
            return None
        stored = self._messages.get(chat_id, {}).get(message_id)
        return None if stored is None or stored.deleted else stored

    def _user_message(
        self,
        chat_id: int,
        kind: str,
        content: JSON,
        *,
        user_id: int | None,
        language_code: str | None,
        chat_type: str,
        first_name: str,
        title: str | None,
        update_id: int | None,
    ) -> int:
        with self._cond:
            if chat_type != "private" or chat_id not in self._chats:
                info = self._chats.setdefault(chat_id, _ChatInfo(chat_type, title))
                info.type = chat_type
                info.title = title or info.title
            if chat_type == "private":
                self._chats[chat_id].first_name = first_name
            message_id = self._new_message_id(chat_id)
            message: JSON = {
                "message_id": message_id,
                "from": self._user(chat_id, user_id, first_name, language_code),
                "chat": self._chat_json(chat_id),
                "date": int(time.time()),
                **content,
            }
            self._store(_Stored(chat_id, message_id, False, kind, message, content.get("text")))
        update: JSON = {"message": message}
        if update_id is not None:
            update["update_id"] = update_id
        return self.inject(update)

    def _new_file(self, kind: str, ext: str, data: bytes | None = None, size: int = 2048) -> JSON:
        index = len(self._files) + 1
        file_id = f"AgAC{kind[:3].upper()}{index:06d}-fake-{kind}"
        unique_id = f"AQAD{index:06d}{kind[:2]}"
        payload = (
            data if data is not None else (f"waymark-fake-{kind}-{index}|".encode() * size)[:size]
        )
        self._files[file_id] = _FileEntry(unique_id, f"{kind}s/file_{index}.{ext}", payload)
        return {"file_id": file_id, "file_unique_id": unique_id, "file_size": len(payload)}

    def _media_content(self, kind: str, params: JSON) -> JSON:
        """Build the Message field for a media kind (caller holds the lock)."""
        upload = params.get(kind)
        data = upload.data if isinstance(upload, UploadedFile) else None
        if kind == "photo":
            sizes = [(90, 67), (320, 240), (1280, 960)]
            return {
                "photo": [
                    {**self._new_file("photo", "jpg", data, 600 * (i + 1)), "width": w, "height": h}
                    for i, (w, h) in enumerate(sizes)
                ]
            }
        if kind == "location":
            return {
                "location": {
                    "latitude": float(params.get("latitude", 52.520008)),
                    "longitude": float(params.get("longitude", 13.404954)),
                }
            }
        if kind == "contact":
            return {
                "contact": {
                    "phone_number": str(params.get("phone_number", "+10000000000")),
                    "first_name": str(params.get("first_name", "Contact")),
                }
            }
        if kind == "venue":
            return {
                "venue": {
                    "location": {
                        "latitude": float(params.get("latitude", 0.0)),
                        "longitude": float(params.get("longitude", 0.0)),
                    },
                    "title": str(params.get("title", "")),
                    "address": str(params.get("address", "")),
                }
            }
        if kind == "dice":
            return {"dice": {"emoji": str(params.get("emoji", "🎲")), "value": 4}}
        extras: dict[str, JSON] = {
            "voice": {"duration": 3, "mime_type": "audio/ogg"},
            "audio": {"duration": 30, "mime_type": "audio/mpeg", "title": "Track"},
            "video": {"width": 640, "height": 360, "duration": 5, "mime_type": "video/mp4"},
            "animation": {"width": 320, "height": 240, "duration": 2, "mime_type": "video/mp4"},
            "video_note": {"length": 240, "duration": 4},
            "document": {"file_name": "report.pdf", "mime_type": "application/pdf"},
            "sticker": {
                "type": "regular",
                "width": 512,
                "height": 512,
                "is_animated": False,
                "is_video": False,
                "emoji": "👍",
                "set_name": "WaymarkTestStickers",
            },
        }
        if kind not in extras:
            return {}
        ext = {"voice": "oga", "audio": "mp3", "document": "pdf", "sticker": "webp"}.get(
            kind, "mp4"
        )
        extra = dict(extras[kind])
        if kind == "document" and isinstance(upload, UploadedFile):
            extra["file_name"] = upload.filename
            extra["mime_type"] = upload.content_type or "application/octet-stream"
        return {kind: {**self._new_file(kind, ext, data), **extra}}

    def _synth(self, type_name: str, *, top: bool = False, depth: int = 0) -> Any:
        """Build a minimal spec-valid value (for methods the fake does not emulate)."""
        if type_name in ("Boolean", "True"):
            return top or type_name == "True"
        if type_name == "Integer":
            return 0
        if type_name == "Float":
            return 0.0
        if type_name in ("String", "InputFile"):
            return ""
        if type_name.startswith("Array of ") or depth > 8:
            return [] if type_name.startswith("Array of ") else {}
        owner = self.spec.types.get(type_name)
        if owner is None:
            return {}
        if owner.subtypes:
            return self._synth(owner.subtypes[0], depth=depth + 1)
        value = {
            name: self._synth(types[0], depth=depth + 1)
            for name, types in owner.fields.items()
            if name in owner.required
        }
        if owner.discriminator:
            value[owner.discriminator[0]] = owner.discriminator[1]
        return value

    # ---------------------------------------------------------------- method implementations

    def _get_me(self, _params: JSON) -> JSON:
        return dict(BOT_USER)

    def _get_updates(self, params: JSON) -> list[JSON]:
        offset = params.get("offset")
        limit = min(max(int(params.get("limit", 100)), 1), 100)
        timeout = max(float(params.get("timeout", 0)), 0.0)
        with self._cond:
            if self._webhook_url:
                raise _ApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; "
                    "use deleteWebhook to delete the webhook first",
                )
            if "allowed_updates" in params:
                allowed = params["allowed_updates"]
                self._allowed_updates = frozenset(allowed) if allowed else None
            self._poll_generation += 1
            generation = self._poll_generation
            self._cond.notify_all()  # wakes an older long poll so it can be terminated
            self._confirm(offset)
            deadline = time.monotonic() + min(timeout, _POLL_BLOCK_CAP)
            while True:
                if self._poll_generation != generation:
                    raise _ApiError(
                        409,
                        "Conflict: terminated by other getUpdates request; "
                        "make sure that only one bot instance is running",
                    )
                batch = self._take(limit)
                remaining = deadline - time.monotonic()
                if batch or remaining <= 0 or self._stopping:
                    break
                self._cond.wait(remaining)
            if batch:
                self._last_activity = time.monotonic()
            return batch

    def _confirm(self, offset: object) -> None:
        if not isinstance(offset, int) or offset == 0:
            return
        if offset < 0:
            self._queue = self._queue[offset:]
            return
        self._queue = [
            q
            for q in self._queue
            if q.update["update_id"] >= offset or (q.replay and not q.delivered)
        ]

    def _take(self, limit: int) -> list[JSON]:
        allowed = self._allowed_updates
        if allowed is not None:
            # Telegram never creates updates of types the bot did not ask for.
            self._queue = [q for q in self._queue if _update_type(q.update) in allowed]
        batch = self._queue[:limit]
        for queued in batch:
            queued.delivered = True
        return [copy.deepcopy(q.update) for q in batch]

    def _set_webhook(self, params: JSON) -> bool:
        with self._cond:
            self._webhook_url = str(params.get("url", ""))
            if params.get("drop_pending_updates"):
                self._queue.clear()
        return True

    def _delete_webhook(self, params: JSON) -> bool:
        with self._cond:
            self._webhook_url = ""
            if params.get("drop_pending_updates"):
                self._queue.clear()
        return True

    def _get_webhook_info(self, _params: JSON) -> JSON:
        with self._cond:
            return {
                "url": self._webhook_url,
                "has_custom_certificate": False,
                "pending_update_count": len(self._queue),
            }

    @staticmethod
    def _commands_key(params: JSON) -> tuple[str, str]:
        scope = params.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(params.get("language_code") or "")

    def _set_my_commands(self, params: JSON) -> bool:
        with self._cond:
            self.commands[self._commands_key(params)] = copy.deepcopy(params["commands"])
        return True

    def _delete_my_commands(self, params: JSON) -> bool:
        with self._cond:
            self.commands.pop(self._commands_key(params), None)
        return True

    def _get_my_commands(self, params: JSON) -> list[JSON]:
        with self._cond:
            return copy.deepcopy(self.commands.get(self._commands_key(params), []))

    def _send_chat_action(self, params: JSON) -> bool:
        self._target_chat(params)
        return True

    def _leave_chat(self, params: JSON) -> bool:
        with self._cond:
            self.left_chats.append(params["chat_id"])
        return True

    def _answer_callback_query(self, params: JSON) -> bool:
        with self._cond:
            known = params["callback_query_id"] in self._callback_ids
        if not known:
            raise _ApiError(
                400,
                "Bad Request: query is too old and response timeout expired or query ID is invalid",
            )
        return True

    def _reply_to(self, chat_id: int, params: JSON) -> JSON | None:
        reply = params.get("reply_parameters")
        if not isinstance(reply, dict):
            return None
        target_chat = self._chat_id(reply.get("chat_id", chat_id))
        target = self._live(target_chat, reply.get("message_id"))
        if target is None:
            if reply.get("allow_sending_without_reply"):
                return None
            raise _ApiError(400, "Bad Request: message to be replied not found")
        quoted = copy.deepcopy(target.json)
        quoted.pop("reply_to_message", None)
        return quoted

    def _new_bot_message(self, chat_id: int, kind: str, params: JSON, content: JSON) -> JSON:
        """Store and return a message the bot sent (caller holds the lock)."""
        message_id = self._new_message_id(chat_id)
        message: JSON = {
            "message_id": message_id,
            "from": dict(_BOT_FROM),
            "chat": self._chat_json(chat_id),
            "date": int(time.time()),
            **content,
        }
        reply_to = self._reply_to(chat_id, params)
        if reply_to is not None:
            message["reply_to_message"] = reply_to
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            # Only inline keyboards are part of a Message; reply keyboards live on the client.
            message["reply_markup"] = copy.deepcopy(markup)
        if params.get("protect_content"):
            message["has_protected_content"] = True
        raw_text = params.get("text", params.get("caption"))
        self._store(
            _Stored(
                chat_id,
                message_id,
                True,
                kind,
                message,
                raw_text=raw_text if isinstance(raw_text, str) else None,
                parse_mode=params.get("parse_mode"),
                reply_markup=copy.deepcopy(markup) if isinstance(markup, dict) else None,
                protect_content=bool(params.get("protect_content")),
            )
        )
        return copy.deepcopy(message)

    def _send_message(self, params: JSON) -> JSON:
        chat_id = self._target_chat(params)
        parsed = parse_formatted(params["text"], params.get("parse_mode"), params.get("entities"))
        content: JSON = {"text": parsed.text}
        if parsed.entities:
            content["entities"] = parsed.entities
        with self._cond:
            return self._new_bot_message(chat_id, "text", params, content)

    def _send_other(self, method_name: str, params: JSON) -> JSON:
        chat_id = self._target_chat(params)
        kind = re.sub(r"(?<!^)(?=[A-Z])", "_", method_name.removeprefix("send")).lower()
        with self._cond:
            content = self._media_content(kind, params)
            caption = params.get("caption")
            if isinstance(caption, str) and caption:
                parsed = parse_formatted(
                    caption, params.get("parse_mode"), params.get("caption_entities")
                )
                content["caption"] = parsed.text
                if parsed.entities:
                    content["caption_entities"] = parsed.entities
            return self._new_bot_message(chat_id, kind, params, content)

    def _editable(self, params: JSON) -> _Stored:
        chat_id = self._target_chat(params)
        stored = self._live(chat_id, params.get("message_id"))
        if stored is None:
            raise _ApiError(400, "Bad Request: message to edit not found")
        if not stored.from_bot:
            raise _ApiError(400, "Bad Request: message can't be edited")
        return stored

    def _apply_edit(self, stored: _Stored, changes: JSON, markup: JSON | None) -> JSON:
        new_json = {k: v for k, v in stored.json.items() if k not in ("reply_markup", *changes)}
        new_json.update({k: v for k, v in changes.items() if v})
        if markup is not None:
            new_json["reply_markup"] = markup
        comparable = ("text", "entities", "caption", "caption_entities", "reply_markup")
        if all(new_json.get(k) == stored.json.get(k) for k in comparable):
            raise _ApiError(400, _NOT_MODIFIED)
        new_json["edit_date"] = int(time.time())
        stored.json = new_json
        stored.reply_markup = copy.deepcopy(markup)
        stored.edited = True
        return copy.deepcopy(new_json)

    def _edit_message_text(self, params: JSON) -> JSON | bool:
        if "inline_message_id" in params:
            return True
        with self._cond:
            stored = self._editable(params)
            if "text" not in stored.json:
                raise _ApiError(400, "Bad Request: there is no text in the message to edit")
            text = params.get("text", "")
            parsed = parse_formatted(text, params.get("parse_mode"), params.get("entities"))
            result = self._apply_edit(
                stored,
                {"text": parsed.text, "entities": parsed.entities},
                params.get("reply_markup"),
            )
            stored.raw_text = text
            stored.parse_mode = params.get("parse_mode")
            return result

    def _edit_message_caption(self, params: JSON) -> JSON | bool:
        if "inline_message_id" in params:
            return True
        with self._cond:
            stored = self._editable(params)
            if stored.kind in ("text", "location", "contact", "venue", "dice", "sticker"):
                raise _ApiError(400, "Bad Request: there is no caption in the message to edit")
            caption = str(params.get("caption", ""))
            parsed = parse_formatted(
                caption, params.get("parse_mode"), params.get("caption_entities")
            )
            result = self._apply_edit(
                stored,
                {"caption": parsed.text, "caption_entities": parsed.entities},
                params.get("reply_markup"),
            )
            stored.raw_text = caption
            return result

    def _edit_message_reply_markup(self, params: JSON) -> JSON | bool:
        if "inline_message_id" in params:
            return True
        with self._cond:
            stored = self._editable(params)
            return self._apply_edit(stored, {}, params.get("reply_markup"))

    def _delete_message(self, params: JSON) -> bool:
        chat_id = self._chat_id(params["chat_id"])
        with self._cond:
            stored = self._live(chat_id, params["message_id"])
            if stored is None:
                raise _ApiError(400, "Bad Request: message to delete not found")
            stored.deleted = True
        return True

    def _delete_messages(self, params: JSON) -> bool:
        chat_id = self._chat_id(params["chat_id"])
        with self._cond:
            for message_id in params["message_ids"]:
                stored = self._live(chat_id, message_id)
                if stored is not None:  # missing ones are skipped, as Telegram does
                    stored.deleted = True
        return True

    def _get_file(self, params: JSON) -> JSON:
        with self._cond:
            entry = self._files.get(params["file_id"])
        if entry is None:
            raise _ApiError(400, "Bad Request: invalid file_id")
        return {
            "file_id": params["file_id"],
            "file_unique_id": entry.unique_id,
            "file_size": len(entry.data),
            "file_path": entry.path,
        }

    def _get_chat(self, params: JSON) -> JSON:
        chat_id = self._chat_id(params["chat_id"])
        with self._cond:
            chat = self._chat_json(chat_id)
        full = cast(JSON, self._synth("ChatFullInfo"))
        full.update(chat)
        full["max_reaction_count"] = 11
        return full


def _read_params(
    query: str, headers: Mapping[str, str], body: bytes
) -> tuple[dict[str, Any], bool]:
    """Decode query string + body into raw params; the flag says they are JSON-typed."""
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type", "")
    raw: dict[str, Any] = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    if not body:
        return raw, False
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        try:
            decoded = json.loads(body)
        except ValueError as exc:
            raise ValueError(f"invalid JSON body: {exc}") from exc
        if not isinstance(decoded, dict):
            raise ValueError("JSON body must be an object")
        raw.update(decoded)
        return raw, True
    if media_type == "multipart/form-data":
        raw.update(_parse_multipart(content_type, body))
        return raw, False
    if media_type in ("application/x-www-form-urlencoded", ""):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError("form body is not UTF-8") from exc
        raw.update(urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=False))
        return raw, False
    raise ValueError(f"unsupported Content-Type {content_type!r}")


def _parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    parser = email.parser.BytesParser(policy=email.policy.HTTP)
    message = parser.parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("malformed multipart body")
    out: dict[str, Any] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            raise ValueError("multipart part without a name")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            out[name] = UploadedFile(filename, part.get_content_type(), data)
        else:
            out[name] = data.decode(part.get_content_charset() or "utf-8")
    return out


def serve(argv: Sequence[str] | None = None) -> int:
    """Run a fake with control endpoints until stdin closes (``python -m`` entry point).

    Prints ``{"port": N}`` as the first line on stdout once it accepts connections. Reading
    stdin to its end ties the fake's life to its parent's: when the parent exits or closes
    the pipe, the fake stops, so a crashed benchmark leaves no server behind.

    Args:
        argv: Command-line arguments (``--port``, ``--spec``); ``sys.argv[1:]`` by default.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.telegram_api",
        description="Serve the loopback fake Telegram Bot API (with /_fake/ control endpoints).",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free)")
    parser.add_argument("--spec", type=Path, default=None, help="api.json to validate against")
    args = parser.parse_args(argv)
    fake = FakeBotAPI(args.spec, control=True).start(args.port)
    try:
        print(json.dumps({"port": fake.port}), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            sys.stdin.read()
    finally:
        fake.stop()
    return 0


@pytest.fixture
def fake_bot_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBotAPI]:
    """Start a :class:`FakeBotAPI`; fail the test at teardown if it saw violations.

    Proxy variables are cleared (and ``NO_PROXY`` set) so httpx reaches 127.0.0.1.

    Args:
        monkeypatch: Used to clear proxy environment variables.

    Yields:
        The running fake.
    """
    clear_proxy_env(monkeypatch)
    fake = FakeBotAPI().start()
    try:
        yield fake
    finally:
        fake.stop()
    if fake.violations:
        listing = "\n".join(f"  - {v}" for v in fake.violations)
        pytest.fail(f"Bot API violations ({len(fake.violations)}):\n{listing}", pytrace=False)


if __name__ == "__main__":
    raise SystemExit(serve())
