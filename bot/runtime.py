"""The composition root: settings in, a ready ``Service`` out, failing closed.

Order matters. The key ring is found (or, for a fresh data directory only, created)
before anything is written, so that a database whose key is missing or wrong stops
Waymark with a clear message and stays exactly as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from bot.service import FlowChangedError, Service
from bot.settings import Settings
from flows.errors import FlowDefinitionError
from flows.loader import DEFS_DIR, LoadedFlow, load_directory
from storage.crypto import KeyRing
from storage.db import has_schema, make_engine, migrate
from storage.errors import StorageError
from storage.repository import Store

log = logging.getLogger("waymark")


class StartupError(Exception):
    """Waymark cannot start; the message says why and what to do."""


@dataclass
class Runtime:
    """Everything a front end needs.

    Attributes:
        settings: The settings.
        engine: The database engine.
        store: The storage.
        service: The flow service.
        flows: The shipped flows.
        notices: Things the person starting Waymark should read (e.g. a new key file).
    """

    settings: Settings
    engine: Engine
    store: Store
    service: Service
    flows: dict[str, LoadedFlow]
    notices: list[str]

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()


def utcnow() -> datetime:
    """The wall clock, aware and in UTC (the only clock the app reads)."""
    return datetime.now(UTC)


def open_keys(settings: Settings, *, database_has_data: bool, notices: list[str]) -> KeyRing:
    """Find the key ring: environment, else key file, else (fresh database only) a new file.

    Raises:
        StartupError: The database holds data and the key is missing or unreadable.
    """
    if settings.key_ring is not None:
        return KeyRing.from_json(settings.key_ring.get_secret_value(), origin="WAYMARK_KEY_RING")
    path = settings.resolved_key_file
    if path.exists():
        return KeyRing.load(path)
    if database_has_data:
        raise StartupError(
            f"the database holds encrypted data but the key file {path} is missing. "
            "Restore the key file (or set WAYMARK_KEY_FILE / WAYMARK_KEY_RING). "
            "Nothing was changed."
        )
    ring = KeyRing.generate()
    ring.save(path)
    notices.append(
        f"Created a new key file at {path.resolve()} (mode 0600). Back it up: without it the "
        "stored answers cannot be read."
    )
    return ring


def open_runtime(
    settings: Settings,
    *,
    flows_dir: Path = DEFS_DIR,
    clock: Callable[[], datetime] = utcnow,
) -> Runtime:
    """Open the database and keys, check them against each other, and load the flows.

    Args:
        settings: The settings.
        flows_dir: Where the flow files are.
        clock: The clock (tests pass a controllable one).

    Raises:
        StartupError: Anything that must stop Waymark, with a clear message.
    """
    notices: list[str] = []
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        engine = make_engine(url)
        existing = has_schema(engine)
        keys = open_keys(settings, database_has_data=existing, notices=notices)
        migrate(engine)
        store = Store(engine, keys)
        store.check_keys()
    except StorageError as exc:
        raise StartupError(str(exc)) from None
    try:
        # WAYMARK_MAX_RETENTION caps (clamps) retention in the service; it does not make
        # a longer-lived flow invalid, so one deployment setting cannot stop the bot.
        flows = load_directory(flows_dir)
    except FlowDefinitionError as exc:
        raise StartupError(f"the flow files have problems:\n{exc}") from None
    service = Service(store, flows, clock, max_retention_seconds=settings.max_retention_seconds)
    try:
        service.pin_all()
    except (FlowChangedError, StorageError) as exc:
        raise StartupError(str(exc)) from None
    return Runtime(settings, engine, store, service, flows, notices)
