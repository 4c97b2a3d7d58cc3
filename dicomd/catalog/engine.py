"""The catalog's SQLite file: connections, migrations, per-thread readers and the one writer.

Writes go through one writer thread that commits whatever is queued in a single transaction
(group commit): concurrent associations share fsyncs without anyone being answered before their
row is durable. Readers use their own per-thread connections (WAL mode), so the CLI can read
while the daemon writes.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import sqlite_utils
from sqlite_utils.migrations import Migrations

from dicomd.errors import StorageFailure
from dicomd.storage import fsync_dir

logger = logging.getLogger(__name__)
T = TypeVar("T")


class _Write:
    """One queued ``write()`` call, answered through its future."""

    __slots__ = ("fn", "future", "durable", "sync_dirs")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], durable: bool, sync_dirs: Sequence[Path]) -> None:
        self.fn = fn
        self.future: Future[Any] = Future()
        self.durable = durable
        self.sync_dirs = sync_dirs


class Engine:
    """The database file. Thread-safe; one per process."""

    def __init__(self, path: Path, *, batch_max: int = 256) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._local = threading.local()
        self._queue: queue.Queue[_Write | None] = queue.Queue()
        self._batch_max = batch_max
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._closed = False
        self._synchronous_full = True

    def _connect(self) -> sqlite3.Connection:
        existed = self.path.exists()
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        if not existed:
            os.chmod(self.path, 0o600)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def apply_migrations(self, migration_set: Migrations) -> None:
        """Apply a named migration set to the file (other modules keep their tables here too)."""
        conn = self._connect()
        try:
            migration_set.apply(sqlite_utils.Database(conn))
        finally:
            conn.close()

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def write(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True,
              sync_dirs: Sequence[Path] = ()) -> T:
        """Run ``fn(conn)`` inside a committed transaction and return its result.

        Calls from many threads are committed together; a call whose ``fn`` raises is rolled back
        alone (savepoint) and re-raises in its caller. A failed COMMIT fails every call in it.
        ``sync_dirs`` are fsync'd (once per batch) before the commit. ``durable=False`` lets the
        batch commit without an fsync of the WAL (synchronous=NORMAL): the commit survives a process
        crash, and after a power loss the start-up scan re-adopts fsync'd files from disk. Only
        ingest uses it; operations that move data stay fully synchronous.
        """
        if self._closed:
            raise StorageFailure("the catalog is closed")
        self._ensure_writer()
        call = _Write(fn, durable, sync_dirs)
        self._queue.put(call)
        return call.future.result()

    def _ensure_writer(self) -> None:
        if self._writer is not None:
            return
        with self._writer_lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="catalog-writer", daemon=True)
                self._writer.start()

    def _write_loop(self) -> None:
        conn = self._connect()
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch, stop = self._take_batch(first)
            self._commit_batch(conn, batch)
            if stop:
                break
        conn.close()

    def _take_batch(self, first: _Write) -> tuple[list[_Write], bool]:
        """``first`` and whatever else is queued (up to batch_max); True when close() was queued."""
        batch = [first]
        while len(batch) < self._batch_max:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                return batch, True
            batch.append(more)
        return batch, False

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Write]) -> None:
        results: list[tuple[_Write, bool, Any]] = []
        try:
            for folder in {d for call in batch for d in call.sync_dirs}:
                fsync_dir(folder)
            self._set_synchronous(conn, durable=any(call.durable for call in batch))
            conn.execute("BEGIN IMMEDIATE")
            for call in batch:
                results.append(self._run_one(conn, call))
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            logger.error("catalog commit failed: %s", exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            failure = StorageFailure(f"catalog write failed: {exc}")
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(failure)
            return
        for call, ok, value in results:
            if ok:
                call.future.set_result(value)
            else:
                call.future.set_exception(value)

    def _set_synchronous(self, conn: sqlite3.Connection, *, durable: bool) -> None:
        if durable != self._synchronous_full:
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._synchronous_full = durable

    @staticmethod
    def _run_one(conn: sqlite3.Connection, call: _Write) -> tuple[_Write, bool, Any]:
        """One call in its own savepoint: rolled back alone if it raises."""
        conn.execute("SAVEPOINT job")
        try:
            value = call.fn(conn)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            return call, False, exc
        conn.execute("RELEASE job")
        return call, True, value

    def close(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=10)
            self._writer = None
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def marks(values: Sequence[Any]) -> str:
    """``?,?,?``: one placeholder per value, for ``IN (...)``."""
    return ",".join("?" * len(values))
