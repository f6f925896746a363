"""The writes every call makes to an SQLite database: plain sqlite3 connections, no ORM and no aiosqlite.

Each call's end is one small transaction (its row, its container's activity). Through aiosqlite each
statement, cursor and commit would be a thread hop of its own; through SQLAlchemy's Core each
transaction costs about 90 µs of Python on this kind of machine, holding the GIL the event loop needs.

A transaction runs on the event loop's own connection when it can start at once: about 70 µs on a
2-core machine, where handing it to a thread and back took 600 µs (350 µs of that the hop alone, the
thread asleep between calls). It never waits there: the loop's connection has no busy timeout, so
when another connection holds the write lock the transaction goes to the calls thread, whose
connection waits for it (30 s). Nor does it checkpoint there (a checkpoint writes and syncs the
database file): the thread runs a passive checkpoint every ``CHECKPOINT_EVERY`` commits instead.

The statements are SQLAlchemy's own, compiled once for SQLite: the table definitions stay the only
place that names columns. JSON values are serialized as SQLAlchemy's JSON type does (``json.dumps``),
so that rows written here read back through the engine like any other.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.sql.dml import UpdateBase

__all__ = ["CHECKPOINT_EVERY", "CallWriter"]

log = logging.getLogger("codeinterp.gateway")

CHECKPOINT_EVERY = 200  # commits on the loop's connection between two checkpoints on the thread

Write = tuple[UpdateBase, Mapping[str, Any]]


class CallWriter:
    """Runs transactions of call writes on ``path``, a connection set up by ``configure`` (the pragmas)."""

    def __init__(self, path: str, configure: Callable[[sqlite3.Connection], None]) -> None:
        self.path, self._configure = path, configure
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="codeinterp-calls-db")
        self._conn: sqlite3.Connection | None = None  # made, used and closed on the thread only
        self._here: sqlite3.Connection | None = None  # the event loop's: no busy wait, no auto-checkpoint
        self._commits = 0  # on the loop's connection since the last checkpoint was queued
        self._checkpoint: asyncio.Future[None] | None = None
        # (id of a statement, its parameters' names) -> the statement, kept alive, and its SQL
        self._sql: dict[tuple[int, tuple[str, ...]], tuple[UpdateBase, str]] = {}

    async def write(self, writes: Sequence[Write]) -> None:
        """The statements with their parameters, in one transaction."""
        batch = [(self._text(statement, tuple(params)), _row(params)) for statement, params in writes]
        loop = asyncio.get_running_loop()
        # While a checkpoint runs, writes queue behind it on the thread: the first of them then finds
        # the log wholly copied and starts it over. Were they written here meanwhile, the checkpoint
        # would never catch up under a steady load, and the log would grow without end.
        if (self._checkpoint is None or self._checkpoint.done()) and self._write_here(batch):
            self._commits += 1
            if self._commits >= CHECKPOINT_EVERY:
                self._commits = 0
                self._checkpoint = loop.run_in_executor(self._thread, self._checkpoint_wal)
            return
        await loop.run_in_executor(self._thread, self._transaction, batch)

    async def close(self) -> None:
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
        if self._here is not None:
            self._here.close()
            self._here = None
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown()

    def _write_here(self, batch: list[tuple[str, dict[str, Any]]]) -> bool:
        """The transaction on the loop's connection if the write lock is free now; False if it was not."""
        if self._here is None:
            # Not ``configure``: its switch to WAL may wait for a lock. The store switched the file
            # before any call could be written; until it has, every write goes to the thread.
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=0)
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.close()
                return False
            for pragma in ("synchronous=NORMAL", "foreign_keys=ON", "wal_autocheckpoint=0"):
                conn.execute(f"PRAGMA {pragma}")
            self._here = conn
        try:
            self._here.execute("BEGIN IMMEDIATE")  # takes the write lock now, or says at once that it cannot
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return False
            raise
        try:
            for sql, params in batch:
                self._here.execute(sql, params)
        except BaseException:
            self._here.execute("ROLLBACK")
            raise
        self._here.execute("COMMIT")
        return True

    def _text(self, statement: UpdateBase, names: tuple[str, ...]) -> str:
        key = (id(statement), names)
        if key not in self._sql:
            # Named parameters (":id"), which sqlite3 takes from a mapping; an INSERT names the columns
            # it is given, as SQLAlchemy's execute would.
            compiled = statement.compile(dialect=sqlite.dialect(paramstyle="named"), column_keys=list(names))
            self._sql[key] = (statement, str(compiled))
        return self._sql[key][1]

    def _transaction(self, batch: list[tuple[str, dict[str, Any]]]) -> None:
        conn = self._conn or self._connect()
        conn.execute("BEGIN")
        try:
            for sql, params in batch:
                conn.execute(sql, params)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: the transactions above are begun and ended here, not by the module.
        conn = sqlite3.connect(self.path, isolation_level=None)
        self._configure(conn)
        self._conn = conn
        return conn

    def _checkpoint_wal(self) -> None:
        try:
            (self._conn or self._connect()).execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:  # the next one tries again; the log only grows meanwhile
            log.exception("WAL checkpoint failed")

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _row(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in params.items()}
