"""Compact, authenticated callback data (at most 64 bytes, Telegram's limit).

    a.<seq>.<index>.<mac>     an answer button of question <seq> (base 36), action <index>
    m.<index>.<mac>           a menu entry
    l.<code>.<mac>            a language
    f.<y|n>.<mac>             /forget confirmation
    k.<mac>                   keep this conversation's messages

The MAC (keyed HMAC, 60 bits) binds the press to the person and, for answers, to the session
and the exact question, so a forged button or one copied into another chat changes nothing,
and a button of an old question is recognised as stale rather than answering the new one.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from storage.crypto import KeyRing

MAX_BYTES = 64
_MAC_CHARS = 10


@dataclass(frozen=True, slots=True)
class Press:
    """A decoded button press: its kind and fields (still to be checked with ``valid``)."""

    kind: str
    fields: tuple[str, ...]
    mac: str


class CallbackCodec:
    """Packs and checks callback data with a key from the key ring."""

    def __init__(self, keys: KeyRing) -> None:
        self._keys = keys

    def _mac(self, owner: str, scope: str, kind: str, fields: tuple[str, ...]) -> str:
        message = "|".join((owner, scope, kind, *fields))
        return self._keys.pseudonym("callback", message)[:_MAC_CHARS]

    def pack(self, owner: str, scope: str, kind: str, *fields: str) -> str:
        """Build callback data; ``scope`` is the session id for answers, "" otherwise."""
        data = ".".join((kind, *fields, self._mac(owner, scope, kind, fields)))
        if len(data.encode()) > MAX_BYTES:
            raise ValueError(f"callback data of {len(data.encode())} bytes")
        return data

    @staticmethod
    def unpack(data: str) -> Press | None:
        """Split callback data; None when it is not ours at all."""
        parts = data.split(".")
        if len(parts) < 2 or len(parts[0]) != 1:
            return None
        return Press(parts[0], tuple(parts[1:-1]), parts[-1])

    def valid(self, press: Press, owner: str, scope: str) -> bool:
        """Whether the press was made for this person (and session)."""
        expected = self._mac(owner, scope, press.kind, press.fields)
        return hmac.compare_digest(expected, press.mac)


def seq_code(seq: int) -> str:
    """A question sequence number in base 36."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        seq, rest = divmod(seq, 36)
        out = digits[rest] + out
        if seq == 0:
            return out


def seq_value(code: str) -> int | None:
    """The number of a base-36 sequence code, or None."""
    try:
        return int(code, 36)
    except ValueError:
        return None
