"""Archive jobs: the catalog side of moving a prearchive session into the archive.

dicomd.archive does the files; each state change here is one transaction: begin (the session
goes ARCHIVING), plan (the point of no return), fail (rolled back), commit (rows swapped from the
prearchive session to the archive session), finish (cleaned up).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from typing import Any, Sequence

from dicomd.catalog.engine import Engine, marks
from dicomd.catalog.events import record_event, record_history
from dicomd.catalog.instances import insert_instance, refresh_counts
from dicomd.catalog.nodes import holds
from dicomd.catalog.rows import ArchiveJob, PlanItem, SessionRow, dicts, plan_to_json
from dicomd.catalog.sessions import delete_session, fetch_session, update_session
from dicomd.errors import ClaimLost, InvalidState, NotFound
from dicomd.lifecycle import ARCHIVABLE, JobState, Stage, Status


def _set_job(conn: sqlite3.Connection, job_id: int, sets: dict[str, Any]) -> None:
    conn.execute(f"UPDATE archive_jobs SET {', '.join(f'{k}=?' for k in sets)} WHERE id=?", (*sets.values(), job_id))


# (kind, item, node): the claim the caller must still hold for its transaction to go ahead
Fence = tuple[str, str, str]


def _check_fence(conn: sqlite3.Connection, fence: Fence | None) -> None:
    """Refuse the transaction when the caller's claim was taken over (it had expired): the node
    that took it over finishes the job instead."""
    if fence is not None and not holds(conn, *fence):
        raise ClaimLost(f"the claim on {fence[0]} {fence[1]} was taken over by another node")


def _archive_session(conn: sqlite3.Connection, job: ArchiveJob, study_uid: str, source: str,
                     anonymization: str, now: float) -> int:
    """The archive session the job's data goes into: the one with its label, else a new one (ARCHIVED).

    An existing one keeps its other instances, unless the job replaces everything it held
    (overwrite=delete)."""
    target = conn.execute(
        "SELECT id FROM sessions WHERE stage='archive' AND project=? AND label=?", (job.project, job.label)
    ).fetchone()
    if target is not None:
        if job.replaces_archived:
            conn.execute("DELETE FROM instances WHERE session_id=?", (target[0],))
        return int(target[0])
    cur = conn.execute(
        "INSERT INTO sessions(stage, project, subject, label, study_instance_uid, status, source,"
        " created_at, updated_at, archived_at, anonymization) VALUES ('archive',?,?,?,?,?,?,?,?,?,?) RETURNING id",
        (job.project, job.subject, job.label, study_uid, Status.ARCHIVED, source, now, now, now, anonymization),
    )
    return int(cur.fetchone()[0])


def _put_instances(conn: sqlite3.Connection, target_id: int, plan: Sequence[PlanItem], *, deidentified: bool) -> None:
    """The plan's instance rows into the archive session; each replaces the row with its SOP Instance UID.
    De-identified rows keep only the way in as their source (not the sender's AE title or address)."""
    for item in plan:
        if item.dropped:
            continue
        conn.execute(
            "DELETE FROM instances WHERE session_id=? AND sop_instance_uid=?", (target_id, item.sop_instance_uid)
        )
        row = item.archived_instance()
        if deidentified:
            row = dataclasses.replace(row, source=way_in(row.source))
        insert_instance(conn, target_id, row, item.received_at)


def way_in(source: str) -> str:
    """`DICOM:AE@10.0.0.5` -> `DICOM`."""
    return (source or "").split(":", 1)[0]


# Events about the data as archived (mapping values are read from the de-identified data): they
# follow the session into the archive. Every other event of a prearchive session may hold originals.
_ARCHIVED_DATA_EVENTS = ("mapping_warning",)


def _forget_identified(conn: sqlite3.Connection, pre_id: int, target_id: int) -> None:
    """What the catalog said about a prearchive session that is now de-identified in the archive:
    its history (reasons may quote identified labels and paths) and its events (original UIDs).
    The archive session's own history and `archived` event remain; the pseudonym map in keys/ is
    the only crosswalk."""
    conn.execute("DELETE FROM history WHERE session_id = ?", (pre_id,))
    conn.execute(f"UPDATE events SET session_id = ? WHERE session_id = ? AND kind IN "
                 f"({','.join('?' * len(_ARCHIVED_DATA_EVENTS))})", (target_id, pre_id, *_ARCHIVED_DATA_EVENTS))
    conn.execute("DELETE FROM events WHERE session_id = ?", (pre_id,))


def _carry_custom_fields(conn: sqlite3.Connection, pre_id: int, pre: SessionRow | None, target_id: int) -> str:
    """Mapped custom fields follow the data (extracted at build, from the data as archived): the
    scans' onto the archive scans; the session's merged over the archive session's (returned)."""
    pre_scans = conn.execute(
        "SELECT scan_id, custom FROM scans WHERE session_id=? AND custom != '{}'", (pre_id,)
    ).fetchall()
    conn.executemany(
        "UPDATE scans SET custom=? WHERE session_id=? AND scan_id=?",
        [(custom, target_id, scan_id) for scan_id, custom in pre_scans],
    )
    old_custom = conn.execute("SELECT custom FROM sessions WHERE id=?", (target_id,)).fetchone()[0]
    return json.dumps({**json.loads(old_custom or "{}"), **json.loads(pre.custom if pre else "{}")})


class ArchiveJobs(Engine):
    def archive_jobs(self, states: Sequence[str]) -> list[ArchiveJob]:
        cur = self.reader().execute(
            f"SELECT * FROM archive_jobs WHERE state IN ({marks(states)}) ORDER BY id", tuple(states)
        )
        return [ArchiveJob.from_row(r) for r in dicts(cur)]

    def job(self, job_id: int) -> ArchiveJob:
        rows = dicts(self.reader().execute("SELECT * FROM archive_jobs WHERE id = ?", (job_id,)))
        if not rows:
            raise NotFound(f"no archive job {job_id}")
        return ArchiveJob.from_row(rows[0])

    def begin_archive(self, session_id: int, *, overwrite: str, actor: str, work_dir: str) -> int:
        """Take a prearchive session for archiving (one caller wins); returns the job id."""

        def txn(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT status, stage, project FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None or row[1] != Stage.PREARCHIVE:
                raise NotFound(f"no prearchive session {session_id}")
            if row[0] not in ARCHIVABLE:
                raise InvalidState(f"session is {row[0]}; it can be archived only when {', '.join(ARCHIVABLE)}")
            now = time.time()
            conn.execute(
                "UPDATE sessions SET status=?, reason='', updated_at=? WHERE id=?", (Status.ARCHIVING, now, session_id)
            )
            record_history(conn, session_id, Status.ARCHIVING, f"overwrite={overwrite}", actor)
            cur = conn.execute(
                "INSERT INTO archive_jobs(session_id, state, overwrite, project, subject, label, work_dir, started_at)"
                " VALUES (?, ?, ?, ?, '', '', ?, ?) RETURNING id",
                (session_id, JobState.STAGING, overwrite, row[2], work_dir, now),
            )
            return int(cur.fetchone()[0])

        return self.write(txn)

    def plan_archive(self, job_id: int, subject: str, label: str, plan: Sequence[PlanItem], *,
                     study_uid: str = "", fingerprint: str = "", fence: Fence | None = None) -> None:
        """The point of no return: from here a restart rolls the job forward."""
        sets = {"state": JobState.MOVING, "subject": subject, "label": label, "plan": plan_to_json(plan),
                "study_uid": study_uid, "fingerprint": fingerprint}

        def txn(conn: sqlite3.Connection) -> None:
            _check_fence(conn, fence)
            state = conn.execute("SELECT state FROM archive_jobs WHERE id=?", (job_id,)).fetchone()
            if state is None or state[0] != JobState.STAGING:
                raise ClaimLost(f"archive job {job_id} is no longer staging")
            _set_job(conn, job_id, sets)

        self.write(txn)

    def fail_archive(self, job_id: int, session_id: int, status: str, reason: str, actor: str = "") -> None:
        """The job is rolled back: the session leaves ARCHIVING for ``status``."""

        def txn(conn: sqlite3.Connection) -> None:
            state = conn.execute("SELECT state FROM archive_jobs WHERE id=?", (job_id,)).fetchone()
            if state is not None and state[0] in (JobState.FAILED, JobState.CLEAN):
                return  # another node rolled it back or finished it already: the session is not this job's now
            _set_job(conn, job_id, {"state": JobState.FAILED, "error": reason, "finished_at": time.time()})
            changed = conn.execute(
                "UPDATE sessions SET status=?, reason=?, updated_at=? WHERE id=? AND status=?",
                (status, reason, time.time(), session_id, Status.ARCHIVING),
            ).rowcount
            if changed:  # a session already archived or gone gets no history row (its id may be reused)
                record_history(conn, session_id, status, reason, actor)

        self.write(txn)

    def commit_archive(
        self,
        job: ArchiveJob,
        *,
        study_uid: str,
        session_fields: dict[str, Any],
        actor: str = "",
        fence: Fence | None = None,
    ) -> int:
        """Swap catalog rows from the prearchive session to the archive session; returns its id.
        Idempotent: a job already done answers the archive session it made."""

        def txn(conn: sqlite3.Connection) -> int:
            state = conn.execute("SELECT state, target_session_id FROM archive_jobs WHERE id=?", (job.id,)).fetchone()
            if state and state[0] in (JobState.DONE, JobState.CLEAN):
                return int(state[1])
            _check_fence(conn, fence)
            if state is None or state[0] != JobState.MOVING:
                raise ClaimLost(f"archive job {job.id} is no longer moving")
            now = time.time()
            pre = fetch_session(conn, job.session_id)
            deidentified = bool(session_fields.get("anonymization"))
            source = pre.source if pre else ""
            target_id = _archive_session(conn, job, study_uid, way_in(source) if deidentified else source,
                                         session_fields.get("anonymization", ""), now)
            _put_instances(conn, target_id, job.plan, deidentified=deidentified)
            refresh_counts(conn, target_id)
            custom = _carry_custom_fields(conn, job.session_id, pre, target_id)
            update_session(conn, target_id, {**session_fields, "custom": custom, "updated_at": now,
                                             "archived_at": now, "subject": job.subject})
            record_history(conn, target_id, Status.ARCHIVED, f"from {pre.ref if pre else '?'}", actor)
            if deidentified:
                _forget_identified(conn, job.session_id, target_id)
            record_event(
                conn, "archived", {"job": job.id, "instances": sum(not i.dropped for i in job.plan), "overwrite": job.overwrite}, target_id
            )
            delete_session(conn, job.session_id)
            _set_job(conn, job.id, {"state": JobState.DONE, "target_session_id": target_id, "finished_at": now})
            return target_id

        return self.write(txn)

    def finish_job(self, job_id: int) -> None:
        """The job's files are all in place: its plan (paths of the identified prearchive copies,
        work files) is no longer needed and is purged."""
        self.write(lambda conn: _set_job(conn, job_id, {"state": JobState.CLEAN, "plan": "[]"}))
