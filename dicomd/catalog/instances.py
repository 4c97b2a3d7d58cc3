"""Instance rows (one per stored DICOM file) and the per-session scans and counts made from them."""

from __future__ import annotations

import enum
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from dicomd.catalog.engine import Engine
from dicomd.catalog.events import record_event, record_history
from dicomd.catalog.rows import NEW_INSTANCE_FIELDS, InstanceRow, NewInstance, dicts, every
from dicomd.lifecycle import Status, takes_new_data


class InstanceOutcome(enum.StrEnum):
    """What add_instance did with a file."""

    ADDED = "added"
    REPLACED = "replaced"  # another file with the same SOP Instance UID was there
    DUPLICATE = "duplicate"  # the same bytes were already there
    MOVED = "moved"  # the session no longer takes data: ingest must put the file in another session


def insert_instance(conn: sqlite3.Connection, session_id: int, inst: NewInstance, received_at: float, *,
                    replace: bool = False) -> None:
    """The one INSERT of an instance row (ingest, archive commit, adoption from disk)."""
    columns = ("session_id", *NEW_INSTANCE_FIELDS, "received_at")
    upsert = (" ON CONFLICT(session_id, sop_instance_uid) DO UPDATE SET "
              + ", ".join(f"{c}=excluded.{c}" for c in columns[1:])) if replace else ""
    conn.execute(
        f"INSERT INTO instances({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))}){upsert}",
        (session_id, *(getattr(inst, k) for k in NEW_INSTANCE_FIELDS), received_at),
    )


def refresh_counts(conn: sqlite3.Connection, session_id: int) -> None:
    """Recompute a session's scans table, counts, modalities and dates from its instance rows."""
    old_custom = dict(conn.execute("SELECT scan_id, custom FROM scans WHERE session_id=?", (session_id,)).fetchall())
    conn.execute("DELETE FROM scans WHERE session_id=?", (session_id,))
    conn.execute(
        "INSERT INTO scans(session_id, scan_id, series_instance_uid, series_number, description, modality,"
        " instances, bytes) SELECT session_id, scan_id, MIN(series_instance_uid), MIN(series_number),"
        " MIN(series_description), MIN(modality), COUNT(*), SUM(size) FROM instances WHERE session_id=?"
        " GROUP BY session_id, scan_id",
        (session_id,),
    )
    conn.executemany(
        "UPDATE scans SET custom=? WHERE session_id=? AND scan_id=?",
        [(c, session_id, sid) for sid, c in old_custom.items()],
    )
    modalities = [m for (m,) in conn.execute(
        "SELECT DISTINCT modality FROM instances WHERE session_id=? AND modality != ''", (session_id,)).fetchall()]
    conn.execute(
        "UPDATE sessions SET instances=(SELECT COUNT(*) FROM instances WHERE session_id=:s),"
        " bytes=(SELECT COALESCE(SUM(size),0) FROM instances WHERE session_id=:s),"
        " scans=(SELECT COUNT(*) FROM scans WHERE session_id=:s),"
        " modalities=:modalities,"
        " scan_date=COALESCE((SELECT MIN(study_date) FROM instances WHERE session_id=:s AND study_date != ''), ''),"
        " scan_time=COALESCE((SELECT MIN(study_time) FROM instances WHERE session_id=:s AND study_time != ''), '')"
        " WHERE id=:s",
        {"s": session_id, "modalities": ",".join(sorted(modalities))},
    )


def delete_instance(conn: sqlite3.Connection, instance_id: int, session_id: int, size: int) -> None:
    """Remove one instance row and take it off its session's counts."""
    conn.execute("DELETE FROM instances WHERE id = ?", (instance_id,))
    conn.execute("UPDATE sessions SET instances = instances - 1, bytes = bytes - ? WHERE id = ?", (size, session_id))


def _take_out_previous(conn: sqlite3.Connection, session_id: int, inst: NewInstance) -> InstanceOutcome:
    """Remove the session's row with the same SOP Instance UID, if any: the new file replaces it."""
    old = conn.execute(
        "SELECT id, sha256, size FROM instances WHERE session_id=? AND sop_instance_uid=?",
        (session_id, inst.sop_instance_uid),
    ).fetchone()
    if old is None:
        return InstanceOutcome.ADDED
    delete_instance(conn, old[0], session_id, old[2])
    return InstanceOutcome.DUPLICATE if old[1] == inst.sha256 else InstanceOutcome.REPLACED


