"""Section 1: ingest over C-STORE.

Every receiver is started once for the section and kept running; within each run the receivers
take turns, so machine noise hits them alike. Every (modality, associations, run) has its own
study, so a receiver that keeps state (dicomd) always receives new data, never re-sends."""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.procs import cpu_seconds
from bench.receivers import STARTERS, Running
from bench.senders import DcmtkSender, PynetdicomSender

logger = logging.getLogger(__name__)
BASELINE = "bare-pynetdicom"
PEER = "orthanc"  # the product dicomd is measured against (its targets are ratios to it)
SetKey = tuple[str, int, int]  # (modality, associations, run)


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
    cpu_seconds: float | None = None  # receiver's CPU time (all its processes) during the send

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
    cpu_ms_per_instance: float | None = None  # receiver CPU time per instance, median of runs
    ratio_vs_orthanc: float | None = None  # median of per-run ratios against Orthanc in the same run


def _send(running: Running, key: SetKey, files: list[Path],
          sender: DcmtkSender | PynetdicomSender) -> Measurement:
    modality, assoc, run = key
    size = sum(p.stat().st_size for p in files)
    before, cpu_before = running.received(), cpu_seconds(running.proc.pid)
    result = sender.send(files, running.port, running.ae_title, assoc)
    cpu = cpu_seconds(running.proc.pid) - cpu_before
    received = running.received() - before
    error = result.errors if result.failed else ""
    if received != len(files) and not error:
        error = f"receiver stored {received} of {len(files)} instances"
    if running.proc.poll() is not None:
        error = f"receiver exited with {running.proc.returncode}; see {running.log}"
    running.clear()
    return Measurement(running.name, modality, assoc, run, len(files), size, result.elapsed,
                       received, result.failed, error, cpu)


def _failed(receiver: str, key: SetKey, files: list[Path], error: str) -> Measurement:
    return Measurement(receiver, key[0], key[1], key[2], len(files), 0, None, 0, 0, error)


def run_ingest(sets: dict[SetKey, list[Path]], receivers: list[str],
               sender: DcmtkSender | PynetdicomSender, work: Path, pdu: int,
               progress: Callable[[str], None]) -> list[Measurement]:
    started: dict[str, Running | str] = {}
    for name in receivers:
        try:
            started[name] = STARTERS[name](work / name, pdu)
        except (OSError, RuntimeError, TimeoutError) as exc:
            started[name] = str(exc)[:300]
            progress(f"{name} did not start: {started[name]}")
    out: list[Measurement] = []
    try:
        for key, files in sets.items():
            for name in receivers:
                running = started[name]
                if isinstance(running, str) or running.proc.poll() is not None:
                    m = _failed(name, key, files, running if isinstance(running, str) else "receiver died")
                else:
                    m = _send(running, key, files, sender)
                progress(f"{key[0]} x{key[1]} run {key[2] + 1} {name}: "
                         + (f"{m.ips:.0f} inst/s" if m.valid else f"failed ({m.error})"))
                out.append(m)
    finally:
        for running in started.values():
            if not isinstance(running, str):
                running.stop()
    return out


def summarize(measurements: list[Measurement]) -> list[IngestRow]:
    keys = sorted({(m.modality, m.associations, m.receiver) for m in measurements},
                  key=lambda k: (k[0] != "MR", k[1], not k[2].startswith(BASELINE), k[2]))
    base = {(m.modality, m.associations, m.run): m for m in measurements
            if m.receiver == BASELINE and m.valid}
    peer = {(m.modality, m.associations, m.run): m for m in measurements if m.receiver == PEER and m.valid}
    rows = []
    for modality, assoc, receiver in keys:
        group = [m for m in measurements if (m.modality, m.associations, m.receiver) == (modality, assoc, receiver)]
        good = [m for m in group if m.valid]
        errors = sorted({m.error or f"stored {m.received} of {m.instances}" for m in group if not m.valid})
        if not good:
            rows.append(IngestRow(receiver, modality, assoc, 0, None, None, None, "; ".join(errors)[:200]))
            continue
        ips = statistics.median(m.ips for m in good)
        mbps = statistics.median(m.bytes / m.elapsed / 1e6 for m in good if m.elapsed)
        pairs = [m.ips / base[(modality, assoc, m.run)].ips for m in good
                 if (modality, assoc, m.run) in base]
        ratio = statistics.median(pairs) if pairs else None
        against_peer = [m.ips / peer[(modality, assoc, m.run)].ips for m in good
                        if (modality, assoc, m.run) in peer]
        note = f"{len(group) - len(good)} failed run(s): {errors[0][:120]}" if errors else ""
        cpu = [m.cpu_seconds * 1000 / m.instances for m in good if m.cpu_seconds is not None]
        rows.append(IngestRow(receiver, modality, assoc, len(good), ips, mbps, ratio, note,
                              statistics.median(cpu) if cpu else None,
                              statistics.median(against_peer) if against_peer else None))
    return rows
