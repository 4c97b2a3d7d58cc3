"""PostgreSQL connections that speak the catalog's SQL (psycopg 3 and its pool).

The catalog's modules write SQL once, with ``?`` (or ``:name``) placeholders, against a connection
with ``execute(sql, params)`` / ``executemany`` returning a cursor with ``fetchone``/``fetchall``/
``rowcount``/``description`` that iterates over tuples: sqlite3's shape. `PgConnection` gives a
psycopg connection that shape; the only rewriting is of placeholders (``?`` -> ``%s``,
``:name`` -> ``%(name)s``, a literal ``%`` -> ``%%``). SUM() over BIGINT answers NUMERIC in
PostgreSQL; it is loaded as an int (or a float when it has a fraction), as SQLite would answer.

`PgReader` is what ``Engine.reader()`` answers on PostgreSQL: each statement borrows a
connection from the pool, fetches its rows and hands the connection back.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any, Iterator, Sequence

import psycopg
from psycopg.adapt import Loader
from psycopg_pool import ConnectionPool

from dicomd.dburl import mask

logger = logging.getLogger(__name__)

_TOKEN_RE = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|::|\?|:[A-Za-z_][A-Za-z0-9_]*|%")
CONNECT_TIMEOUT = 10


@functools.lru_cache(maxsize=4096)
def translate(sql: str) -> str:
    """SQL with sqlite3 placeholders -> psycopg's (quoted literals keep their text, ``%`` doubled)."""

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        if token == "::":
            return token
        if token.startswith(":"):
            return f"%({token[1:]})s"
        return token.replace("%", "%%")

    return _TOKEN_RE.sub(one, sql)


class _NumericLoader(Loader):
    def load(self, data: Any) -> int | float:
        text = bytes(data).decode()
        return float(text) if any(c in text for c in ".eEN") else int(text)


def configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("numeric", _NumericLoader)


def connect(dsn: str) -> psycopg.Connection[Any]:
    """A new autocommit connection (transactions are opened explicitly, as on SQLite)."""
    conn = psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    configure(conn)
    return conn


class Rows:
    """A finished statement's rows: sqlite3's cursor shape over a fetched list."""

    def __init__(self, rows: list[tuple[Any, ...]], description: Sequence[Any] | None, rowcount: int) -> None:
        self._rows = rows
        self._next = 0
        self.description = [(d[0],) for d in description] if description else None
        self.rowcount = rowcount

    def fetchone(self) -> tuple[Any, ...] | None:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[tuple[Any, ...]]:
        rest, self._next = self._rows[self._next:], len(self._rows)
        return rest

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        while (row := self.fetchone()) is not None:
            yield row


def _run(cur: psycopg.Cursor[Any], sql: str, params: Any) -> Rows:
    if params is None or (not isinstance(params, dict) and len(params) == 0):
        cur.execute(sql)  # type: ignore[arg-type]  # no parameters: sent as written
    else:
        cur.execute(translate(sql), params if isinstance(params, dict) else tuple(params))  # type: ignore[arg-type]
    rows = cur.fetchall() if cur.description else []
    return Rows(rows, cur.description, cur.rowcount)


class PgConnection:
    """One psycopg connection with sqlite3's ``execute``/``executemany``."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    def execute(self, sql: str, params: Any = None) -> Rows:
        with self.raw.cursor() as cur:
            return _run(cur, sql, params)

    def executemany(self, sql: str, seq: Any) -> Rows:
        rows = [tuple(p) if not isinstance(p, dict) else p for p in seq]
        with self.raw.cursor() as cur:
            if rows:
                cur.executemany(translate(sql), rows)  # type: ignore[arg-type]
            return Rows([], None, cur.rowcount if rows else 0)

    @property
    def broken(self) -> bool:
        return bool(self.raw.closed or self.raw.broken)

    def close(self) -> None:
        self.raw.close()


class PgReader:
    """``reader()`` on PostgreSQL: each statement on a pooled connection, rows fetched at once."""

    def __init__(self, pool: ConnectionPool) -> None:  # type: ignore[type-arg]
        self.pool = pool

    def execute(self, sql: str, params: Any = None) -> Rows:
        """One read; once more on another connection when the pooled one turns out to be dead (the
        server restarted, a backend was terminated): a read has no effect to repeat."""
        try:
            return self._once(sql, params)
        except psycopg.OperationalError as exc:
            logger.warning("catalog read on a dead connection (%s); retrying on a new one", describe_error(exc))
            return self._once(sql, params)

    def _once(self, sql: str, params: Any) -> Rows:
        with self.pool.connection() as conn, conn.cursor() as cur:
            return _run(cur, sql, params)


def open_pool(dsn: str, *, max_size: int = 8) -> ConnectionPool:  # type: ignore[type-arg]
    """The readers' pool: autocommit connections, opened now (a wrong URL fails here, masked)."""
    pool: ConnectionPool = ConnectionPool(  # type: ignore[type-arg]
        dsn, min_size=1, max_size=max_size, kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
        configure=configure, open=False, name="dicomd-catalog", timeout=30,
    )
    pool.open(wait=True, timeout=CONNECT_TIMEOUT + 5)
    return pool


def describe_error(exc: BaseException) -> str:
    """An error from psycopg as one line without a password."""
    return mask(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
