"""The receivers under test, each started fresh (own output folder) for every measurement.

* ``bare-pynetdicom``: bench.bare_scp in its own process (the library's ceiling)
* ``bare-pynetdicom-chunked``: the same, streaming each dataset to a temporary file
* ``bare-pynetdicom-nproc``: one bare process per CPU sharing the port (SO_REUSEPORT), the
  ceiling of dicomd's receiver_processes design
* ``dcmtk-storescp``: dcmtk's storescp with --fork (one process per association)
* ``orthanc``: Debian's Orthanc with its own config (storage and SQLite index in the work folder,
  SyncStorageArea on, no plugins, HTTP on loopback only, C-STORE accepted only from the bench
  sender's AE title at 127.0.0.1: Orthanc 1.10 has no option to bind its DICOM port to loopback)
* ``dicomd``: ``dicomd serve`` with its full path (stage + catalog), ``receiver_processes`` from
  --dicomd-processes (default one per CPU); ``dicomd-1proc``: the same with one receiver process;
  ``dicomd-pynetdicom``: the same on the pynetdicom engine (``receivers[].engine``);
  ``dicomd-postgresql``: the same with its catalog on PostgreSQL (``catalog.url``: a fresh database
  of the server bench.run starts for the section, named by $DICOMD_BENCH_PG)

A receiver's ``work`` folder holds its output, its log and (dicomd) its config.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.procs import free_port, stop, tree, wait_for_port
from bench.tools import dcmtk_tool

logger = logging.getLogger(__name__)

DICOMD_CONFIG = """\
# Written by bench/receivers.py for one benchmark measurement.
session_idle_seconds = {idle}
log_level = "WARNING"
receiver_processes = {processes}

[[receivers]]
ae_title = "DICOMD"
project = "bench"
max_associations = 32
max_pdu_size = {pdu}
engine = "{engine}"

[http]
host = "127.0.0.1"

[projects.bench]
name = "Benchmark"
auto_archive = 0
"""


@dataclass(frozen=True)
class Running:
    """A started receiver: where to send, and how to count what it stored."""

    name: str
    proc: subprocess.Popen
    port: int
    ae_title: str
    out_dir: Path
    log: Path
    http_port: int = 0

    def received(self) -> int:
        """How many instance files the receiver has written so far."""
        if self.name.startswith("dicomd"):
            return sum(1 for p in (self.out_dir / "prearchive").rglob("*")
                       if p.is_file() and p.parent.name == "DICOM")
        if self.name == "orthanc":  # storage/xx/yy/<uuid>
            return sum(1 for p in self.out_dir.rglob("*") if p.is_file())
        return sum(1 for p in self.out_dir.iterdir() if p.is_file())

    def clear(self) -> None:
        """Delete what a baseline wrote (keeps the disk small); dicomd's stores are left alone."""
        if not self.name.startswith(("dicomd", "orthanc")):  # Orthanc's index must match its storage
            for p in self.out_dir.iterdir():
                p.unlink(missing_ok=True)

    def stop(self) -> None:
        stop(self.proc)


def _popen(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with log.open("ab") as fp:
        return subprocess.Popen(cmd, stdout=fp, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)


def start_bare(work: Path, pdu: int, chunked: bool = False, processes: int = 1) -> Running:
    out, port, log = work / "out", free_port(), work / "bare.log"
    out.mkdir(parents=True, exist_ok=True)
    tmp = work / "tmp"  # pynetdicom's temporary files, on the same file system as out/
    tmp.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "bench.bare_scp", "--port", str(port), "--out", str(out), "--pdu", str(pdu)]
    cmd += (["--chunked"] if chunked else []) + ["--processes", str(processes)]
    proc = _popen(cmd, log, {**os.environ, "TMPDIR": str(tmp)})
    wait_for_port(port, proc)
    if processes > 1:  # every process must be listening before the first association
        end = time.monotonic() + 30
        while len(tree(proc.pid)) < processes and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(1.0)  # the extra processes import pynetdicom, then bind
    name = "bare-pynetdicom-chunked" if chunked else "bare-pynetdicom"
    return Running(name + ("-nproc" if processes > 1 else ""), proc, port, "BARE", out, log)


def start_bare_chunked(work: Path, pdu: int) -> Running:
    return start_bare(work, pdu, chunked=True)


def start_bare_shared(work: Path, pdu: int) -> Running:
    return start_bare(work, pdu, processes=os.cpu_count() or 1)


def start_dcmtk(work: Path, pdu: int) -> Running:
    tool = dcmtk_tool("storescp")
    if tool is None:
        raise FileNotFoundError("dcmtk's storescp is not installed")
    out, port, log = work / "out", free_port(), work / "storescp.log"
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TCP_NODELAY": "1"}
    proc = _popen([tool, "--fork", "-aet", "STORESCP", "-od", str(out), "-pdu", str(min(pdu, 131072)),
                   str(port)], log, env)
    wait_for_port(port, proc)
    return Running("dcmtk-storescp", proc, port, "STORESCP", out, log)


def dicomd_config(pdu: int, idle: float, processes: int | None = None, engine: str = "asyncio") -> str:
    """The bench's dicomd config; ``processes`` receiver processes share the port (default: the
    DICOMD_PROCESSES environment variable, else one per CPU)."""
    if processes is None:
        processes = int(os.environ.get("DICOMD_PROCESSES") or os.cpu_count() or 1)
    return DICOMD_CONFIG.format(idle=idle, pdu=pdu, processes=processes, engine=engine)


