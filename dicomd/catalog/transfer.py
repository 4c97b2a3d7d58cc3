"""Copy a SQLite database into an empty PostgreSQL one, table by table: `dicomd catalog migrate`.

The target's schema is made first by the same named migrations as always (the caller passes the
sets); then every table of the source is copied in batches, in the order the source created them
(a table referenced by a foreign key comes before the tables that reference it). Each batch is
one transaction that also records how far its table got, in the target's ``copied_from`` table, so
a run that stops is resumed where it stopped; a finished copy re-checks the counts and is a no-op.
A target that holds rows and no record of this copy is refused.

The source must not change meanwhile (the CLI holds the data directory's run lock).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from dicomd import migrations as runner
import psycopg

from dicomd.catalog.pg import PgConnection, describe_error
from dicomd.catalog.pg import connect as pg_connect
from dicomd.dburl import DatabaseUrl
from dicomd.errors import Conflict, InvalidInput, StorageFailure

logger = logging.getLogger(__name__)

PROGRESS_TABLE = "copied_from"
BATCH_ROWS = 5000
_SKIPPED = ("_sqlite_migrations", "sqlite_sequence", "sqlite_stat1", "sqlite_stat4")


@dataclass
class TransferReport:
    """What a run did: rows per table (source = target once verified)."""

    source: str
    target: str
    counts: dict[str, int] = field(default_factory=dict)
    copied: dict[str, int] = field(default_factory=dict)  # rows copied by this run
    already_done: bool = False
    resumed: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "tables": self.counts, "copied_now": self.copied,
                "already_migrated": self.already_done, "resumed": self.resumed}


def copy_database(
    source: Path,
    target: DatabaseUrl,
    migration_sets: Sequence[runner.Migrations],
    *,
    batch_rows: int = BATCH_ROWS,
    progress: Callable[[str, int, int], None] | None = None,
) -> TransferReport:
    """Copy the SQLite file ``source`` into the PostgreSQL database ``target`` (see the module doc)."""
    if not target.is_postgresql:
        raise InvalidInput("--to: the target must be a postgresql:// URL")
    if not source.is_file():
        raise InvalidInput(f"no SQLite database at {source}")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, isolation_level=None)
    try:
        dst = PgConnection(pg_connect(target.dsn))
    except psycopg.Error as exc:  # the URL is shown masked
        src.close()
        raise StorageFailure(f"cannot connect to {target.masked}: {describe_error(exc)}") from None
    report = TransferReport(str(source), target.masked)
    try:
        tables = _tables(src)
        marker = _marker(source, src)
        state = _progress(dst)
        if state is None:
            _refuse_if_not_empty(dst, tables)
        elif state["marker"] != marker:
            raise Conflict(f"{target.masked} holds a copy of another catalog ({state['source']}); refusing to mix them")
        else:
            report.resumed = not state["done"]
        for migration_set in migration_sets:
            runner.apply(migration_set, dst, runner.POSTGRESQL)
        if state is None:
            state = _start(dst, source, marker)
        for table in tables:
            report.copied[table] = _copy_table(src, dst, table, state, batch_rows, progress)
        report.counts = _verify(src, dst, tables)
        report.already_done = bool(state["done"]) and not any(report.copied.values())
        _finish(dst, state)
        return report
    finally:
        src.close()
        dst.close()


def _tables(src: sqlite3.Connection) -> list[str]:
    rows = src.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY rowid").fetchall()
    return [name for (name,) in rows if name not in _SKIPPED and not name.startswith("sqlite_")]


def _marker(path: Path, src: sqlite3.Connection) -> str:
    """Which source a target was copied from: its path and the time its catalog was made."""
    first = src.execute("SELECT MIN(applied_at) FROM _sqlite_migrations").fetchone() if _has(src, "_sqlite_migrations") \
        else (None,)
    return f"{path.resolve()}|{first[0] or ''}"


def _has(src: sqlite3.Connection, table: str) -> bool:
    return src.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (table,)).fetchone() is not None


def _progress(dst: PgConnection) -> dict[str, Any] | None:
    if not dst.execute("SELECT to_regclass(?)", (PROGRESS_TABLE,)).fetchone()[0]:
        return None
    row = dst.execute(f"SELECT source, marker, tables, finished_at FROM {PROGRESS_TABLE} ORDER BY id LIMIT 1").fetchone()
    if row is None:
        return None
    return {"source": row[0], "marker": row[1], "tables": json.loads(row[2]), "done": row[3] is not None}


def _refuse_if_not_empty(dst: PgConnection, tables: Sequence[str]) -> None:
    for table in tables:
        if dst.execute("SELECT to_regclass(?)", (table,)).fetchone()[0] is None:
            continue
        if dst.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone():
            raise Conflict(f"the target database is not empty (table {table} has rows); dicomd copies a catalog"
                           " only into an empty database")


def _start(dst: PgConnection, source: Path, marker: str) -> dict[str, Any]:
    dst.execute(f"CREATE TABLE IF NOT EXISTS {PROGRESS_TABLE} (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,"
                " source TEXT NOT NULL, marker TEXT NOT NULL, tables TEXT NOT NULL, started_at DOUBLE PRECISION NOT NULL,"
                " finished_at DOUBLE PRECISION)")
    dst.execute(f"INSERT INTO {PROGRESS_TABLE}(source, marker, tables, started_at) VALUES (?, ?, '{{}}', ?)",
                (str(source), marker, time.time()))
    return {"source": str(source), "marker": marker, "tables": {}, "done": False}


def _columns(src: sqlite3.Connection, dst: PgConnection, table: str) -> list[str]:
    mine = [r[1] for r in src.execute(f'PRAGMA table_info("{table}")').fetchall()]
    theirs = {r[0] for r in dst.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?",
        (table,)).fetchall()}
    if not theirs:
        raise StorageFailure(f"table {table} of the source has no counterpart in the target's schema")
    missing = [c for c in mine if c not in theirs]
    if missing:
        raise StorageFailure(f"table {table}: the target has no column {', '.join(missing)}")
    return mine


def _copy_table(src: sqlite3.Connection, dst: PgConnection, table: str, state: dict[str, Any], batch_rows: int,
                progress: Callable[[str, int, int], None] | None) -> int:
    """Copy the rows of ``table`` after the last rowid recorded for it; returns how many this run copied."""
    columns = _columns(src, dst, table)
    names = ", ".join(f'"{c}"' for c in columns)
    insert = f'INSERT INTO "{table}"({names}) VALUES ({", ".join("?" * len(columns))})'
    total = src.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
    last = int(state["tables"].get(table, 0))
    copied = 0
    while True:
        rows = src.execute(f'SELECT rowid, {names} FROM "{table}" WHERE rowid > ? ORDER BY rowid LIMIT ?',
                           (last, batch_rows)).fetchall()
        if not rows:
            break
        last = rows[-1][0]
        state["tables"][table] = last
        dst.execute("BEGIN")
        try:
            dst.executemany(insert, [tuple(r[1:]) for r in rows])
            dst.execute(f"UPDATE {PROGRESS_TABLE} SET tables = ?", (json.dumps(state["tables"]),))
            dst.execute("COMMIT")
        except psycopg.Error as exc:
            dst.execute("ROLLBACK")
            raise StorageFailure(f"copying table {table} (rows after rowid {rows[0][0] - 1}) failed:"
                                 f" {describe_error(exc)}; nothing of that batch was kept, a re-run resumes there") from None
        except BaseException:
            dst.execute("ROLLBACK")
            raise
        copied += len(rows)
        if progress:
            progress(table, copied, total)
    _reset_identity(dst, table, columns)
    return copied


def _reset_identity(dst: PgConnection, table: str, columns: Sequence[str]) -> None:
    """The next id PostgreSQL hands out comes after the copied ones."""
    if "id" not in columns:
        return
    sequence = dst.execute("SELECT pg_get_serial_sequence(?, 'id')", (f'"{table}"',)).fetchone()[0]
    if sequence:
        dst.execute(f'SELECT setval(?, COALESCE((SELECT MAX(id) FROM "{table}"), 0) + 1, false)', (sequence,))


def _verify(src: sqlite3.Connection, dst: PgConnection, tables: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    wrong = []
    for table in tables:
        mine = src.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        theirs = dst.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        counts[table] = mine
        if mine != theirs:
            wrong.append(f"{table}: {mine} in the source, {theirs} in the target")
    if wrong:
        raise StorageFailure("row counts differ after the copy: " + "; ".join(wrong))
    return counts


def _finish(dst: PgConnection, state: dict[str, Any]) -> None:
    if not state["done"]:
        dst.execute(f"UPDATE {PROGRESS_TABLE} SET finished_at = ?", (time.time(),))
        state["done"] = True
