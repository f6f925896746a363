"""Alembic's entry point: runs on the connection Store.migrate hands over (config.attributes["connection"]).

The `alembic` command line is not wired: the gateway migrates itself at startup, inside one
transaction that also holds the migration lock.
"""

from __future__ import annotations

from alembic import context

from gateway.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("gateway migrations run through gateway.store.Store.migrate, not the alembic command")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
