"""Errors of the storage package.

The tree::

    StorageError                 base of everything raised by ``storage``
    ├── KeyError_                (see below) key material is missing, unreadable or wrong
    │   ├── KeyFileMissing       the database holds data but the key file is gone
    │   ├── KeyFileInsecure      the key file can be read by others than its owner
    │   └── WrongKey             the key ring does not open this database
    ├── DecryptionFailed         a ciphertext was tampered with, or bound to another row
    ├── Conflict                 another writer changed the row first (optimistic locking)
    │   └── Changed              a write's version check missed: the session (or the profile
    │                            it was decided with) changed or expired since it was read
    ├── Duplicate                this update was already applied (exactly-once claims)
    └── DatabaseUnavailable      the database cannot be reached or opened
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of the storage errors."""


class KeyMaterialError(StorageError):
    """Key material is missing, unreadable or does not fit the database."""


class KeyFileMissing(KeyMaterialError):
    """The database holds encrypted data but its key file is missing."""


class KeyFileInsecure(KeyMaterialError):
    """The key file is readable or writable by other users."""


class WrongKey(KeyMaterialError):
    """The key ring is not the one this database was written with."""


class DecryptionFailed(StorageError):
    """A ciphertext failed authentication: tampered, truncated or moved to another row."""


class Conflict(StorageError):
    """The row changed since it was read; the caller should reload and retry."""


class Changed(Conflict):
    """A write's version check missed: what it was decided on changed or expired.

    Unlike a busy database (a plain Conflict), this says something about the data: another
    writer got there first.
    """


class Duplicate(StorageError):
    """The update was applied before; applying it again would double it."""


class DatabaseUnavailable(StorageError):
    """The database cannot be reached, opened or migrated."""
