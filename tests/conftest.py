"""Shared fixtures: clocks, key rings, databases (SQLite and PostgreSQL), flows.

PostgreSQL tests use ``WAYMARK_TEST_POSTGRES_URL`` (default: the local server at
127.0.0.1:5432, database ``test``). Each test gets its own schema, dropped afterwards.
Locally they skip when no server answers; under ``CI=true`` they must run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from flows.loader import LoadedFlow, load_directory
from storage.crypto import KeyRing
from storage.db import make_engine, migrate
from storage.repository import Store

PG_URL = os.environ.get(
    "WAYMARK_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy may route loopback traffic, and no stray WAYMARK_ setting may leak in."""
    for name in list(os.environ):
        if name.upper() in {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"} or (
            name.startswith("WAYMARK_") and name != "WAYMARK_TEST_POSTGRES_URL"
        ):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def postgres_available() -> bool:
    """Whether the test PostgreSQL server answers."""
    try:
        engine = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception:
        return False
    return True


_PG = postgres_available()


def _require_pg() -> None:
    if not _PG:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but PostgreSQL at {PG_URL} does not answer")
        pytest.skip("no PostgreSQL server")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    _require_pg()
    schema = f"wm_{secrets.token_hex(6)}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same test on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'waymark.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated engine."""
    eng = make_engine(db_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def keys() -> KeyRing:
    """A fresh key ring."""
    return KeyRing.generate()


@pytest.fixture
def store(engine: Engine, keys: KeyRing) -> Store:
    """A store with its keys checked in."""
    s = Store(engine, keys)
    s.check_keys()
    return s


@pytest.fixture(scope="session")
def shipped() -> dict[str, LoadedFlow]:
    """Every shipped flow."""
    return load_directory()
