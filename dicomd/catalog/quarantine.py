"""Files ingest could not take (unreadable, refused, over a limit), kept for an operator."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from dicomd.catalog.engine import Engine
from dicomd.catalog.events import record_event
from dicomd.catalog.rows import QuarantineRow, every, one
from dicomd.errors import NotFound
from dicomd.lifecycle import QuarantineStatus


class Quarantine(Engine):
    def add_quarantine(self, *, source: str, reason: str, path: str, size: int, sop_instance_uid: str = "") -> int:
        def txn(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO quarantine(at, source, reason, path, size, sop_instance_uid, status)"
                " VALUES (?,?,?,?,?,?,?) RETURNING id",
                (time.time(), source, reason, path, size, sop_instance_uid, QuarantineStatus.HELD),
            )
            entry_id = int(cur.fetchone()[0])
            record_event(conn, "quarantined", {"source": source, "reason": reason, "path": path})
            return entry_id

        return self.write(txn)

    def quarantine(self, status: str | None = QuarantineStatus.HELD) -> list[QuarantineRow]:
        """Entries with ``status`` (None or "": all), newest first."""
        sql = "SELECT * FROM quarantine"
        args: tuple[Any, ...] = ()
        if status:
            sql += " WHERE status = ?"
            args = (status,)
        return every(QuarantineRow, self.reader().execute(sql + " ORDER BY id DESC", args))

    def quarantine_entry(self, entry_id: int) -> QuarantineRow:
        row = one(QuarantineRow, self.reader().execute("SELECT * FROM quarantine WHERE id = ?", (entry_id,)))
        if row is None:
            raise NotFound(f"no quarantine entry {entry_id}")
        return row

    def set_quarantine_status(self, entry_id: int, status: str) -> None:
        self.write(lambda conn: conn.execute("UPDATE quarantine SET status = ? WHERE id = ?", (status, entry_id)))
