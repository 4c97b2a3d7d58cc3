"""`BatchProgress`: what one import batch has done so far, counted as it goes.

`dicomd.bulk.stage_batch` updates it (files found, skipped, refused, staged, duplicates) and the
import operation names its phase; the CLI's `dicomd import` bar and the HTTP upload status
(`GET /data/status/ID`) read the same counts. Thread-safe: staging runs on a few threads, and
readers take a consistent `snapshot()`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any

RECEIVING, EXTRACTING, CHECKING, STAGING, ARCHIVING, DONE, FAILED = (
    "receiving", "extracting", "checking", "staging", "archiving", "done", "failed")


@dataclass
class BatchProgress:
    """Counts of one batch (an upload, a CLI path). Change them only through the methods."""

    phase: str = RECEIVING
    received_bytes: int = 0  # the upload's bytes received so far (HTTP)
    files: int = 0  # files found in the batch (archive members, folder files)
    skipped: int = 0  # stray files left out (not DICOM, DICOMDIR, system files)
    refused: int = 0  # unparseable or rejected files (quarantined with Ignore-Unparsable)
    to_stage: int = 0  # files whose header was read and that are being staged
    staged: int = 0  # new instances staged
    duplicates: int = 0  # instances already there, byte for byte
    started: float = field(default_factory=time.time)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def set_phase(self, phase: str) -> None:
        with self._lock:
            self.phase = phase

    def add(self, **counts: int) -> None:
        """Add to counters by name: ``add(files=1)``, ``add(staged=1)``."""
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def set(self, **values: int) -> None:
        with self._lock:
            for name, value in values.items():
                setattr(self, name, value)

    def snapshot(self) -> dict[str, Any]:
        """The counts at one moment, JSON-ready."""
        with self._lock:
            return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def text(self) -> str:
        """`12 files: 8 staged, 1 duplicate, 1 refused, 2 skipped` (zero counts left out)."""
        now = self.snapshot()
        parts = [f"{now[k]} {word}" for k, word in (("staged", "staged"), ("duplicates", "duplicate"),
                                                  ("refused", "refused"), ("skipped", "skipped")) if now[k]]
        return f"{now['files']} files" + (": " + ", ".join(parts) if parts else "")
