"""``--profile``: where dicomd spends its time while it receives, sampled with py-spy.

py-spy (``pip install py-spy``) records the daemon and its receiver processes while the MR set is
sent; the report lists the frames with the most samples, by own time and inclusive time."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.receivers import start_dicomd
from bench.senders import DcmtkSender, PynetdicomSender

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProfileRow:
    kind: str  # "stage", "self" or "inclusive"
    share: float  # of all samples
    frame: str


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if os.access(found, os.X_OK) else None


# Receive stages, by the innermost frame of a sample that matches (first match wins, leaf first).
STAGES = [
    ("header scan", ("headscan.py",)),
    ("DIMSE codec", ("engine/dimse.py",)),
    ("hashing", ("hashlib", "_hashlib", "sha256")),
    ("spool write", ("engine/spool.py",)),
    ("durability (syncfs/fdatasync)", ("durable.py", "fdatasync", "fsync", "syncfs")),
    ("catalog", ("catalog.py", "catalog/", "sqlite")),
    ("site script / anonymization", ("anonymize/",)),
    ("routing / header read", ("routing.py", "header.py", "pydicom/")),
    ("ingest (staging)", ("ingest.py", "storage.py", "layout.py")),
    ("pynetdicom (threads, DUL, PDUs)", ("pynetdicom/",)),
    ("association / framing", ("engine/association.py", "engine/pdu.py", "engine/server.py", "engine/balance.py")),
    ("event loop (uvloop/asyncio)", ("uvloop", "asyncio/", "selectors")),
]


def _stage(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in STAGES:
            if any(n in frame for n in needles):
                return name
    return "other (idle threads, interpreter)"


def _aggregate(raw: Path, top: int) -> list[ProfileRow]:
    own, incl, stages, total = Counter(), Counter(), Counter(), 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "Thread "))]
        total += n
        stages[_stage(frames)] += n
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):
            if "threading.py" not in frame:
                incl[frame] += n
    if not total:
        return []
    return ([ProfileRow("stage", n / total, f) for f, n in stages.most_common()]
            + [ProfileRow("self", n / total, f) for f, n in own.most_common(top)]
            + [ProfileRow("inclusive", n / total, f) for f, n in incl.most_common(top)])


def profile_ingest(files: list[Path], associations: int, sender: DcmtkSender | PynetdicomSender,
                   work: Path, pdu: int, top: int = 15) -> tuple[list[ProfileRow], str]:
    tool = py_spy()
    if tool is None:
        return [], "py-spy is not installed (pip install py-spy)"
    running = start_dicomd(work, pdu)
    raw = work / "py-spy.txt"
    try:
        spy = subprocess.Popen([tool, "record", "--pid", str(running.proc.pid), "--subprocesses",
                                "--rate", "200", "--format", "raw", "--output", str(raw), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches
        result = sender.send(files, running.port, running.ae_title, associations)
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
        spy.wait(timeout=60)
    finally:
        running.stop()
    if not raw.exists():
        return [], "py-spy wrote nothing (ptrace not permitted?)"
    note = f"{len(files)} MR instances, {associations} association(s): {len(files) / result.elapsed:.0f} inst/s"
    return _aggregate(raw, top), note
