"""Sections 4 and 6: prearchive -> archive, without and with the Basic Profile, beside dicognito
alone and a plain pydicom read + write of the same files.

Studies are received by one ``dicomd serve`` (two receivers: project ``plain`` copies, project
``anon`` anonymizes at archive time) and built; the daemon is then stopped and every run archives
its own sessions in a separate process (bench.archive_worker: what ``dicomd prearchive archive``
does). dicomd and the baselines alike time only the work, not interpreter start-up and imports."""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bench.procs import free_port
from bench.receivers import dicomd_cli, start_dicomd
from bench.senders import DcmtkSender, PynetdicomSender
from dicomd.testing.generator import generate_study, phi_values, make_patient, write_study

logger = logging.getLogger(__name__)
PROJECTS = ("plain", "anon")

CONFIG = """\
# Written by bench/archiving.py.
session_idle_seconds = 1
log_level = "WARNING"

[[receivers]]
ae_title = "DICOMD"
project = "plain"
max_associations = 32
max_pdu_size = {pdu}

[[receivers]]
ae_title = "DICOMD"
port = {anon_port}
bind = "127.0.0.1"
project = "anon"
max_associations = 32
max_pdu_size = {pdu}

[http]
host = "127.0.0.1"

[projects.plain]
auto_archive = 0

[projects.anon]
auto_archive = 0

[projects.anon.anonymize]
enabled = true
profile = "basic"
"""


@dataclass(frozen=True)
class ArchiveRow:
    name: str
    runs: int
    sessions_per_s: float | None
    instances_per_s: float | None
    baseline: str  # what the ratio is against
    ratio: float | None  # median of per-run ratios
    note: str


@dataclass(frozen=True)
class _Study:
    run: int
    project: str
    seed: int
    files: list[Path]


def _studies(cache: Path, runs: int, sessions: int, instances: int) -> list[_Study]:
    out = []
    for run in range(runs):
        for p, project in enumerate(PROJECTS):
            for s in range(sessions):
                seed = 20000 + run * 100 + p * 50 + s
                folder = cache / f"archive-{instances}-{seed}"
                if not (folder / ".complete").exists():
                    write_study(generate_study(seed, series=2, instances_per_series=instances // 2,
                                               modality="MR", rows=256, cols=256), folder)
                    (folder / ".complete").touch()
                out.append(_Study(run, project, seed, sorted(folder.glob("*.dcm"))))
    return out


