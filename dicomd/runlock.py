"""The data directory's run lock: every running `dicomd serve` holds it shared, `dicomd catalog
migrate` takes it exclusively, so a catalog is never copied while a daemon writes to it (and no
daemon starts while it is being copied). An empty file under locks/, held with flock."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from dicomd.errors import Conflict
from dicomd.layout import Layout
from dicomd.storage import ensure_dir


class RunLock:
    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def _take(cls, layout: Layout, mode: int, busy: str) -> "RunLock":
        path = lock_file(layout)
        ensure_dir(path.parent)  # every new level 0700, the data directory's own included
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Conflict(busy) from None
        return cls(fd)

    @classmethod
    def serving(cls, layout: Layout) -> "RunLock":
        """Held by a running daemon (shared: receiver processes and other daemons may hold it too)."""
        return cls._take(layout, fcntl.LOCK_SH, f"a catalog migration is running on {layout.root}; start dicomd when it ends")

    @classmethod
    def migrating(cls, layout: Layout) -> "RunLock":
        """Held while the catalog is copied: refused while any daemon serves this data directory."""
        return cls._take(layout, fcntl.LOCK_EX, f"dicomd serve is running on {layout.root}; stop it before migrating the catalog")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def lock_file(layout: Layout) -> Path:
    return layout.locks / "serve.lock"
