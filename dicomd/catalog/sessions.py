"""Prearchive and archive sessions: finding them, opening one for new data, status changes.

The rules of which status may follow which live in dicomd.lifecycle; this module only applies
them. Stages stay literals inside SQL (the schema's partial indexes are written against
them); statuses are bound parameters.
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, Sequence

from dicomd.catalog.engine import Engine, marks
from dicomd.catalog.events import record_event, record_history
from dicomd.catalog.instances import refresh_counts
from dicomd.catalog.rows import SessionRow, every, one
from dicomd.errors import NotFound
from dicomd.lifecycle import HANDING_ON, RECEIVABLE, Stage, Status, require


def fetch_session(conn: sqlite3.Connection, session_id: int) -> SessionRow | None:
    return one(SessionRow, conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)))


def update_session(conn: sqlite3.Connection, session_id: int, sets: dict[str, Any]) -> None:
    columns = ", ".join(f"{k} = ?" for k in sets)
    conn.execute(f"UPDATE sessions SET {columns} WHERE id = ?", (*sets.values(), session_id))


def delete_session(conn: sqlite3.Connection, session_id: int) -> None:
    """Remove a session's row with its instance, scan and history rows (session ids may be reused by
    SQLite, so a history left behind would become the next session's). Its events stay."""
    conn.execute("DELETE FROM history WHERE session_id = ?", (session_id,))
    conn.execute("DELETE FROM instances WHERE session_id = ?", (session_id,))
    conn.execute("DELETE FROM scans WHERE session_id = ?", (session_id,))
    conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))


def unique_timestamp(conn: sqlite3.Connection, project: str, label: str, now: float) -> str:
    """A prearchive timestamp folder name for ``now`` that no session of this label uses yet."""
    ms = int(now * 1000)
    while True:
        stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(ms / 1000)) + f"{ms % 1000:03d}"
        clash = conn.execute(
            "SELECT 1 FROM sessions WHERE stage='prearchive' AND project=? AND timestamp=? AND label=?",
            (project, stamp, label),
        ).fetchone()
        if not clash:
            return stamp
        ms += 1


def _receiving_session(conn: sqlite3.Connection, project: str, study_uid: str, label: str) -> SessionRow | None:
    """The newest prearchive session of this key that still takes new data."""
    return one(SessionRow, conn.execute(
        "SELECT * FROM sessions WHERE stage='prearchive' AND project=? AND study_instance_uid=? AND label=?"
        f" AND status IN ({marks(RECEIVABLE)}) ORDER BY id DESC LIMIT 1",
        (project, study_uid, label, *RECEIVABLE),
    ))


def late_for(conn: sqlite3.Connection, project: str, study_uid: str, label: str) -> int | None:
    """The session new data for this key comes late for: the study's archive session, else a
    prearchive session of the key that is handing its data on (being archived or moved)."""
    archived = conn.execute(
        "SELECT id FROM sessions WHERE stage IN ('archive') AND project=? AND study_instance_uid=? LIMIT 1",
        (project, study_uid),
    ).fetchone()
    if archived:
        return int(archived[0])
    busy = conn.execute(
        "SELECT id FROM sessions WHERE stage='prearchive' AND project=? AND study_instance_uid=? AND label=?"
        f" AND status IN ({marks(HANDING_ON)}) LIMIT 1",
        (project, study_uid, label, *HANDING_ON),
    ).fetchone()
    return int(busy[0]) if busy else None


