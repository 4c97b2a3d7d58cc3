"""Section 1: ingest over C-STORE. Every receiver is started fresh for every measurement, and the
receivers take turns within each run so that machine noise hits them alike."""

from __future__ import annotations

import logging
import shutil
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.receivers import STARTERS
from bench.senders import DcmtkSender, PynetdicomSender

logger = logging.getLogger(__name__)
BASELINE = "bare-pynetdicom"


@dataclass(frozen=True)
class Measurement:
    receiver: str
    modality: str
    associations: int
    run: int
    instances: int
    bytes: int
    elapsed: float | None
    received: int
    failed: int
    error: str

    @property
    def valid(self) -> bool:
        return not self.error and self.elapsed is not None and self.received == self.instances

    @property
    def ips(self) -> float:
        return self.instances / self.elapsed if self.valid and self.elapsed else float("nan")


@dataclass(frozen=True)
class IngestRow:
    receiver: str
    modality: str
    associations: int
    runs: int  # valid runs behind the medians
    instances_per_s: float | None
    mb_per_s: float | None
    ratio_vs_bare: float | None  # median of per-run ratios against the baseline of the same run
    note: str


def measure(receiver: str, files: list[Path], modality: str, associations: int, run: int,
            sender: DcmtkSender | PynetdicomSender, work: Path, pdu: int) -> Measurement:
    folder = work / f"{receiver}-{modality}-{associations}-{run}"
    folder.mkdir(parents=True)
    size = sum(p.stat().st_size for p in files)
    try:
        running = STARTERS[receiver](folder, pdu)
    except (OSError, RuntimeError, TimeoutError) as exc:
        return Measurement(receiver, modality, associations, run, len(files), size, None, 0, 0, str(exc))
    try:
        result = sender.send(files, running.port, running.ae_title, associations)
        received = running.received()
    finally:
        running.stop()
    error = result.errors if result.failed else ""
    if received != len(files) and not error:
        error = f"receiver stored {received} of {len(files)} instances"
    logger.info("%s %s x%d run %d: %.2f s, %d stored", receiver, modality, associations, run,
                result.elapsed, received)
    return Measurement(receiver, modality, associations, run, len(files), size, result.elapsed,
                       received, result.failed, error)


def run_ingest(sets: dict[str, list[Path]], receivers: list[str], associations: list[int], runs: int,
               sender: DcmtkSender | PynetdicomSender, work: Path, pdu: int, keep: bool,
               progress: Callable[[str], None]) -> list[Measurement]:
    out: list[Measurement] = []
    for modality, files in sets.items():
        for assoc in associations:
            for run in range(runs):
                for receiver in receivers:
                    m = measure(receiver, files, modality, assoc, run, sender, work, pdu)
                    progress(f"{modality} x{assoc} run {run + 1}/{runs} {receiver}: "
                             + (f"{m.ips:.0f} inst/s" if m.valid else f"failed ({m.error})"))
                    out.append(m)
                    if not keep:
                        shutil.rmtree(work / f"{receiver}-{modality}-{assoc}-{run}", ignore_errors=True)
    return out


def summarize(measurements: list[Measurement]) -> list[IngestRow]:
    keys = sorted({(m.modality, m.associations, m.receiver) for m in measurements},
                  key=lambda k: (k[0] != "MR", k[1], k[2] != BASELINE, k[2]))
    base = {(m.modality, m.associations, m.run): m for m in measurements
            if m.receiver == BASELINE and m.valid}
    rows = []
    for modality, assoc, receiver in keys:
        group = [m for m in measurements if (m.modality, m.associations, m.receiver) == (modality, assoc, receiver)]
        good = [m for m in group if m.valid]
        errors = sorted({m.error for m in group if not m.valid})
        if not good:
            rows.append(IngestRow(receiver, modality, assoc, 0, None, None, None, "; ".join(errors)[:200]))
            continue
        ips = statistics.median(m.ips for m in good)
        mbps = statistics.median(m.bytes / m.elapsed / 1e6 for m in good if m.elapsed)
        pairs = [m.ips / base[(modality, assoc, m.run)].ips for m in good
                 if (modality, assoc, m.run) in base]
        ratio = statistics.median(pairs) if pairs else None
        note = f"{len(group) - len(good)} failed run(s): {errors[0][:120]}" if errors else ""
        rows.append(IngestRow(receiver, modality, assoc, len(good), ips, mbps, ratio, note))
    return rows
