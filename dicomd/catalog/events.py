"""Each session's status history, and the event log (quarantined files, replaced instances, ...)."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, Sequence

from dicomd.catalog.engine import Engine


def record_history(conn: sqlite3.Connection, session_id: int, status: str, reason: str = "", actor: str = "") -> None:
    """Note, inside the caller's transaction, that a session went into ``status``."""
    conn.execute(
        "INSERT INTO history(session_id, at, status, reason, actor) VALUES (?,?,?,?,?)",
        (session_id, time.time(), status, reason, actor),
    )


def record_event(conn: sqlite3.Connection, kind: str, detail: dict[str, Any], session_id: int | None = None) -> None:
    """Log an event inside the caller's transaction."""
    conn.execute(
        "INSERT INTO events(at, kind, session_id, detail) VALUES (?,?,?,?)",
        (time.time(), kind, session_id, json.dumps(detail, default=str)),
    )


class Events(Engine):
    record_history = staticmethod(record_history)
    record_event = staticmethod(record_event)

    def event(self, kind: str, detail: dict[str, Any], session_id: int | None = None) -> None:
        self.write(lambda conn: record_event(conn, kind, detail, session_id))

    def history(self, session_id: int) -> list[dict[str, Any]]:
        cur = self.reader().execute(
            "SELECT at, status, reason, actor FROM history WHERE session_id = ? ORDER BY id", (session_id,)
        )
        return [dict(zip(("at", "status", "reason", "actor"), r)) for r in cur.fetchall()]

    def events(self, *, kinds: Sequence[str] | None = None, limit: int = 20) -> list[dict[str, Any]]:
        sql = "SELECT id, at, kind, session_id, detail FROM events"
        args: list[Any] = []
        if kinds:
            sql += f" WHERE kind IN ({','.join('?' * len(kinds))})"
            args += list(kinds)
        cur = self.reader().execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))
        return [
            {"id": i, "at": at, "kind": k, "session_id": s, "detail": json.loads(d)} for i, at, k, s, d in cur.fetchall()
        ]