def _opens_scan(conn: sqlite3.Connection, session_id: int, scan_id: str) -> bool:
    """Whether the instance just inserted is its scan's first."""
    return conn.execute(
        "SELECT COUNT(*) FROM (SELECT 1 FROM instances WHERE session_id=? AND scan_id=? LIMIT 2) AS firsts",
        (session_id, scan_id),
    ).fetchone()[0] == 1


def _leading_number(text: str) -> int:
    """SQLite's CAST(text AS INTEGER): the leading digits (after an optional sign), else 0."""
    match = re.match(r"\s*[+-]?\d+", text)
    return int(match.group(0)) if match else 0


class Instances(Engine):
    def instances(self, session_id: int, scan_id: str | None = None) -> list[InstanceRow]:
        sql = "SELECT * FROM instances WHERE session_id = ?"
        args: list[Any] = [session_id]
        if scan_id is not None:
            sql += " AND scan_id = ?"
            args.append(scan_id)
        return every(InstanceRow, self.reader().execute(sql + " ORDER BY scan_id, path", args))

    def instance_by_uid(self, sop_instance_uid: str) -> list[InstanceRow]:
        cur = self.reader().execute("SELECT * FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,))
        return every(InstanceRow, cur)

    def iter_all_instance_paths(self, page: int = 10_000) -> Iterator[tuple[int, int, str, int]]:
        """Every instance row (id, session_id, path, size), read a page at a time (bounded memory)."""
        last = 0
        while True:
            rows = self.reader().execute(
                "SELECT id, session_id, path, size FROM instances WHERE id > ? ORDER BY id LIMIT ?", (last, page)
            ).fetchall()
            yield from rows
            if len(rows) < page:
                return
            last = rows[-1][0]

    def scans(self, session_id: int) -> list[dict[str, Any]]:
        """The session's scans in scan number order (a scan ID's leading digits, then its text)."""
        cur = self.reader().execute("SELECT * FROM scans WHERE session_id = ? ORDER BY scan_id", (session_id,))
        return sorted(dicts(cur), key=lambda scan: (_leading_number(scan["scan_id"]), scan["scan_id"]))

    def add_instance(self, session_id: int, inst: NewInstance, sync_dir: Path | None = None) -> InstanceOutcome:
        """Record a durable file in a prearchive session, which goes back to RECEIVING.

        A session that no longer takes new data (being archived, moved or deleted; or gone)
        answers MOVED, and ingest puts the file in another session.
        """

        def txn(conn: sqlite3.Connection) -> InstanceOutcome:
            status_row = conn.execute("SELECT status FROM sessions WHERE id = ?", (session_id,)).fetchone()
            status = status_row[0] if status_row else None
            if not takes_new_data(status):
                return InstanceOutcome.MOVED
            now = time.time()
            outcome = _take_out_previous(conn, session_id, inst)
            insert_instance(conn, session_id, inst, now)
            conn.execute(
                "UPDATE sessions SET instances = instances + 1, bytes = bytes + ?, scans = scans + ?,"
                " last_received_at = ?, updated_at = ?, status = ? WHERE id = ?",
                (inst.size, int(_opens_scan(conn, session_id, inst.scan_id)), now, now, Status.RECEIVING, session_id),
            )
            if status != Status.RECEIVING:
                record_history(conn, session_id, Status.RECEIVING, f"new data while {status}")
            if outcome == InstanceOutcome.REPLACED:
                record_event(conn, "instance_replaced", {"sop_instance_uid": inst.sop_instance_uid}, session_id)
            return outcome

        return self.write(txn, durable=False, sync_dirs=(sync_dir,) if sync_dir else ())

    def add_instance_rows(self, session_id: int, rows: list[NewInstance]) -> None:
        """Adopt files found on disk into a session (recovery, rebuild)."""

        def txn(conn: sqlite3.Connection) -> None:
            for inst in rows:
                insert_instance(conn, session_id, inst, time.time(), replace=True)
            refresh_counts(conn, session_id)

        self.write(txn)

    def remove_instance_rows(self, ids: Sequence[int]) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            for i in ids:
                row = conn.execute("SELECT session_id, size FROM instances WHERE id = ?", (i,)).fetchone()
                if row:
                    delete_instance(conn, i, row[0], row[1])

        self.write(txn)

    def refresh_counts(self, session_id: int) -> None:
        self.write(lambda conn: refresh_counts(conn, session_id))