def _timed(cmd: list[str]) -> tuple[dict | None, str]:
    """Run a worker that prints one JSON line; (its report, error text)."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return None, (done.stderr or done.stdout).strip()[-200:]
    report = json.loads(lines[-1])
    return report, "; ".join(report.get("errors", []))[:200]


def _wait_ready(work: Path, expected: int, deadline_s: float) -> list[dict]:
    end = time.monotonic() + deadline_s
    rows: list[dict] = []
    while time.monotonic() < end:
        done = dicomd_cli(work, "prearchive", "list", "--json")
        rows = json.loads(done.stdout or "[]") if done.returncode == 0 else []
        if sum(1 for r in rows if r.get("status") == "READY") >= expected:
            return rows
        time.sleep(0.5)
    raise TimeoutError(f"{sum(1 for r in rows if r.get('status') == 'READY')} of {expected} sessions READY "
                       f"after {deadline_s:.0f} s")


def _phi_left(archive: Path, studies: list[_Study]) -> tuple[int, int]:
    planted = {v.encode() for st in studies for v in phi_values(make_patient(st.seed))}
    files = [p for p in archive.rglob("*") if p.is_file() and p.parent.name == "DICOM"]
    dirty = sum(1 for p in files if any(v in p.read_bytes() for v in planted))
    return dirty, len(files)


def run_archiving(cache: Path, work: Path, runs: int, sessions: int, instances: int, pdu: int,
                  sender: DcmtkSender | PynetdicomSender,
                  progress: Callable[[str], None]) -> list[ArchiveRow]:
    studies = _studies(cache, runs, sessions, instances)
    anon_port = free_port()
    running = start_dicomd(work, pdu, idle=1.0, config_text=CONFIG.format(pdu=pdu, anon_port=anon_port))
    try:
        for project, port in (("plain", running.port), ("anon", anon_port)):
            files = [f for st in studies if st.project == project for f in st.files]
            result = sender.send(files, port, "DICOMD", 4)
            if result.failed:
                raise RuntimeError(f"sending to project {project} failed: {result.errors}")
        progress(f"archive: {len(studies)} sessions received; waiting for them to be built")
        listing = _wait_ready(work, len(studies), deadline_s=600)
    finally:
        running.stop()
    urls = {r["tag"]: r["url"] for r in listing}
    uid_of = {st.seed: generate_study(st.seed, series=1, instances_per_series=1)[0].StudyInstanceUID
              for st in studies}
    return _measure(work, studies, urls, uid_of, runs, progress)


def _measure(work: Path, studies: list[_Study], urls: dict[str, str], uid_of: dict[int, str], runs: int,
             progress: Callable[[str], None]) -> list[ArchiveRow]:
    rates: dict[str, dict[int, tuple[float, float]]] = {}  # name -> run -> (sessions/s, instances/s)
    errors: list[str] = []
    for run in range(runs):
        for project in PROJECTS:
            mine = [st for st in studies if st.run == run and st.project == project]
            report, error = _timed([sys.executable, "-m", "bench.archive_worker", str(work / "dicomd.toml"),
                                    str(work / "data"), *[urls[uid_of[st.seed]] for st in mine]])
            if report is None or error:
                errors.append(f"{project}: {error}")
            if report is not None and report["seconds"] > 0:
                rates.setdefault(project, {})[run] = (report["sessions"] / report["seconds"],
                                                      report["instances"] / report["seconds"])
        anon_files = [f for st in studies if st.run == run and st.project == "anon" for f in st.files]
        for mode in ("pydicom", "dicognito"):
            report, error = _timed([sys.executable, "-m", "bench.anon_baseline", mode,
                                    str(work / f"{mode}-{run}"), *map(str, anon_files)])
            if report is None:
                errors.append(f"{mode}: {error}")
                continue
            rates.setdefault(mode, {})[run] = (0.0, report["instances"] / report["seconds"])
        progress(f"archive run {run + 1}/{runs}: "
                 + ", ".join(f"{k} {v[run][1]:.0f} inst/s" for k, v in rates.items() if run in v))
    dirty, total = _phi_left(work / "data" / "archive" / "anon", [st for st in studies if st.project == "anon"])
    note = f"planted PHI found in {dirty} of {total} archived files" if total else "no archived files found"
    return _rows(rates, errors, note)


Rates = dict[str, dict[int, tuple[float, float]]]


def _ratio(rates: Rates, a: str, b: str) -> float | None:
    """Median over runs of a's instances/s divided by b's, paired by run."""
    mine, theirs = rates.get(a, {}), rates.get(b, {})
    pairs = [mine[run][1] / theirs[run][1] for run in mine if run in theirs and theirs[run][1]]
    return statistics.median(pairs) if pairs else None


def _rows(rates: Rates, errors: list[str], note: str) -> list[ArchiveRow]:
    def med(name: str, i: int) -> float | None:
        values = [r[i] for r in rates.get(name, {}).values()]
        return statistics.median(values) if values else None

    err = "; ".join(errors[:2])
    return [
        ArchiveRow("dicomd archive, no anonymization", len(rates.get("plain", [])), med("plain", 0),
                   med("plain", 1), "pydicom read+write", _ratio(rates, "plain", "pydicom"), err),
        ArchiveRow("dicomd archive + Basic Profile", len(rates.get("anon", [])), med("anon", 0),
                   med("anon", 1), "dicognito alone", _ratio(rates, "anon", "dicognito"), note),
        ArchiveRow("dicognito alone (read+anon+write)", len(rates.get("dicognito", [])), None,
                   med("dicognito", 1), "pydicom read+write", _ratio(rates, "dicognito", "pydicom"), ""),
        ArchiveRow("pydicom read+write", len(rates.get("pydicom", [])), None, med("pydicom", 1), "", None, ""),
    ]