def orthanc_config(work: Path, port: int, http_port: int, pdu: int) -> dict[str, object]:
    return {
        "Name": "dicomd-bench", "StorageDirectory": str(work / "storage"), "IndexDirectory": str(work / "index"),
        "StorageCompression": False, "Plugins": [], "LuaScripts": [],
        "HttpServerEnabled": True, "HttpPort": http_port, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True, "DicomAet": "ORTHANC", "DicomPort": port, "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": False, "DicomCheckModalityHost": True,
        "DicomModalities": {"bench": ["BENCHSCU", "127.0.0.1", 104]},
        "SyncStorageArea": True, "MaximumPduLength": min(pdu, 131072), "StableAge": 3600,
        "SaveJobs": False, "OverwriteInstances": False,
    }


def start_orthanc(work: Path, pdu: int) -> Running:
    tool = shutil.which("Orthanc")
    if tool is None:
        raise FileNotFoundError("Orthanc is not installed (apt-get install orthanc)")
    work.mkdir(parents=True, exist_ok=True)
    port, http_port, log = free_port(), free_port(), work / "orthanc.log"
    config = work / "orthanc.json"
    config.write_text(json.dumps(orthanc_config(work, port, http_port, pdu), indent=2))
    (work / "storage").mkdir(exist_ok=True)
    proc = _popen([tool, str(config)], log, {**os.environ, "TCP_NODELAY": "1"})  # as for storescp (dcmtk reads it)
    wait_for_port(port, proc, deadline_s=60)
    return Running("orthanc", proc, port, "ORTHANC", work / "storage", log, http_port)


def dicomd_cli(work: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run ``dicomd ARGS --config work/dicomd.toml --data-dir work/data`` (a CLI command)."""
    cmd = [sys.executable, "-m", "dicomd", *args, "--config", str(work / "dicomd.toml"),
           "--data-dir", str(work / "data")]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=3600)


def start_dicomd(work: Path, pdu: int, idle: float = 3600.0, config_text: str | None = None,
                 setup: Callable[[Path], None] | None = None) -> Running:
    """``dicomd serve`` on ``config_text`` (default: one receiver, project ``bench``); ``setup``
    runs (e.g. a CLI command) after the config is written and before the daemon starts.
    By default sessions are not built during the benchmark (idle 1 h), so no build competes with
    a measurement of another receiver."""
    work.mkdir(parents=True, exist_ok=True)
    data, log, config = work / "data", work / "dicomd.log", work / "dicomd.toml"
    config.write_text(config_text or dicomd_config(pdu, idle))
    if setup is not None:
        setup(work)
    port, http_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "dicomd", "serve", "--config", str(config), "--data-dir", str(data),
           "--dicom-port", str(port), "--http-port", str(http_port), "--session-idle", str(idle)]
    proc = _popen(cmd, log)
    try:
        wait_for_port(port, proc, deadline_s=60)
        wait_for_port(http_port, proc, deadline_s=60)
    except (RuntimeError, TimeoutError) as exc:
        stop(proc)
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"dicomd serve did not start: {exc}; log: {' | '.join(tail)}") from None
    return Running("dicomd", proc, port, "DICOMD", data, log, http_port)


def start_dicomd_one_process(work: Path, pdu: int) -> Running:
    running = start_dicomd(work, pdu, config_text=dicomd_config(pdu, 3600.0, processes=1))
    return dataclasses.replace(running, name="dicomd-1proc")


def start_dicomd_pynetdicom(work: Path, pdu: int) -> Running:
    running = start_dicomd(work, pdu, config_text=dicomd_config(pdu, 3600.0, engine="pynetdicom"))
    return dataclasses.replace(running, name="dicomd-pynetdicom")


PG_ENV = "DICOMD_BENCH_PG"  # the admin URL of the section's PostgreSQL server (dicomd.testing.pgserver)


def new_pg_database(admin_url: str) -> str:
    """A fresh database with dicomd's catalog migrations, on the server of ``admin_url``."""
    import psycopg

    name = f"bench_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE dicomd_template")  # type: ignore[arg-type]
    return admin_url.rsplit("/", 1)[0] + "/" + name


def start_dicomd_postgresql(work: Path, pdu: int) -> Running:
    admin = os.environ.get(PG_ENV)
    if not admin:
        raise RuntimeError(f"no PostgreSQL server for the bench (${PG_ENV} unset)")
    text = dicomd_config(pdu, 3600.0) + f'\n[catalog]\nurl = "{new_pg_database(admin)}"\n'
    running = start_dicomd(work, pdu, config_text=text)
    return dataclasses.replace(running, name="dicomd-postgresql")


STARTERS = {"bare-pynetdicom": start_bare, "bare-pynetdicom-chunked": start_bare_chunked,
            "bare-pynetdicom-nproc": start_bare_shared,
            "dcmtk-storescp": start_dcmtk, "orthanc": start_orthanc, "dicomd": start_dicomd,
            "dicomd-1proc": start_dicomd_one_process, "dicomd-pynetdicom": start_dicomd_pynetdicom,
            "dicomd-postgresql": start_dicomd_postgresql}
