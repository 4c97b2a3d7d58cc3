"""Batched durability for received files: one data sync for every file that is waiting.

Ingest calls ``datasync(fd)`` before it renames a spool file into the prearchive. With
`GroupSync` as that call, the threads committing instances from every association of the process
meet here: the first to arrive becomes the leader and syncs everything queued by then in one
go, while the others wait for it (the catalog's writer does the same for its transactions:
one commit per batch). A batch of one file is an fdatasync; a larger batch is one ``syncfs`` of
the data file system where Linux has it (one journal commit), else an fdatasync per file.
Every caller returns only after its own file is on disk, or raises the sync's OSError.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
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


class _Waiter:
    __slots__ = ("fd", "done", "error")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.done = False
        self.error: OSError | None = None


class GroupSync:
    """``GroupSync()(fd)``: fdatasync ``fd`` together with every other file waiting to be synced."""

    def __init__(self, *, use_syncfs: bool = True) -> None:
        self._cond = threading.Condition()
        self._queue: list[_Waiter] = []
        self._leading = False
        self._syncfs = _load_syncfs() if use_syncfs else None
        self.batches = 0
        self.files = 0

    def __call__(self, fd: int) -> None:
        me = _Waiter(fd)
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
        if len(batch) > 1 and self._syncfs is not None:
            if self._syncfs(batch[0].fd) == 0:
                return
            logger.debug("syncfs failed (errno %d): syncing file by file", ctypes.get_errno())
        for waiter in batch:
            try:
                os.fdatasync(waiter.fd)
            except OSError as exc:
                waiter.error = exc
