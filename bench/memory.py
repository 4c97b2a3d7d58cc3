"""Section 3: peak RSS of a receiver (its whole process tree) while it takes one large instance."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bench.procs import RssSampler
from bench.receivers import STARTERS
from bench.senders import DcmtkSender, PynetdicomSender

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MemoryRow:
    receiver: str
    object_bytes: int
    idle_rss: int | None  # tree RSS just before sending
    peak_rss: int | None  # largest sampled tree RSS while receiving
    peak_hwm: int | None  # largest kernel high-water mark of any process in the tree
    seconds: float | None
    stored: bool
    note: str
    idle_pss: int | None = None  # tree PSS (smaps_rollup: shared pages split) just before sending
    peak_pss: int | None = None  # largest sampled tree PSS while receiving
    largest_process: int | None = None  # largest sampled RSS of one process of the tree


def measure_memory(receiver: str, big: Path, sender: DcmtkSender | PynetdicomSender, work: Path,
                   pdu: int, keep: bool) -> MemoryRow:
    folder = work / f"memory-{receiver}"
    folder.mkdir(parents=True)
    size = big.stat().st_size
    try:
        running = STARTERS[receiver](folder, pdu)
    except (OSError, RuntimeError, TimeoutError) as exc:
        return MemoryRow(receiver, size, None, None, None, None, False, str(exc)[:200])
    try:
        with RssSampler(running.proc.pid) as sampler:
            t0 = time.monotonic()
            result = sender.send([big], running.port, running.ae_title, 1)
            seconds = time.monotonic() - t0
        stored = running.received() == 1 and not result.failed
    finally:
        running.stop()
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    peak = sampler.result()
    note = "" if stored else (result.errors or "not stored")[:200]
    return MemoryRow(receiver, size, peak.start_bytes, peak.tree_peak_bytes, peak.process_hwm_bytes,
                     seconds, stored, note, peak.start_pss_bytes, peak.tree_pss_peak_bytes, peak.largest_process_bytes)
