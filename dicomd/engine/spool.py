"""The spool file of one incoming C-STORE data set, written as its fragments arrive.

The file is what pynetdicom's chunked receive writes (preamble, File Meta Information, the data
set as sent), so ingest renames it into the prearchive unchanged. On the way the bytes are
hashed (ingest need not read the file again for its SHA-256), counted against
``max_instance_bytes`` and shown to the routing-header scanner. A refused instance (too large,
below the free-space floor, a write error such as ENOSPC) stops being written at once; the rest of
its fragments are still read off the connection and dropped, and the C-STORE is answered 0xA700.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import os
import uuid
from pathlib import Path

from dicomd.engine.dimse import file_meta
from dicomd.engine.durable import start_writeback
from dicomd.engine.headscan import HeaderScanner
from dicomd.errors import DicomdError, StorageFailure, StorageFull

logger = logging.getLogger(__name__)
WRITEBACK_EVERY = 4 * 1024 * 1024  # a large instance's pages go to disk as it streams, not all at the end
_NAMES = itertools.count()
_PREFIX = uuid.uuid4().hex[:12]  # per process: receiver processes share data/tmp


class Spool:
    def __init__(self, folder: Path, sop_class: str, sop_instance: str, transfer_syntax: str, *,
                 limit: int = 0, refusal: str = "") -> None:
        self.path = folder / f"rx-{_PREFIX}-{os.getpid()}-{next(_NAMES)}.dcm"
        self.scanner = HeaderScanner(transfer_syntax)
        self.limit = limit
        self.refusal = refusal  # why this instance is answered 0xA700 ('' = not refused)
        self.size = 0
        self._digest = hashlib.sha256()
        self._fd = -1  # unbuffered: fragments arrive in pieces of up to 256 KiB, written as they come
        self._written_back = 0  # bytes whose writeback has been started
        if refusal:
            return
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            head = file_meta(sop_class, sop_instance, transfer_syntax)
            _write_all(self._fd, head)
        except (OSError, ValueError, UnicodeEncodeError) as exc:
            self._refuse(f"cannot write the spool file: {exc}")
            return
        self.size = len(head)
        self._digest.update(head)

    def write(self, chunk: bytes) -> None:
        if self.refusal:
            return
        self.size += len(chunk)
        if self.limit and self.size > self.limit:
            self._refuse(f"more than max_instance_bytes ({self.limit})")
            return
        try:
            _write_all(self._fd, chunk)
        except OSError as exc:
            self._refuse(f"cannot write the spool file: {exc.strerror or exc}")
            return
        self._digest.update(chunk)
        self.scanner.feed(chunk)
        if self.size - self._written_back >= WRITEBACK_EVERY:
            self._start_writeback()

    def _start_writeback(self) -> None:
        """Start the kernel writing what is written so far (the batch's sync then waits less)."""
        try:
            start_writeback(self._fd, self._written_back, self.size - self._written_back)
        except OSError:
            return  # the write error, if any, comes back from the next write or from finish()
        self._written_back = self.size

    def _refuse(self, reason: str) -> None:
        self.refusal = reason
        self.discard()

    def finish(self) -> tuple[str, int]:
        """Close the file; (sha256, size) of what it holds. Raises DicomdError when it cannot."""
        if self.refusal:
            raise DicomdError(self.refusal)
        try:
            start_writeback(self._fd, self._written_back, 0)
            fd, self._fd = self._fd, -1
            os.close(fd)
        except OSError as exc:
            self._refuse(f"cannot write the spool file: {exc.strerror or exc}")
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            raise (StorageFull if full else StorageFailure)(self.refusal) from exc
        return self._digest.hexdigest(), self.size

    def discard(self) -> None:
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("could not remove a spool file %s: %s", self.path.name, exc)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
