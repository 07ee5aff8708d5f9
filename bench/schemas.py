"""A fresh PostgreSQL schema for one benchmark run, dropped afterwards (runs leave nothing).

Only SQLAlchemy is imported here, so that a script measuring another checkout's code
(``press_step.py --tree``) can use it without importing this checkout's packages.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text


def fresh_schema(base: str) -> str:
    """Create a schema on the server of ``base``; return ``base`` with it as search path."""
    schema = f"bench_{secrets.token_hex(4)}"
    engine = create_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


def drop_schema(base: str, url: str) -> None:
    """Drop the schema ``fresh_schema`` made for ``url``."""
    schema = url.rsplit("%3D", 1)[1]
    engine = create_engine(base)
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@contextmanager
def schema_for(base: str | None) -> Iterator[str | None]:
    """A fresh schema's URL on ``base``'s server for the block, dropped after it.

    None without a ``base`` (the run is on SQLite, in a file of its own).
    """
    if base is None:
        yield None
        return
    url = fresh_schema(base)
    try:
        yield url
    finally:
        drop_schema(base, url)
