"""The configured projects, copied into the catalog at start-up (nothing in dicomd reads them back)."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any, Iterable

from dicomd.catalog.engine import Engine


class Projects(Engine):
    def sync_projects(self, projects: Iterable[Any]) -> None:
        rows = [
            (p.id, p.name or p.id, json.dumps(list(p.aliases)), p.auto_archive, p.overwrite, time.time())
            for p in projects
        ]

        def txn(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO projects(id, name, aliases, auto_archive, overwrite, updated_at)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET name=excluded.name,"
                " aliases=excluded.aliases, auto_archive=excluded.auto_archive,"
                " overwrite=excluded.overwrite, updated_at=excluded.updated_at",
                rows,
            )

        self.write(txn)
