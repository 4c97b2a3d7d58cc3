"""Kill-test harness: `dicomd serve` as a real subprocess, a pynetdicom sender in the test process,
in-process recovery and the store invariants checker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomd.catalog import Catalog
from dicomd.config import Config, load
from dicomd.stores import Stores
from dicomd.layout import Layout
from dicomd.crashpoints import CRASHPOINT_ENV
from dicomd.storecheck import StoreReport, check_store
from tests.conftest import wait_for as shared_wait_for

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def echo(port: int, timeout: float = 5.0) -> bool:
    ae = AE(ae_title="PROBE")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMD")
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.Status) == 0
    finally:
        assoc.release()


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class PortTaken(AssertionError):
    """`serve` could not bind the port chosen for it."""


class ServeProcess:
    """`python -m dicomd serve` on a free port, logging into ``log_path``."""

    def __init__(self, config_path: Path, data_dir: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.data_dir = data_dir
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.http_port = 0
        self.http = False  # also serve HTTP (on a free port) by default

    def start(self, crashpoint: str = "", extra_env: dict[str, str] | None = None,
              http: bool | None = None) -> "ServeProcess":
        """Start on free ports; a port taken between choosing it and binding it (another test, an
        outgoing connection's ephemeral port) is retried on new ports, at most three times."""
        for attempt in range(3):
            try:
                return self._start_once(crashpoint, extra_env, http)
            except PortTaken:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, crashpoint: str, extra_env: dict[str, str] | None,
                    http: bool | None) -> "ServeProcess":
        http = self.http if http is None else http
        self.port = free_port()
        self.http_port = free_port() if http else 0
        env = {k: v for k, v in os.environ.items() if k != CRASHPOINT_ENV}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONFAULTHANDLER"] = "1"  # dump_stacks() shows every thread of a stuck daemon
        if crashpoint:
            env[CRASHPOINT_ENV] = crashpoint
        env.update(extra_env or {})
        marker = f"===== start port={self.port} crashpoint={crashpoint or '-'} ====="
        log = open(self.log_path, "ab")
        log.write(f"\n{marker}\n".encode())
        log.flush()
        cmd = [sys.executable, "-m", "dicomd", "serve", "--config", str(self.config_path),
               "--data-dir", str(self.data_dir), "--dicom-port", str(self.port)]
        if http:
            cmd += ["--http-port", str(self.http_port)]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=REPO, env=env)
        log.close()
        deadline = time.monotonic() + 30
        while not self._started(marker):
            if self.proc.poll() is not None:
                text = self.log_path.read_text(errors="replace")
                if "already in use" in text[text.rfind(marker):]:
                    raise PortTaken(self.log_tail())
                if crashpoint:  # recovery work at start-up reached the crash point: that is the test
                    return self
                raise AssertionError(f"dicomd serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"dicomd serve did not listen within 30 s:\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def _started(self, marker: str) -> bool:
        """`serve` prints "Ctrl-C to stop" once every service is up (signal handlers come next)."""
        text = self.log_path.read_text(errors="replace")
        return "Ctrl-C to stop" in text[text.rfind(marker):] and port_open(self.port)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
        self.wait_dead(10)

    def wait_dead(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def dump_stacks(self) -> str:
        """SIGABRT a stuck daemon: faulthandler writes every thread's stack into the log."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(timeout=10)
        return self.log_tail(200)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class SendResult:
    acknowledged: list[str] = field(default_factory=list)  # answered 0x0000
    refused: dict[str, int] = field(default_factory=dict)  # answered another status
    unanswered: list[str] = field(default_factory=list)  # no answer (association died)
    error: str = ""
    assoc: Any = None

    def abort(self) -> None:
        """The peer is known dead: stop waiting for its answers (pynetdicom would wait a timeout)."""
        if self.assoc is not None and self.assoc.is_alive():
            self.assoc.abort()


def send_tracking(port: int, datasets: Iterable[Dataset], result: SendResult, *,
                  ae_title: str = "SCANNER", timeout: float = 3.0) -> SendResult:
    """Send on one association, recording each instance's fate into ``result`` as it happens."""
    pending = list(datasets)
    try:
        ae = AE(ae_title=ae_title)
        ae.requested_contexts = StoragePresentationContexts[:120]
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        assoc = ae.associate("127.0.0.1", port, ae_title="DICOMD")
        result.assoc = assoc
        if not assoc.is_established:
            result.error = "association not established"
            result.unanswered += [str(ds.SOPInstanceUID) for ds in pending]
            return result
        try:
            while pending:
                ds = pending[0]
                uid = str(ds.SOPInstanceUID)
                status = assoc.send_c_store(ds) if assoc.is_established else None
                pending.pop(0)
                if status is None or "Status" not in status:
                    result.unanswered.append(uid)
                elif int(status.Status) == 0:
                    result.acknowledged.append(uid)
                else:
                    result.refused[uid] = int(status.Status)
        finally:
            if assoc.is_established:
                assoc.release()
    except Exception as exc:  # noqa: BLE001 - a dying peer can surface as anything
        result.error = f"{type(exc).__name__}: {exc}"
    result.unanswered += [str(ds.SOPInstanceUID) for ds in pending]
    return result


def send_in_thread(port: int, datasets: list[Dataset], **kw: object) -> tuple[threading.Thread, SendResult]:
    result = SendResult()
    thread = threading.Thread(target=send_tracking, args=(port, datasets, result), kwargs=kw, daemon=True)
    thread.start()
    return thread, result


def recover_and_check(config_path: Path, data_dir: Path, *, verify_hashes: bool = True) -> tuple[list[str], StoreReport]:
    """What a restart does (open the stores, recover) followed by the invariants check."""
    config = load(config_path, {"data_dir": data_dir})
    stores = Stores.open(config)
    try:
        done = stores.archiver.recover() + stores.prearchive.recover()
        report = check_store(stores.layout, stores.catalog, verify_hashes=verify_hashes)
    finally:
        stores.close()
    return done, report


def check_only(config: Config, *, verify_hashes: bool = True) -> StoreReport:
    catalog = Catalog(config.catalog_url)
    try:
        return check_store(Layout(config.data_dir), catalog, verify_hashes=verify_hashes)
    finally:
        catalog.close()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, message: str = ""):  # type: ignore[no-untyped-def]
    return shared_wait_for(predicate, timeout=timeout, interval=interval, message=message)
