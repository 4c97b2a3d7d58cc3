"""The store invariants checker.

:func:`check_store` reads the catalog and walks the data directory of a *quiescent* store
(no daemon writing to it, recovery already run) and reports every way they disagree. It
never changes anything. `dicomd check` prints its findings; tests assert on them after every
kill and restart.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dicomd import storage
from dicomd.catalog import Catalog, SessionRow
from dicomd.layout import Layout
from dicomd.lifecycle import ACTIONABLE, OPEN_JOB_STATES, Stage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finding:
    """One disagreement between the catalog and the disk, or a state left half-done."""

    kind: str  # missing_file | size_mismatch | hash_mismatch | orphan_file | temp_file | wrong_place |
    #            count_mismatch | busy_session | empty_session | open_job | stray_work | missing_quarantine
    where: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class StoreReport:
    findings: tuple[Finding, ...]
    # SOP Instance UID -> how many instance rows hold it, per stage
    prearchive_uids: Counter[str] = field(default_factory=Counter)
    archive_uids: Counter[str] = field(default_factory=Counter)
    sessions: tuple[SessionRow, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.findings

    def kinds(self) -> set[str]:
        return {f.kind for f in self.findings}

    def copies(self, sop_instance_uid: str) -> int:
        return self.prearchive_uids[sop_instance_uid] + self.archive_uids[sop_instance_uid]

    def describe(self) -> str:
        return "\n".join(str(f) for f in self.findings) or "store consistent"


def check_store(layout: Layout, catalog: Catalog, *, verify_hashes: bool = True) -> StoreReport:
    """Compare the catalog with the files under ``layout`` (read-only)."""
    findings: list[Finding] = []
    referenced: set[str] = set()
    counters = {Stage.PREARCHIVE: Counter[str](), Stage.ARCHIVE: Counter[str]()}
    sessions = catalog.sessions(Stage.PREARCHIVE) + catalog.sessions(Stage.ARCHIVE)
    for session in sessions:
        if session.status not in ACTIONABLE[session.stage]:
            findings.append(Finding("busy_session", session.url, f"left in {session.status}"))
        rows = catalog.instances(session.id)
        if session.stage == Stage.PREARCHIVE and not rows:
            findings.append(Finding("empty_session", session.url, f"{session.status}, no instances"))
        if session.instances != len(rows):
            findings.append(
                Finding("count_mismatch", session.url, f"session says {session.instances}, {len(rows)} rows")
            )
        for inst in rows:
            counters[session.stage][inst.sop_instance_uid] += 1
            referenced.add(inst.path)
            findings += _check_instance_file(layout, session, inst.path, inst.size, inst.sha256, verify_hashes)
    for job in catalog.archive_jobs(OPEN_JOB_STATES):
        findings.append(Finding("open_job", f"archive job {job.id}", f"state {job.state}"))
    findings += _orphans(layout, referenced)
    findings += _leftovers(layout)
    for entry in catalog.quarantine():
        if not (layout.root / entry.path).is_file():
            findings.append(Finding("missing_quarantine", entry.path, f"quarantine entry {entry.id}"))
    return StoreReport(tuple(findings), counters[Stage.PREARCHIVE], counters[Stage.ARCHIVE], tuple(sessions))


def _check_instance_file(
    layout: Layout, session: SessionRow, rel: str, size: int, sha256: str, verify_hashes: bool
) -> list[Finding]:
    if not rel.startswith(session.relative_dir + "/"):
        return [Finding("wrong_place", rel, f"row of {session.url} points outside its folder")]
    path = layout.root / rel
    if not path.is_file():
        return [Finding("missing_file", rel, f"row of {session.url}")]
    actual = path.stat().st_size
    if actual != size:
        return [Finding("size_mismatch", rel, f"catalog {size}, disk {actual}")]
    if verify_hashes and storage.sha256_file(path)[0] != sha256:
        return [Finding("hash_mismatch", rel)]
    return []


def _orphans(layout: Layout, referenced: set[str]) -> list[Finding]:
    findings: list[Finding] = []
    for top in (layout.prearchive, layout.archive):
        if not top.exists():
            continue
        for path in sorted(top.rglob("*")):
            if path.is_dir():
                continue
            rel = layout.relative(path)
            if path.name.endswith(".part"):
                findings.append(Finding("temp_file", rel))
            elif rel not in referenced:
                findings.append(Finding("orphan_file", rel, "on disk, in no catalog row"))
    return findings


def _leftovers(layout: Layout) -> list[Finding]:
    findings: list[Finding] = []
    if layout.tmp.exists():
        findings += [Finding("temp_file", layout.relative(p)) for p in sorted(layout.tmp.iterdir()) if p.is_file()]
    if layout.work.exists():
        findings += [Finding("stray_work", layout.relative(p)) for p in sorted(layout.work.iterdir())]
    return findings


def tree_files(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: relative path -> (size, mtime_ns). To prove data was left untouched."""
    out: dict[str, tuple[int, int]] = {}
    if root.exists():
        for path in root.rglob("*"):
            if path.is_file():
                st = path.stat()
                out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out
