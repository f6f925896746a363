"""The writes every call makes to an SQLite database: one plain connection, on one thread of its own.

Each call's end is one small transaction (its row, its container's activity). Through aiosqlite each
statement, cursor and commit would be a thread hop of its own; through SQLAlchemy's Core each
transaction costs about 90 µs of Python on this kind of machine, holding the GIL the event loop needs.
Here a transaction is one hop and about 40 µs, most of it inside sqlite3 (which lets the GIL go).

The statements are SQLAlchemy's own, compiled once for SQLite: the table definitions stay the only
place that names columns. JSON values are serialized as SQLAlchemy's JSON type does (``json.dumps``),
so that rows written here read back through the engine like any other.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.sql.dml import UpdateBase

__all__ = ["CallWriter"]

Write = tuple[UpdateBase, Mapping[str, Any]]


class CallWriter:
    """Runs transactions of call writes on ``path``, a connection set up by ``configure`` (the pragmas)."""

    def __init__(self, path: str, configure: Callable[[sqlite3.Connection], None]) -> None:
        self.path, self._configure = path, configure
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="codeinterp-calls-db")
        self._conn: sqlite3.Connection | None = None  # made, used and closed on the thread only
        # (id of a statement, its parameters' names) -> the statement, kept alive, and its SQL
        self._sql: dict[tuple[int, tuple[str, ...]], tuple[UpdateBase, str]] = {}

    async def write(self, writes: Sequence[Write]) -> None:
        """The statements with their parameters, in one transaction."""
        batch = [(self._text(statement, tuple(params)), _row(params)) for statement, params in writes]
        await asyncio.get_running_loop().run_in_executor(self._thread, self._transaction, batch)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown()

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

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _row(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in params.items()}
