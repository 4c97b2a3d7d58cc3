"""The stored order and enabled flags of the archive-time steps, per scope ('' = the site's defaults)."""

from __future__ import annotations

import sqlite3
import time
from typing import Mapping

from dicomd.catalog.engine import Engine

SITE = ""


class ProcessorSettings(Engine):
    def processor_settings(self, scope: str) -> dict[str, tuple[int, bool]]:
        """name -> (position, enabled) stored for ``scope``."""
        cur = self.reader().execute("SELECT name, position, enabled FROM processor_settings WHERE scope = ?", (scope,))
        return {name: (position, bool(enabled)) for name, position, enabled in cur.fetchall()}

    def save_processor_settings(self, scope: str, settings: Mapping[str, tuple[int, bool]], actor: str) -> None:
        """Replace everything stored for ``scope`` with ``settings``."""
        now = time.time()
        rows = [(scope, name, position, int(enabled), now, actor) for name, (position, enabled) in settings.items()]

        def txn(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM processor_settings WHERE scope = ?", (scope,))
            conn.executemany("INSERT INTO processor_settings(scope, name, position, enabled, updated_at, updated_by)"
                             " VALUES (?,?,?,?,?,?)", rows)

        self.write(txn)