class Sessions(Engine):
    # ------------------------------------------------------------ reads

    def session(self, session_id: int) -> SessionRow:
        row = fetch_session(self.reader(), session_id)
        if row is None:
            raise NotFound(f"no session with id {session_id}")
        return row

    def find_session(self, stage: str, project: str, timestamp: str, label: str) -> SessionRow | None:
        """A session by its path: (project, timestamp, label) in the prearchive, (project, label) in the archive."""
        if stage == Stage.PREARCHIVE:
            sql = "SELECT * FROM sessions WHERE stage=? AND project=? AND timestamp=? AND label=?"
            args: tuple[Any, ...] = (stage, project, timestamp, label)
        else:
            sql = "SELECT * FROM sessions WHERE stage=? AND project=? AND label=?"
            args = (stage, project, label)
        return one(SessionRow, self.reader().execute(sql, args))

    def sessions(
        self,
        stage: str,
        *,
        projects: Sequence[str] | None = None,
        status: str | None = None,
        where: dict[str, str] | None = None,
        subject: str | None = None,
        limit: int | None = None,
    ) -> list[SessionRow]:
        """A stage's sessions, most recently active first; ``where`` matches mapped custom fields."""
        sql = "SELECT * FROM sessions WHERE stage = ?"
        args: list[Any] = [stage]
        if projects:
            sql += f" AND project IN ({marks(projects)})"
            args += list(projects)
        if status:
            sql += " AND status = ?"
            args.append(status.upper())
        if subject:
            sql += " AND subject = ?"
            args.append(subject)
        for field, value in (where or {}).items():
            sql += " AND json_extract(custom, ?) = ?"
            args += [f'$."{field}"', value]
        sql += " ORDER BY COALESCE(last_received_at, created_at) DESC, id DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        return every(SessionRow, self.reader().execute(sql, args))

    def sessions_by_key(self, stage: str, project: str, study_uid: str, label: str) -> list[SessionRow]:
        cur = self.reader().execute(
            "SELECT * FROM sessions WHERE stage=? AND project=? AND study_instance_uid=? AND label=? ORDER BY id DESC",
            (stage, project, study_uid, label),
        )
        return every(SessionRow, cur)

    def archived_study(self, project: str, study_uid: str) -> SessionRow | None:
        cur = self.reader().execute(
            "SELECT * FROM sessions WHERE stage='archive' AND project=? AND study_instance_uid=? ORDER BY id LIMIT 1",
            (project, study_uid),
        )
        return one(SessionRow, cur)

    def idle_sessions(self, older_than: float) -> list[SessionRow]:
        """RECEIVING sessions idle since ``older_than``, and builds stuck since then (a build whose
        last write failed, e.g. on a full disk, is retried instead of staying BUILDING)."""
        cur = self.reader().execute(
            "SELECT * FROM sessions WHERE stage='prearchive' AND ((status=? AND last_received_at < ?)"
            " OR (status=? AND updated_at < ?))",
            (Status.RECEIVING, older_than, Status.BUILDING, older_than),
        )
        return every(SessionRow, cur)

    def sessions_in(self, stage: str, statuses: Sequence[str]) -> list[SessionRow]:
        cur = self.reader().execute(
            f"SELECT * FROM sessions WHERE stage=? AND status IN ({marks(statuses)})", (stage, *statuses)
        )
        return every(SessionRow, cur)

    def status_counts(self, projects: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        """stage -> status -> how many sessions, of ``projects`` only when given."""
        where = f" WHERE project IN ({','.join('?' * len(projects))})" if projects is not None else ""
        cur = self.reader().execute(
            f"SELECT stage, status, COUNT(*) FROM sessions{where} GROUP BY stage, status", tuple(projects or ()))
        counts: dict[str, dict[str, int]] = {}
        for stage, status, n in cur.fetchall():
            counts.setdefault(stage, {})[status] = n
        return counts

    # ------------------------------------------------------------ opening sessions

    def unique_timestamp(self, project: str, label: str) -> str:
        return self.write(lambda conn: unique_timestamp(conn, project, label, time.time()))

    def open_prearchive_session(
        self,
        *,
        project: str,
        subject: str,
        label: str,
        study_uid: str,
        subject_from: str,
        session_from: str,
        source: str,
        auto_archive: bool | None,
        prevent_anon: bool,
    ) -> SessionRow:
        """The prearchive session new data for this key joins; created (RECEIVING) if none takes
        new data. A new session records which session it is late for, if any (see late_for).

        Race-free across receiver processes and nodes: the look-up and the insert are one write
        transaction, and write transactions are serialized (BEGIN IMMEDIATE on SQLite, the writer's
        advisory lock on PostgreSQL), so a study sent half to each of two nodes is one session."""

        def txn(conn: sqlite3.Connection) -> SessionRow:
            existing = _receiving_session(conn, project, study_uid, label)
            if existing is not None:
                return existing
            now = time.time()
            stamp = unique_timestamp(conn, project, label, now)
            late = late_for(conn, project, study_uid, label)
            cur = conn.execute(
                "INSERT INTO sessions(stage, project, subject, label, timestamp, study_instance_uid, status,"
                " subject_from, session_from, source, auto_archive, prevent_anon, late_for, created_at,"
                " updated_at, last_received_at) VALUES ('prearchive',?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) RETURNING id",
                (
                    project, subject, label, stamp, study_uid, Status.RECEIVING, subject_from, session_from, source,
                    None if auto_archive is None else int(auto_archive), int(prevent_anon), late, now, now, now,
                ),
            )
            session_id = int(cur.fetchone()[0])
            reason = "late data for a study being archived or archived" if late else "new session"
            record_history(conn, session_id, Status.RECEIVING, reason, source)
            return fetch_session(conn, session_id)  # type: ignore[return-value]

        return self.write(txn)

    def adopt_session(self, *, project: str, timestamp: str, label: str, study_uid: str, subject: str) -> SessionRow:
        """Recreate the row of a prearchive session folder found on disk (RECEIVING: it is rebuilt)."""

        def txn(conn: sqlite3.Connection) -> SessionRow:
            now = time.time()
            cur = conn.execute(
                "INSERT INTO sessions(stage, project, subject, label, timestamp, study_instance_uid, status, source,"
                " created_at, updated_at, last_received_at) VALUES ('prearchive',?,?,?,?,?,?,'recovered',?,?,?)"
                " RETURNING id",
                (project, subject, label, timestamp, study_uid, Status.RECEIVING, now, now, now),
            )
            session_id = int(cur.fetchone()[0])
            record_history(conn, session_id, Status.RECEIVING, "recovered from disk", "recovery")
            return fetch_session(conn, session_id)  # type: ignore[return-value]

        return self.write(txn)

    # ------------------------------------------------------------ status changes

    def set_status(
        self,
        session_id: int,
        status: str,
        reason: str = "",
        *,
        expect: Sequence[str] | None = None,
        actor: str = "",
        extra: dict[str, Any] | None = None,
    ) -> SessionRow:
        """Change a session's status, atomically checking its current status is one of ``expect``
        (InvalidState otherwise; None: no check)."""

        def txn(conn: sqlite3.Connection) -> SessionRow:
            current = conn.execute("SELECT status FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if current is None:
                raise NotFound(f"session {session_id} no longer exists")
            require(current[0], expect)
            update_session(conn, session_id, {"status": status, "reason": reason, "updated_at": time.time(),
                                              **(extra or {})})
            record_history(conn, session_id, status, reason, actor)
            return fetch_session(conn, session_id)  # type: ignore[return-value]

        return self.write(txn)

    def finish_build(self, session_id: int, fields: dict[str, Any], status: str, reason: str,
                     scan_fields: dict[str, dict[str, Any]] | None = None) -> SessionRow | None:
        """Record a build's summary; only if the session is still BUILDING (new data wins)."""

        def txn(conn: sqlite3.Connection) -> SessionRow | None:
            current = conn.execute("SELECT status FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if current is None or current[0] != Status.BUILDING:
                return None
            refresh_counts(conn, session_id)
            conn.executemany(
                "UPDATE scans SET custom=? WHERE session_id=? AND scan_id=?",
                [(json.dumps(v), session_id, k) for k, v in (scan_fields or {}).items()],
            )
            update_session(conn, session_id, {**fields, "status": status, "reason": reason, "built_at": time.time(),
                                              "updated_at": time.time()})
            record_history(conn, session_id, status, reason, "build")
            return fetch_session(conn, session_id)

        return self.write(txn)

    def move_session(self, session_id: int, new_project: str, new_timestamp_dir: str, paths: dict[int, str],
                     actor: str = "") -> None:
        """Re-home a prearchive session's rows after its folder moved to another project (RECEIVING: it is rebuilt)."""

        def txn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE sessions SET project=?, timestamp=?, status=?, last_received_at=?, updated_at=? WHERE id=?",
                (new_project, new_timestamp_dir, Status.RECEIVING, time.time(), time.time(), session_id),
            )
            conn.executemany("UPDATE instances SET path=? WHERE id=?", [(p, i) for i, p in paths.items()])
            record_history(conn, session_id, Status.RECEIVING, f"moved to project {new_project}", actor)

        self.write(txn)

    # ------------------------------------------------------------ removal

    def delete_session_rows(self, session_id: int, reason: str, actor: str = "") -> None:
        def txn(conn: sqlite3.Connection) -> None:
            record_event(conn, "session_deleted", {"reason": reason, "actor": actor}, session_id)
            delete_session(conn, session_id)

        self.write(txn)

    def drop_if_empty(self, session_id: int) -> bool:
        """Delete a prearchive session that never got an instance (its first store failed);
        atomic against a concurrent add_instance, which then finds it gone and re-routes."""

        def txn(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                f"DELETE FROM sessions WHERE id = ? AND stage = 'prearchive' AND status IN ({marks(RECEIVABLE)})"
                " AND NOT EXISTS (SELECT 1 FROM instances WHERE session_id = ?)",
                (session_id, *RECEIVABLE, session_id),
            )
            if cur.rowcount:
                conn.execute("DELETE FROM scans WHERE session_id = ?", (session_id,))
                record_event(conn, "session_deleted", {"reason": "empty", "actor": "build"}, session_id)
            return bool(cur.rowcount)

        return self.write(txn)
