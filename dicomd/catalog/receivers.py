"""DICOM receivers added over the API: what they are (the daemon starts the enabled ones)."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Sequence

from dicomd.catalog.engine import Engine
from dicomd.errors import NotFound


@dataclass(frozen=True)
class ReceiverRow:
    id: int
    ae_title: str
    port: int
    bind: str
    allowed: tuple[str, ...]
    project: str
    prevent_anon: bool
    enabled: bool
    created_at: float
    updated_at: float
    updated_by: str


_COLUMNS = ("ae_title", "port", "bind", "allowed", "project", "prevent_anon", "enabled")


def _row(values: Sequence[Any]) -> ReceiverRow:
    (id_, ae, port, bind, allowed, project, prevent_anon, enabled, created, updated, by) = values
    return ReceiverRow(id_, ae, port, bind, tuple(json.loads(allowed)), project, bool(prevent_anon), bool(enabled),
                       created, updated, by)


def _values(row: ReceiverRow) -> tuple[Any, ...]:
    return (row.ae_title, row.port, row.bind, json.dumps(list(row.allowed)), row.project, int(row.prevent_anon),
            int(row.enabled))


class Receivers(Engine):
    def receivers(self) -> list[ReceiverRow]:
        cur = self.reader().execute("SELECT * FROM receivers ORDER BY id")
        return [_row(r) for r in cur.fetchall()]

    def receiver(self, receiver_id: int) -> ReceiverRow:
        found = self.reader().execute("SELECT * FROM receivers WHERE id = ?", (receiver_id,)).fetchone()
        if found is None:
            raise NotFound(f"no DICOM receiver {receiver_id}")
        return _row(found)

    def save_receiver(self, row: ReceiverRow, actor: str) -> ReceiverRow:
        """Insert ``row`` (id 0) or update the row with its id; returns it as stored."""
        now = time.time()

        def txn(conn: sqlite3.Connection) -> int:
            if row.id:
                cur = conn.execute(
                    f"UPDATE receivers SET {', '.join(c + '=?' for c in _COLUMNS)}, updated_at=?, updated_by=?"
                    " WHERE id=?", (*_values(row), now, actor, row.id))
                if cur.rowcount == 0:
                    raise NotFound(f"no DICOM receiver {row.id}")
                return row.id
            cur = conn.execute(
                f"INSERT INTO receivers({', '.join(_COLUMNS)}, created_at, updated_at, updated_by)"
                f" VALUES ({', '.join('?' * (len(_COLUMNS) + 3))}) RETURNING id", (*_values(row), now, now, actor))
            return int(cur.fetchone()[0])

        return self.receiver(self.write(txn))

    def delete_receiver(self, receiver_id: int) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM receivers WHERE id = ?", (receiver_id,)).rowcount == 0:
                raise NotFound(f"no DICOM receiver {receiver_id}")

        self.write(txn)
