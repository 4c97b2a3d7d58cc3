"""Process plumbing: free ports, waiting for a listener, RSS of a process tree from /proc."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, deadline_s: float = 60.0) -> None:
    """Return once 127.0.0.1:port accepts connections; fail if ``proc`` dies or time runs out."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {deadline_s:.0f} s")


def stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; children of a process group go too."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    try:
        for task in task_dir.iterdir():
            text = (task / "children").read_text()
            out.extend(int(c) for c in text.split())
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(_children(p))
    return pids


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid``'s live tree plus the children it has reaped."""
    total = 0
    for n, p in enumerate(tree(pid)):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
        if n == 0:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime (e.g. storescp's forks)
    return total / os.sysconf("SC_CLK_TCK")


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _pss_kb(pid: int) -> int:
    """Proportional set size: shared pages (the interpreter, libraries) split among the processes
    mapping them, so summing it over a tree counts each page once."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class RssPeak:
    tree_peak_bytes: int  # largest sampled sum of VmRSS over the process tree
    process_hwm_bytes: int  # largest VmHWM (kernel-tracked peak) of any process in the tree
    start_bytes: int  # tree RSS when sampling started
    tree_pss_peak_bytes: int = 0  # largest sampled sum of PSS (smaps_rollup) over the tree
    start_pss_bytes: int = 0
    largest_process_bytes: int = 0  # largest sampled VmRSS of one process


class RssSampler:
    """Samples the RSS of a process tree every ``interval`` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self._pid, self._interval = pid, interval
        self._stop = threading.Event()
        self._peak = self._start = self._tree_rss()
        self._pss_peak = self._pss_start = self._tree_pss()
        self._largest = 0
        self._hwm = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree_rss(self) -> int:
        return sum(_status_kb(p, "VmRSS") for p in tree(self._pid)) * 1024

    def _tree_pss(self) -> int:
        return sum(_pss_kb(p) for p in tree(self._pid)) * 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._interval)

    def _sample(self) -> None:
        pids = tree(self._pid)
        rss = [_status_kb(p, "VmRSS") * 1024 for p in pids]
        self._peak = max(self._peak, sum(rss))
        self._largest = max([self._largest] + rss)
        self._pss_peak = max(self._pss_peak, sum(_pss_kb(p) for p in pids) * 1024)
        self._hwm = max([self._hwm] + [_status_kb(p, "VmHWM") * 1024 for p in pids])

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()

    def result(self) -> RssPeak:
        return RssPeak(self._peak, self._hwm, self._start, self._pss_peak, self._pss_start, self._largest)
