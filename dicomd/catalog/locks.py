"""The same-key lock: mutual exclusion per key (hashed onto a few stripes) between the threads and
processes of every node, one interface with one implementation per catalog backend.

Ingest holds it while a file and its row are made for one SOP Instance UID, so two associations
(on two receiver processes, or two nodes) delivering the same instance at once cannot interleave.

- SQLite (one machine): a thread lock per stripe plus ``flock`` on a per-stripe file under the
  data directory's ``locks/``. flock alone does not exclude threads sharing one descriptor, a
  thread lock alone does not exclude receiver processes.
- PostgreSQL (nodes on several machines; flock is not reliable across network file systems): a
  thread lock per stripe plus a session-level advisory lock ``pg_advisory_lock(class, stripe)``
  on a connection of the holding thread's own, held for the block.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from dicomd import storage
from dicomd.catalog.engine import Engine
from dicomd.errors import DicomdError, StorageFailure
from dicomd.migrations import POSTGRESQL

logger = logging.getLogger(__name__)

STRIPES = 256
_ADVISORY_CLASS = 0x64636D  # "dcm": the first key of dicomd's same-key advisory locks


class KeyLock(Protocol):
    def hold(self, key: str) -> contextlib.AbstractContextManager[None]: ...


def _stripe(key: str, stripes: int) -> int:
    return zlib.crc32(key.encode()) % stripes


class FileKeyLock:
    """Thread lock + ``flock`` per stripe (SQLite: every node on this machine)."""

    def __init__(self, folder: Path, stripes: int = STRIPES) -> None:
        self.folder = folder
        self._locks = [threading.Lock() for _ in range(stripes)]

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        index = _stripe(key, len(self._locks))
        with self._locks[index]:
            storage.ensure_dir(self.folder)
            fd = os.open(self.folder / f"{index:03d}", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor closes
                yield
            finally:
                os.close(fd)


class AdvisoryKeyLock:
    """Thread lock + PostgreSQL advisory lock per stripe (every node on the catalog's server)."""

    def __init__(self, connect: Callable[[], Any], stripes: int = STRIPES) -> None:
        self._connect = connect
        self._locks = [threading.Lock() for _ in range(stripes)]
        self._local = threading.local()
        self._opened: list[Any] = []
        self._opened_lock = threading.Lock()

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.broken:
            conn = self._connect()
            self._local.conn = conn
            with self._opened_lock:
                self._opened.append(conn)
        return conn

    @contextlib.contextmanager
    def hold(self, key: str) -> Iterator[None]:
        index = _stripe(key, len(self._locks))
        with self._locks[index]:
            try:
                conn = self._conn()
                conn.execute("SELECT pg_advisory_lock(CAST(? AS integer), CAST(? AS integer))",
                             (_ADVISORY_CLASS, index))
            except DicomdError:
                raise
            except Exception as exc:  # psycopg's errors: the catalog cannot be reached
                self._local.conn = None
                raise StorageFailure(f"the catalog's same-key lock failed: {type(exc).__name__}") from exc
            try:
                yield
            finally:
                self._unlock(conn, index)

    def _unlock(self, conn: Any, index: int) -> None:
        try:
            conn.execute("SELECT pg_advisory_unlock(CAST(? AS integer), CAST(? AS integer))", (_ADVISORY_CLASS, index))
        except Exception as exc:  # noqa: BLE001 - closing the connection releases the lock on the server
            logger.warning("could not release a same-key lock (%s): closing its connection", type(exc).__name__)
            self._local.conn = None
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        with self._opened_lock:
            for conn in self._opened:
                conn.close()
            self._opened.clear()


class KeyLocks(Engine):
    """The catalog's part: the same-key lock for its backend."""

    _key_lock: AdvisoryKeyLock | None = None

    def key_lock(self, folder: Path) -> KeyLock:
        """flock under ``folder`` on SQLite; advisory locks on PostgreSQL (one per catalog)."""
        if self.dialect != POSTGRESQL:
            return FileKeyLock(folder)
        if self._key_lock is None:
            self._key_lock = AdvisoryKeyLock(self.connect)
        return self._key_lock

    def close(self) -> None:
        if self._key_lock is not None:
            self._key_lock.close()
            self._key_lock = None
        super().close()
