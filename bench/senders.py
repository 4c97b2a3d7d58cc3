"""Senders, each in separate processes so the sender is not the bottleneck.

dcmtk's storescu when installed (TCP_NODELAY=1), else bench.rawscu (a plain-socket Python SCU);
bench.scu (pynetdicom's SCU) on request. One process per association; files are dealt
round-robin to the associations."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.tools import dcmtk_tool

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    elapsed: float  # seconds from the first association request to the last response
    sent: int  # instances attempted
    failed: int  # instances not answered Success (as far as the sender tells)
    errors: str  # sender diagnostics, empty when all went well


def split(files: list[Path], parts: int) -> list[list[Path]]:
    return [files[i::parts] for i in range(parts) if files[i::parts]]


class DcmtkSender:
    name = "dcmtk storescu"

    def __init__(self) -> None:
        tool = dcmtk_tool("storescu")
        if tool is None:
            raise FileNotFoundError("dcmtk's storescu is not installed")
        self.tool = tool

    def send(self, files: list[Path], port: int, aet: str, associations: int) -> SendResult:
        env = {**os.environ, "TCP_NODELAY": "1"}
        groups = split(files, associations)
        t0 = time.monotonic()
        procs = [subprocess.Popen([self.tool, "-R", "-aet", "BENCHSCU", "-aec", aet, "127.0.0.1",
                                   str(port), *map(str, group)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for group in groups]
        outputs = [p.communicate()[0] for p in procs]
        elapsed = time.monotonic() - t0
        bad = [line for out in outputs for line in out.splitlines() if line.startswith(("E:", "F:"))]
        failed = sum(1 for line in bad if "Store" in line and "Failed" in line)
        rcs = [p.returncode for p in procs]
        errors = "; ".join(bad[:3]) + (f" (exit codes {rcs})" if any(rcs) else "")
        if any(rcs) and not failed:
            failed = len(files)
        return SendResult(elapsed, len(files), failed, errors)


class PynetdicomSender:
    name = "pynetdicom SCU (separate processes)"
    module = "bench.scu"

    def send(self, files: list[Path], port: int, aet: str, associations: int) -> SendResult:
        groups = split(files, associations)
        procs = [subprocess.Popen([sys.executable, "-m", self.module, "--port", str(port), "--aet", aet,
                                   *map(str, group)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True) for group in groups]
        for p in procs:  # every sender has imported and read its headers before the clock starts
            if p.stdout is None or p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a {self.module} sender did not start")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        reports = []
        for p in procs:
            out, _ = p.communicate()
            reports.append(json.loads(out.strip().splitlines()[-1]) if out.strip() else None)
        if any(r is None for r in reports):
            return SendResult(float("nan"), len(files), len(files), "a sender died")
        elapsed = max(r["t1"] for r in reports) - min(r["t0"] for r in reports)
        failed = sum(int(r["failed"]) for r in reports)
        refused = sum(int(r["refused"]) for r in reports)
        return SendResult(elapsed, len(files), failed, f"{refused} association(s) refused" if refused else "")


class RawSender(PynetdicomSender):
    """bench.rawscu: single-threaded, plain socket; no pynetdicom thread hand-offs."""

    name = "bench.rawscu (plain-socket Python SCU, separate processes)"
    module = "bench.rawscu"


def make_sender(choice: str) -> DcmtkSender | PynetdicomSender:
    """``choice``: auto (storescu if installed, else rawscu), dcmtk, raw or pynetdicom."""
    if choice in ("auto", "dcmtk"):
        try:
            return DcmtkSender()
        except FileNotFoundError:
            if choice == "dcmtk":
                raise
    return PynetdicomSender() if choice == "pynetdicom" else RawSender()
