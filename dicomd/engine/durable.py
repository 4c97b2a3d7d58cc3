"""Batched durability for received files: one file-system sync for every file that is waiting.

Ingest renames a received file into the prearchive and then calls ``barrier(path)``: the file's
data and its new folder entry must be on disk before its catalog row is committed and its
C-STORE answered. With `GroupSync` as that barrier, the threads committing instances for every
association of the process meet here: the first to arrive becomes the leader and makes everything
queued by then durable at once; the others wait for it. The catalog then commits their rows in
one transaction (it batches concurrent writers the same way). Every caller returns only once its
own file is durable, or raises.

A batch is made durable one of two ways, whichever this machine does faster for a batch of its
size, measured as it runs:

- ``syncfs`` of the data file system: one journal commit and one device cache flush for the whole
  batch, but it also writes back whatever else is dirty on the file system (other associations'
  half-received spool files, other processes' data, the catalog's log);
- file by file: each file fdatasync'd, then each folder with new entries fsync'd once; each
  caller gets its own file's error. Also the way when syncfs is missing or fails.

Which wins depends on the disk. Measured: on a virtio disk whose cache flush cost 4 ms, one
syncfs took 4.0 ms where fdatasync + folder fsync of one 135 KB file took 7.3 ms; on another
whose flush cost 0.14 ms, syncfs under load took 0.87 ms per batch and four associations ran
about 5% faster file by file. So `GroupSync` keeps a moving average of the time per batch of
syncfs and per file of the file-by-file way, takes the cheaper for each batch, and every
PROBE_EVERY batches tries the other way to keep both averages current.

The spool (`engine/spool.py`) starts each file's writeback while the data set streams in and when
it ends (``start_writeback``: sync_file_range with SYNC_FILE_RANGE_WRITE), so the sync finds the
data mostly written. Measured on the benchmark machine (ext4 on a virtio disk), the fdatasync +
folder fsync alternative costs a cache flush per call: 7.3 ms for one 135 KB file against 4.0 ms
for a syncfs, and more with every file of a batch; early writeback took a syncfs of one 520 KB
file from 5-7 ms to about 4 ms.

A file that replaces an existing one is not renamed before its sync (ingest syncs it first, so a
power cut can never leave an acknowledged instance's name on unsynced data).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable

logger = logging.getLogger(__name__)


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_SYNCFS = _load_syncfs()
SYNC_FILE_RANGE_WRITE = 2  # linux/fs.h: start writeback of the range's dirty pages, do not wait


def _load_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        function = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_SYNC_FILE_RANGE = _load_sync_file_range()


def start_writeback(fd: int, offset: int = 0, length: int = 0) -> None:
    """Ask the kernel to start writing ``fd``'s dirty pages now (Linux ``sync_file_range`` with
    SYNC_FILE_RANGE_WRITE; ``length`` 0 = to the end), without waiting. Durability still comes
    from the batch's sync; this only makes that sync find the data already on its way. A
    no-op where the call is missing or refused."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, SYNC_FILE_RANGE_WRITE)


def syncfs(fd: int) -> None:
    """Sync the whole file system holding ``fd`` (Linux); OSError when it fails or is missing."""
    if _SYNCFS is None:
        raise OSError(38, "syncfs is not available")  # ENOSYS
    if _SYNCFS(fd) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def sync_one(path: Path) -> None:
    """fdatasync ``path`` and fsync its folder."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Waiter:
    __slots__ = ("path", "done", "error")

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done = False
        self.error: OSError | None = None


PROBE_EVERY = 32  # batches between tries of the way not taken
_WEIGHT = 0.1  # of the newest measurement in a moving average


class GroupSync:
    """``GroupSync()(path)``: make ``path`` (data and folder entry) durable, batched with every
    other path waiting at the same time."""

    def __init__(self, *, use_syncfs: bool = True) -> None:
        self._cond = threading.Condition()
        self._queue: list[_Waiter] = []
        self._leading = False
        self.use_syncfs = use_syncfs  # False: file by file only (also once syncfs has failed)
        self.batches = 0
        self.files = 0
        self.synced_by_syncfs = 0  # batches
        self.seconds_per_syncfs: float | None = None  # moving averages; None until measured
        self.seconds_per_file: float | None = None

    def __call__(self, path: Path) -> None:
        me = _Waiter(path)
        with self._cond:
            self._queue.append(me)
            while not me.done:
                if self._leading:
                    self._cond.wait()
                    continue
                batch, self._queue = self._queue, []
                self._leading = True
                self._cond.release()
                try:
                    self._sync(batch)
                finally:
                    self._cond.acquire()
                    self._leading = False
                    for waiter in batch:
                        waiter.done = True
                    self._cond.notify_all()
        if me.error is not None:
            raise me.error

    def _sync(self, batch: list[_Waiter]) -> None:
        self.batches += 1
        self.files += len(batch)
        started = time.perf_counter()
        if self._take_syncfs(len(batch)):
            try:
                fd = os.open(batch[0].path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    syncfs(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                logger.debug("syncfs failed (%s): syncing file by file from now on", exc)
                self.use_syncfs = False
            else:
                self.synced_by_syncfs += 1
                self.seconds_per_syncfs = _average(self.seconds_per_syncfs, time.perf_counter() - started)
                return
            started = time.perf_counter()
        self._sync_files(batch)
        self.seconds_per_file = _average(self.seconds_per_file, (time.perf_counter() - started) / len(batch))

    def _take_syncfs(self, files: int) -> bool:
        """syncfs for this batch? The cheaper way by the averages; the other way every PROBE_EVERY
        batches (and each way once before either is known)."""
        if not self.use_syncfs:
            return False
        if self.seconds_per_syncfs is None or self.seconds_per_file is None:
            return self.seconds_per_syncfs is None
        cheaper = self.seconds_per_syncfs <= self.seconds_per_file * files
        return cheaper != (self.batches % PROBE_EVERY == 0)

    def _sync_files(self, batch: list[_Waiter]) -> None:
        folders: dict[Path, list[_Waiter]] = {}
        for waiter in batch:  # the data of each file (its writeback began while it streamed in)
            try:
                fd = os.open(waiter.path, os.O_RDONLY)
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                waiter.error = exc
                continue
            folders.setdefault(waiter.path.parent, []).append(waiter)
        for folder, waiters in folders.items():  # then each folder's new entries, once per folder
            try:
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                for waiter in waiters:
                    waiter.error = exc


def _average(previous: float | None, seconds: float) -> float:
    return seconds if previous is None else previous + _WEIGHT * (seconds - previous)
