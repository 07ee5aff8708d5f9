"""Alembic environment: runs on the connection ``storage.db.migrate`` hands over."""

from __future__ import annotations

from alembic import context

from storage.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through storage.db.migrate
    raise RuntimeError("run migrations through storage.db.migrate()")
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things; batch mode rebuilds tables the portable way.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
