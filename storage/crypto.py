"""The one place where plaintext meets ciphertext.

Envelope encryption, as ODK's encrypted forms and crypto-shredding designs do it:

* every session gets its own random 256-bit **data key** (DEK);
* the DEK is stored only **wrapped** (AES-GCM) by a **key-encryption key** (KEK) from the
  key ring, which lives in a key file (mode 0600) or the environment, never in the database;
* every value is sealed with AES-GCM under its session's DEK, with associated data that
  names its table, row and field, so a ciphertext copied to another row fails to open;
* deleting a DEK row makes every ciphertext of that session unreadable for good, even in
  backups or free database pages.

Telegram ids are never stored: ``KeyRing.pseudonym`` turns them into keyed HMAC-SHA256
pseudonyms. The pseudonym key does not rotate (rotating it would orphan every row); KEKs do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.errors import DecryptionFailed, KeyFileInsecure, KeyMaterialError

_NONCE = 12
_KEY_BYTES = 32
_FILE_VERSION = 1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class KeyRing:
    """Key-encryption keys by id, the active one, and the pseudonym key.

    Attributes:
        active: Id of the KEK that wraps new data keys.
        keks: Every KEK still needed, by id.
        pseudonym_key: The HMAC key of pseudonyms.
    """

    active: str
    keks: dict[str, bytes]
    pseudonym_key: bytes
    _aead: dict[str, AESGCM] = field(default_factory=dict, repr=False)

    @classmethod
    def generate(cls) -> KeyRing:
        """A fresh key ring with one KEK."""
        kek_id = _new_kek_id()
        return cls(kek_id, {kek_id: secrets.token_bytes(_KEY_BYTES)}, secrets.token_bytes(32))

    # ------------------------------------------------------------------ serialisation

    def to_json(self) -> str:
        """The key ring as the JSON text of a key file."""
        return json.dumps(
            {
                "version": _FILE_VERSION,
                "active": self.active,
                "keks": {k: _b64(v) for k, v in self.keks.items()},
                "pseudonym_key": _b64(self.pseudonym_key),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, *, origin: str = "key ring") -> KeyRing:
        """Read a key ring from key-file JSON.

        Raises:
            KeyMaterialError: The text is not a valid key ring.
        """
        try:
            data = json.loads(text)
            _check_version(data)
            keks = {k: _unb64(v) for k, v in data["keks"].items()}
            ring = cls(data["active"], keks, _unb64(data["pseudonym_key"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyMaterialError(f"{origin} is not a valid Waymark key ring: {exc}") from None
        if ring.active not in keks or any(len(k) != _KEY_BYTES for k in keks.values()):
            raise KeyMaterialError(f"{origin} is not a valid Waymark key ring: bad key sizes")
        return ring

    @classmethod
    def load(cls, path: Path) -> KeyRing:
        """Read a key file, refusing one that others can read.

        Raises:
            KeyFileInsecure: The file's mode lets group or others read or write it.
            KeyMaterialError: The file is not a valid key ring.
        """
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileInsecure(
                f"the key file {path} has mode {stat.filemode(mode)}; run: chmod 600 {path}"
            )
        return cls.from_json(path.read_text(encoding="utf-8"), origin=str(path))

    def save(self, path: Path) -> None:
        """Write the key file atomically with mode 0600 (a crash leaves the old file)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(self.to_json())
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)

    # ------------------------------------------------------------------ keys

    def pseudonym(self, namespace: str, value: str | int) -> str:
        """A stable keyed pseudonym: the same input gives the same output, and nothing else."""
        digest = hmac.new(
            self.pseudonym_key, f"{namespace}\x00{value}".encode(), hashlib.sha256
        ).digest()
        return _b64(digest[:16])

    def verifier(self) -> str:
        """A value stored in the database that proves which pseudonym key wrote it."""
        return self.pseudonym("waymark", "key-check")

    def add_kek(self) -> str:
        """Add a new KEK, make it active, and return its id (for rotation)."""
        kek_id = _new_kek_id()
        self.keks[kek_id] = secrets.token_bytes(_KEY_BYTES)
        self.active = kek_id
        return kek_id

    def _cipher(self, kek_id: str) -> AESGCM:
        if kek_id not in self.keks:
            raise KeyMaterialError(f"the key ring has no key '{kek_id}'")
        if kek_id not in self._aead:
            self._aead[kek_id] = AESGCM(self.keks[kek_id])
        return self._aead[kek_id]

    def new_data_key(self, key_row_id: str) -> tuple[bytes, str, bytes]:
        """A fresh data key, and its wrapped form under the active KEK.

        Returns:
            (data key, KEK id, wrapped data key).
        """
        dek = secrets.token_bytes(_KEY_BYTES)
        return dek, self.active, self.wrap(dek, key_row_id, self.active)

    def wrap(self, dek: bytes, key_row_id: str, kek_id: str) -> bytes:
        """Wrap a data key under a KEK, bound to its key row."""
        nonce = secrets.token_bytes(_NONCE)
        return nonce + self._cipher(kek_id).encrypt(
            nonce, dek, _aad("data_keys", key_row_id, "dek")
        )

    def unwrap(self, wrapped: bytes, key_row_id: str, kek_id: str) -> bytes:
        """Unwrap a data key.

        Raises:
            DecryptionFailed: The wrapped key was tampered with or belongs to another row.
        """
        try:
            return self._cipher(kek_id).decrypt(
                wrapped[:_NONCE], wrapped[_NONCE:], _aad("data_keys", key_row_id, "dek")
            )
        except InvalidTag:
            raise DecryptionFailed(f"data key {key_row_id} failed authentication") from None


def _check_version(data: Any) -> None:
    if data.get("version") != _FILE_VERSION:
        raise ValueError(f"unknown key file version {data.get('version')!r}")


def _new_kek_id() -> str:
    return "k" + secrets.token_hex(4)


def _aad(table: str, row: str, column: str) -> bytes:
    return f"waymark/v1/{table}/{row}/{column}".encode()


def seal(dek: bytes, value: Any, *, table: str, row: str, column: str) -> bytes:
    """Encrypt a JSON-able value under a data key, bound to its table, row and column.

    Args:
        dek: The session's data key.
        value: Any JSON-able value.
        table: Table name (associated data).
        row: Row identity (associated data).
        column: Column or field name (associated data).

    Returns:
        nonce || ciphertext+tag.
    """
    nonce = secrets.token_bytes(_NONCE)
    plaintext = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return nonce + AESGCM(dek).encrypt(nonce, plaintext, _aad(table, row, column))


def unseal(dek: bytes, blob: bytes, *, table: str, row: str, column: str) -> Any:
    """Decrypt what ``seal`` produced.

    Raises:
        DecryptionFailed: Wrong key, tampered bytes, or a ciphertext from another row.
    """
    try:
        plaintext = AESGCM(dek).decrypt(blob[:_NONCE], blob[_NONCE:], _aad(table, row, column))
    except (InvalidTag, ValueError):
        raise DecryptionFailed(f"{table}/{row}/{column} failed authentication") from None
    return json.loads(plaintext)


def slot(dek: bytes, name: str) -> str:
    """An opaque, per-session name for a field (e.g. an answer's step), so no label is stored."""
    return _b64(hmac.new(dek, name.encode(), hashlib.sha256).digest()[:12])


def random_id() -> str:
    """A random row id (128 bits, URL-safe)."""
    return _b64(secrets.token_bytes(16))
