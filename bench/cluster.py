"""Section "cluster": ingest into one dicomd node vs two nodes on this machine.

Both setups receive the same number of instances over the same number of associations (split
evenly between the nodes when there are two): one node is one `dicomd serve` with one receiver
process; two nodes are two `dicomd serve` processes (one receiver process each) on their own ports,
sharing one data directory and one catalog, as behind a TCP load balancer. Each backend is
measured: the SQLite file in the data directory, and PostgreSQL (the bench's throwaway server,
fsync on, a fresh database for each measurement).

On one machine both nodes share its cores (and its disk) with each other and with the sender,
so the ratio says what a second node costs or gains here, not what a second machine would."""

from __future__ import annotations

import logging
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench.data import instance_files
from bench.procs import free_port, stop, wait_for_port
from bench.receivers import _popen
from bench.senders import DcmtkSender, PynetdicomSender

logger = logging.getLogger(__name__)

NODE_CONFIG = """\
# Written by bench/cluster.py for one benchmark measurement.
session_idle_seconds = 3600
log_level = "WARNING"
receiver_processes = 1

[[receivers]]
ae_title = "DICOMD"
project = "bench"
max_associations = 32
max_pdu_size = {pdu}

[http]
enabled = false

[cluster]
heartbeat_seconds = 2

[projects.bench]
name = "Benchmark"
auto_archive = 0
{catalog}
"""


@dataclass(frozen=True)
class ClusterRow:
    backend: str
    nodes: int
    associations: int
    runs: int
    instances_per_s: float | None
    ratio_vs_one_node: float | None  # median of per-run ratios to one node in the same run
    note: str = ""


def _start_nodes(work: Path, count: int, pdu: int, catalog: str) -> list[tuple[Any, int]]:
    data = work / "data"
    started: list[tuple[Any, int]] = []
    for index in range(count):
        folder = work / f"node{index}"
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "dicomd.toml"
        config.write_text(NODE_CONFIG.format(pdu=pdu, catalog=catalog))
        port = free_port()
        cmd = [sys.executable, "-m", "dicomd", "serve", "--config", str(config), "--data-dir", str(data),
               "--dicom-port", str(port)]
        proc = _popen(cmd, folder / "dicomd.log")
        started.append((proc, port))
        try:
            wait_for_port(port, proc, deadline_s=60)
        except (RuntimeError, TimeoutError):
            for p, _port in started:
                stop(p)
            raise
    return started


def _send_all(nodes: list[tuple[Any, int]], files: list[Path], associations: int,
              sender: DcmtkSender | PynetdicomSender) -> tuple[float, str]:
    """Wall time to send ``files`` spread over the nodes (each its share of the associations)."""
    shares = [files[i::len(nodes)] for i in range(len(nodes))]
    per_node = max(1, associations // len(nodes))
    errors: list[str] = []

    def one(port: int, part: list[Path]) -> None:
        result = sender.send(part, port, "DICOMD", per_node)
        if result.failed:
            errors.append(str(result.errors)[:200])

    threads = [threading.Thread(target=one, args=(port, part)) for (_proc, port), part in zip(nodes, shares)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started, "; ".join(errors)


def _stored(work: Path) -> int:
    return sum(1 for p in (work / "data" / "prearchive").rglob("*") if p.is_file() and p.parent.name == "DICOM")


def run_cluster(cache: Path, work: Path, runs: int, instances: int, associations: int, pdu: int,
                sender: DcmtkSender | PynetdicomSender, progress: Callable[[str], None],
                fresh_pg: Callable[[], str] | None = None) -> list[ClusterRow]:
    """``fresh_pg`` makes a new PostgreSQL database and answers its URL (None: SQLite only)."""
    rows = _measure_backend("sqlite", None, cache, work / "sqlite", runs, instances, associations, pdu, sender,
                            progress)
    if fresh_pg is not None:
        rows += _measure_backend("postgresql", fresh_pg, cache, work / "postgresql", runs, instances, associations,
                                 pdu, sender, progress)
    return rows


def _measure_backend(backend: str, fresh_pg: Callable[[], str] | None, cache: Path, work: Path, runs: int, instances: int,
                     associations: int, pdu: int, sender: DcmtkSender | PynetdicomSender,
                     progress: Callable[[str], None]) -> list[ClusterRow]:
    rates: dict[int, list[float]] = {1: [], 2: []}
    per_run: dict[int, dict[int, float]] = {1: {}, 2: {}}  # nodes -> run -> inst/s
    notes: dict[int, list[str]] = {1: [], 2: []}
    for run in range(runs):
        for count in (1, 2):  # taking turns within each run, so machine noise hits both alike
            files = instance_files(cache, "MR", instances, variant=500 + 10 * run + count)
            folder = work / f"run{run}-{count}"
            catalog = f'\n[catalog]\nurl = "{fresh_pg()}"\n' if fresh_pg is not None else ""
            nodes = _start_nodes(folder, count, pdu, catalog)
            try:
                elapsed, error = _send_all(nodes, files, associations, sender)
            finally:
                for proc, _port in nodes:
                    stop(proc)
            stored = _stored(folder)
            if error or stored != len(files):
                notes[count].append(error or f"stored {stored} of {len(files)}")
                progress(f"cluster {backend} {count} node(s) run {run + 1}: failed ({notes[count][-1]})")
                continue
            rates[count].append(len(files) / elapsed)
            per_run[count][run] = rates[count][-1]
            progress(f"cluster {backend} {count} node(s) run {run + 1}: {rates[count][-1]:.0f} inst/s")
    out = []
    for count in (1, 2):
        ips = statistics.median(rates[count]) if rates[count] else None
        # the median of per-run ratios (the machine is shared and noisy: a run's two figures go together)
        pairs = [per_run[count][r] / per_run[1][r] for r in per_run[count] if r in per_run[1]]
        ratio = statistics.median(pairs) if pairs else None
        note = "; ".join(sorted(set(notes[count])))[:200]
        out.append(ClusterRow(backend, count, associations, len(rates[count]), ips, ratio, note))
    return out


def cluster_table(rows: list[ClusterRow]) -> list[str]:
    lines = [f"{'backend':<11} {'nodes':>5} {'assoc':>5} {'runs':>4} {'inst/s':>8} {'x 1 node':>8}  note"]
    for r in rows:
        ips = "-" if r.instances_per_s is None else f"{r.instances_per_s:.0f}"
        ratio = "-" if r.ratio_vs_one_node is None else f"{r.ratio_vs_one_node:.2f}"
        lines.append(f"{r.backend:<11} {r.nodes:>5} {r.associations:>5} {r.runs:>4} {ips:>8} {ratio:>8}  {r.note}")
    return lines
