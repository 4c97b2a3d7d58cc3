"""The catalog database: connections, migrations, readers and the one writer, on SQLite or PostgreSQL.

``catalog.url`` picks the backend: a file path is SQLite (the default, nothing to install), a
``postgresql://`` URL is PostgreSQL (psycopg 3). Both behave the same to the rest of dicomd:

- Writes are group-committed: whatever is queued is committed in a single transaction, each call
  in its own savepoint, so concurrent associations share fsyncs without anyone being answered
  before their row is committed. There is no writer thread: the first caller to find no commit
  under way leads the batch on the one writer connection (its own call and every call queued by
  then) while later callers wait for it; a lone caller commits without any thread hand-off.
  On PostgreSQL each batch also takes a transaction-level advisory lock, so writers of several
  processes (receiver processes, the CLI, other nodes) are serialized like SQLite's BEGIN
  IMMEDIATE.
- Readers: on SQLite a per-thread connection (WAL mode); on PostgreSQL a psycopg_pool
  ConnectionPool, one pooled connection per statement (see dicomd.catalog.pg).
- ``durable=False`` (ingest only) commits without waiting for the log flush: SQLite's
  synchronous=NORMAL, PostgreSQL's synchronous_commit=off. A process crash keeps the commit; after a
  power or server crash the start-up scan re-adopts the fsync'd files from disk.

The connection a write function gets, and what ``reader()`` answers, both take sqlite3's
``execute(sql, params)`` with ``?`` placeholders and return a cursor with ``fetchone``/
``fetchall``/``rowcount``/``description``. Write SQL both databases run: ``INSERT ... RETURNING id``
instead of ``lastrowid``, ``INSERT ... ON CONFLICT ... DO NOTHING/UPDATE`` instead of ``INSERT OR``,
an alias on every subquery in FROM, no SQLite-only functions (``json_extract`` exists on PostgreSQL
too, made by migration 005 of dicomd.catalog.schema).

Adding a migration: a new table or column is a new named step at the end of a migration set,
never an edit of a released one (the names applied are recorded in the database). The catalog's
own steps are in dicomd.catalog.schema; another module keeps its own set and applies it when it
opens (dicomd.auth and dicomd.mappings do)::

    from dicomd.migrations import Migrations, Schema

    migrations = Migrations("dicomd-notes")

    @migrations(name="001_notes")
    def _m001(schema: Schema) -> None:
        schema.script("CREATE TABLE notes (id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL, at REAL NOT NULL)")

    catalog.apply_migrations(migrations)

DDL is written in SQLite's spelling; the runner maps the types that differ for PostgreSQL
(dicomd.migrations), and ``schema.dialect`` tells a step which database it runs on.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import psycopg

from dicomd import migrations as runner
from dicomd.dburl import DatabaseUrl, sqlite_file
from dicomd.errors import StorageFailure
from dicomd.storage import fsync_dir

logger = logging.getLogger(__name__)
T = TypeVar("T")
SQLITE, POSTGRESQL = runner.SQLITE, runner.POSTGRESQL
# Errors a statement may raise on either backend (a constraint broken, ...).
DatabaseError = (sqlite3.Error, psycopg.Error)
IntegrityError = (sqlite3.IntegrityError, psycopg.errors.IntegrityError)
_WRITER_LOCK_KEY = 0x646963576  # the advisory lock every PostgreSQL write batch holds


class _Write:
    """One queued ``write()`` call, answered through its future."""

    __slots__ = ("fn", "future", "durable", "sync_dirs")

    def __init__(self, fn: Callable[[Any], Any], durable: bool, sync_dirs: Sequence[Path]) -> None:
        self.fn = fn
        self.future: Future[Any] = Future()
        self.durable = durable
        self.sync_dirs = sync_dirs


class _SqliteBackend:
    dialect = SQLITE

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._local = threading.local()
        self._synchronous_full = True

    def connect(self) -> sqlite3.Connection:
        existed = self.path.exists()
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        if not existed:
            os.chmod(self.path, 0o600)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def writer_connection(self, conn: Any) -> Any:
        return conn if conn is not None else self.connect()

    def reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.connect()
            self._local.conn = conn
        return conn

    def begin(self, conn: sqlite3.Connection, *, durable: bool) -> None:
        if durable != self._synchronous_full:
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._synchronous_full = durable
        conn.execute("BEGIN IMMEDIATE")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class _PostgresBackend:
    dialect = POSTGRESQL

    def __init__(self, dsn: str) -> None:
        from dicomd.catalog import pg

        self._pg = pg
        self.dsn = dsn
        self._pool: Any = None
        self._pool_lock = threading.Lock()

    def connect(self) -> Any:
        return self._pg.PgConnection(self._pg.connect(self.dsn))

    def writer_connection(self, conn: Any) -> Any:
        if conn is not None and not conn.broken:
            return conn
        if conn is not None:
            conn.close()
        return self.connect()

    def reader(self) -> Any:
        if self._pool is None:
            with self._pool_lock:
                if self._pool is None:
                    self._pool = self._pg.open_pool(self.dsn)
        return self._pg.PgReader(self._pool)

    def begin(self, conn: Any, *, durable: bool) -> None:
        # one round trip (no parameters: sent as one simple query)
        relaxed = "" if durable else " SET LOCAL synchronous_commit TO off;"
        conn.execute(f"BEGIN;{relaxed} SELECT pg_advisory_xact_lock({_WRITER_LOCK_KEY})")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def _backend(target: Path | str | DatabaseUrl) -> _SqliteBackend | _PostgresBackend:
    url = target if isinstance(target, DatabaseUrl) else sqlite_file(Path(target))
    if url.is_postgresql:
        return _PostgresBackend(url.dsn)
    assert url.path is not None
    return _SqliteBackend(url.path)


class Engine:
    """The catalog database. Thread-safe; one per process."""

    IntegrityError = IntegrityError  # for modules below the catalog's layer (dicomd.mappings)

    def __init__(self, target: Path | str | DatabaseUrl, *, batch_max: int = 256) -> None:
        self.url = target if isinstance(target, DatabaseUrl) else sqlite_file(Path(target))
        self._backend = _backend(self.url)
        self.dialect = self._backend.dialect
        self._cond = threading.Condition()
        self._pending: list[_Write] = []  # queued calls, in order
        self._leading = False  # a caller is committing a batch on the writer connection
        self._conn: Any = None  # the writer connection (used by one leader at a time)
        self._batch_max = batch_max
        self._closed = False

    @property
    def path(self) -> Path | None:
        """The SQLite file (None on PostgreSQL)."""
        return self.url.path

    def connect(self) -> Any:
        """A new connection of the catalog's own (autocommit; the caller closes it)."""
        try:
            return self._backend.connect()
        except psycopg.Error as exc:
            from dicomd.catalog.pg import describe_error

            raise StorageFailure(f"cannot connect to the catalog {self.url.masked}: {describe_error(exc)}") from None

    def apply_migrations(self, migration_set: runner.Migrations) -> None:
        """Apply a named migration set (other modules keep their tables here too)."""
        conn = self.connect()
        try:
            runner.apply(migration_set, conn, self.dialect)
        finally:
            conn.close()

    def reader(self) -> Any:
        """A connection to read with (this thread's on SQLite; the pool's on PostgreSQL)."""
        return self._backend.reader()

    def write(self, fn: Callable[[Any], T], *, durable: bool = True, sync_dirs: Sequence[Path] = ()) -> T:
        """Run ``fn(conn)`` inside a committed transaction and return its result.

        Calls from many threads are committed together; a call whose ``fn`` raises is rolled back
        alone (savepoint) and re-raises in its caller. A failed COMMIT fails every call in it.
        ``sync_dirs`` are fsync'd (once per batch) before the commit. ``durable=False`` lets the
        batch commit without waiting for the log flush (see the module docstring). Only ingest uses
        it; operations that move data stay fully synchronous.
        """
        call = _Write(fn, durable, sync_dirs)
        with self._cond:
            if self._closed:
                raise StorageFailure("the catalog is closed")
            self._pending.append(call)
            while not call.future.done():
                if self._leading:
                    try:
                        self._cond.wait()
                    except BaseException:  # e.g. KeyboardInterrupt: the call leaves the queue with its caller
                        if call in self._pending:
                            self._pending.remove(call)
                        raise
                    continue
                batch = self._pending[:self._batch_max]
                del self._pending[:len(batch)]
                self._leading = True
                self._cond.release()
                try:
                    self._lead(batch)
                finally:
                    self._cond.acquire()
                    self._leading = False
                    self._cond.notify_all()
        return call.future.result()

    @property
    def queued_writes(self) -> int:
        """Calls waiting for the batch under way to end (tests use it to build a batch)."""
        with self._cond:
            return len(self._pending)

    def _lead(self, batch: list[_Write]) -> None:
        """Commit ``batch`` on the writer connection; every call in it is answered, whatever happens."""
        if self._closed and self._conn is None:  # close() gave up waiting: no new connection now
            self._fail(batch, StorageFailure("the catalog is closed"))
            return
        try:
            try:
                self._conn = self._backend.writer_connection(self._conn)
            except (psycopg.Error, sqlite3.Error, OSError) as exc:
                self._conn = None
                self._fail(batch, exc)
                return
            self._commit_batch(self._conn, batch)
        except BaseException as exc:  # noqa: BLE001 - e.g. KeyboardInterrupt: no caller may wait forever
            self._fail(batch, exc)
            self._drop_connection()  # it may be inside the interrupted transaction
            raise

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute("ROLLBACK")
        except Exception:  # noqa: BLE001 - no transaction open, or the connection is broken
            pass
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass

    def _commit_batch(self, conn: Any, batch: list[_Write]) -> None:
        results: list[tuple[_Write, bool, Any]] = []
        try:
            for folder in {d for call in batch for d in call.sync_dirs}:
                fsync_dir(folder)
            self._backend.begin(conn, durable=any(call.durable for call in batch))
            alone = len(batch) == 1  # no savepoint needed: the transaction is the call's own
            for call in batch:
                results.append(self._run_one(conn, call, savepoint=not alone))
            conn.execute("ROLLBACK" if alone and not results[0][1] else "COMMIT")
        except (sqlite3.Error, psycopg.Error, OSError) as exc:
            try:
                conn.execute("ROLLBACK")
            except (sqlite3.Error, psycopg.Error):
                pass
            self._fail(batch, exc)
            return
        for call, ok, value in results:
            if ok:
                call.future.set_result(value)
            else:
                call.future.set_exception(value)

    def _fail(self, batch: list[_Write], exc: BaseException) -> None:
        from dicomd.dburl import mask

        reason = mask(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        logger.error("catalog commit failed: %s", reason)
        failure = StorageFailure(f"catalog write failed: {reason}")
        for call in batch:
            if not call.future.done():
                call.future.set_exception(failure)

    @staticmethod
    def _run_one(conn: Any, call: _Write, *, savepoint: bool = True) -> tuple[_Write, bool, Any]:
        """One call in its own savepoint: rolled back alone if it raises (a batch of one call is
        rolled back whole instead, saving two round trips on PostgreSQL)."""
        if savepoint:
            conn.execute("SAVEPOINT job")
        try:
            value = call.fn(conn)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            if savepoint:
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
            return call, False, exc
        if savepoint:
            conn.execute("RELEASE job")
        return call, True, value

    def close(self) -> None:
        """Refuse new writes, let the calls already queued commit, then close the connections."""
        with self._cond:
            self._closed = True
            self._cond.wait_for(lambda: not self._leading and not self._pending, timeout=10)
            left, self._pending = self._pending, []
            conn = None if self._leading else self._conn
            if conn is not None:
                self._conn = None
        if left:
            self._fail(left, StorageFailure("the catalog closed before this write was committed"))
            with self._cond:
                self._cond.notify_all()
        if conn is not None:
            conn.close()
        self._backend.close()


def marks(values: Sequence[Any]) -> str:
    """``?,?,?``: one placeholder per value, for ``IN (...)``."""
    return ",".join("?" * len(values))
