"""Extra receiver processes: each runs the same receivers on the same ports (SO_REUSEPORT) over
the same catalog, so C-STOREs use more than one core. They only receive and stage; building,
archiving, recovery and the HTTP API stay in the main daemon process.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Sequence

from dicomd.config import Config
from dicomd.engine.receivers import ReceiverGroup
from dicomd.scp import configure_pynetdicom
from dicomd.stores import Role, Stores

logger = logging.getLogger(__name__)
READY_LINE = "dicomd-receiver-ready"


class ReceiverProcesses:
    """Starts and stops the extra receiver processes of a daemon."""

    def __init__(self, config: Config, ports: Sequence[int]) -> None:
        self.config = config
        self.ports = list(ports)
        self._procs: list[subprocess.Popen[str]] = []

    def start(self, count: int) -> None:
        args = [sys.executable, "-m", "dicomd.receivermain", "--data-dir", str(self.config.data_dir),
                "--ports", ",".join(str(p) for p in self.ports)]
        if self.config.source != "<defaults>":
            args += ["--config", self.config.source]
        for _ in range(count):
            proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
            self._procs.append(proc)
        for proc in self._procs:
            line = proc.stdout.readline() if proc.stdout else ""
            if READY_LINE not in line:
                self.stop()
                raise RuntimeError(f"a receiver process did not start (exit code {proc.poll()})")
        logger.info("%d extra receiver process(es) sharing ports %s", count, self.ports)

    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs.clear()


def run_receiver_process(config: Config, ports: Sequence[int]) -> None:
    """The body of one extra receiver process (`dicomd receiver-process`)."""
    _die_with_parent()
    stores = Stores.open(config, Role.RECEIVER)
    configure_pynetdicom(stores.layout.tmp)
    receivers = ReceiverGroup(stores.ingest)
    for index, (receiver_config, port) in enumerate(zip(config.receivers, ports)):
        receivers.start(index, receiver_config, port=port, shared=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    parent = os.getppid()
    print(READY_LINE, flush=True)
    while not stop.wait(0.5):
        if os.getppid() != parent:  # the daemon died (even by SIGKILL): do not outlive it
            break
    receivers.stop()
    stores.close()


def _die_with_parent() -> None:
    """Linux: be killed as soon as the daemon dies, even by SIGKILL (else: the getppid poll below)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

