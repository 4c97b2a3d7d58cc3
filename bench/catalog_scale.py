"""Section 5: catalog queries at 1M and 10M instance rows (synthetic rows), on SQLite and PostgreSQL.

The catalog is created by dicomd itself (its migrations), then filled with synthetic sessions,
scans and instances in bulk (SQLite: executemany in one transaction; PostgreSQL: COPY), then
ANALYZEd: half the sessions in the prearchive (READY), half in
the archive with a mapped custom field ``site``. Queries go through dicomd's Catalog, as the
CLI's ``prearchive list``, ``archive list --where site=S7`` and a SOP Instance UID lookup do;
each is the median of several calls. One CLI call of each list is also timed, start-up included."""

from __future__ import annotations

import json
import logging
import sqlite3
import statistics
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from bench.receivers import dicomd_config
from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.config import load
from dicomd.stores import Stores

logger = logging.getLogger(__name__)
PER_SESSION = 500
SCANS = 5


@dataclass(frozen=True)
class CatalogRow:
    operation: str
    instance_rows: int
    sessions: int
    result_rows: int
    median_ms: float
    cli_s: float | None  # one CLI call, interpreter start-up included
    backend: str = "sqlite"
    fill_s: float | None = None  # writing the synthetic rows (and ANALYZE)


SESSION_COLUMNS = ("id", "stage", "project", "subject", "label", "timestamp", "study_instance_uid", "status",
                   "created_at", "updated_at", "last_received_at", "archived_at", "modalities", "scans", "instances",
                   "bytes", "custom")
SCAN_COLUMNS = ("session_id", "scan_id", "series_instance_uid", "series_number", "modality", "instances")
INSTANCE_COLUMNS = ("session_id", "scan_id", "sop_instance_uid", "sop_class_uid", "series_instance_uid",
                    "series_number", "modality", "size", "sha256", "path", "received_at")


def _tables(n: int) -> tuple[int, list[tuple[str, tuple[str, ...], Iterator[tuple[object, ...]]]]]:
    """The synthetic rows: (sessions, [(table, columns, rows)])."""
    sessions = max(2, n // PER_SESSION)
    now = time.time()
    session_rows = ((s + 1, PREARCHIVE if s % 2 else ARCHIVE, "bench", f"SUBJ{s:07d}", f"SESS{s:07d}",
                     f"20240101_{s:09d}", f"2.25.{10**30 + s}", "READY" if s % 2 else "ARCHIVED",
                     now, now, now - s, None if s % 2 else now, "MR", SCANS, PER_SESSION, PER_SESSION * 133_000,
                     json.dumps({"site": f"S{(s // 2) % 10}"})) for s in range(sessions))
    scan_rows = ((s + 1, str(k + 1), f"2.25.{2 * 10**30 + s * SCANS + k}", str(k + 1), "MR", PER_SESSION // SCANS)
                 for s in range(sessions) for k in range(SCANS))
    instance_rows = ((i // PER_SESSION + 1, str((i % PER_SESSION) // (PER_SESSION // SCANS) + 1), _sop(i),
                      "1.2.840.10008.5.1.4.1.1.4", "", "1", "MR", 133_000, f"{i:064x}", f"x/{i}.dcm", now)
                     for i in range(sessions * PER_SESSION))
    return sessions, [("sessions", SESSION_COLUMNS, session_rows), ("scans", SCAN_COLUMNS, scan_rows),
                      ("instances", INSTANCE_COLUMNS, instance_rows)]


def _fill_sqlite(db: Path, n: int) -> int:
    sessions, tables = _tables(n)
    conn = sqlite3.connect(db)
    try:
        with conn:
            for table, columns, rows in tables:
                conn.executemany(f"INSERT INTO {table}({', '.join(columns)}) VALUES ({','.join('?' * len(columns))})",
                                 rows)
        conn.execute("ANALYZE")
    finally:
        conn.close()
    return sessions


def _fill_postgresql(dsn: str, n: int) -> int:
    import psycopg

    sessions, tables = _tables(n)
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            for table, columns, rows in tables:
                with cur.copy(f"COPY {table}({', '.join(columns)}) FROM STDIN") as copy:  # type: ignore[arg-type]
                    for row in rows:
                        copy.write_row(row)
            cur.execute("SELECT setval(pg_get_serial_sequence('sessions', 'id'), %s)", (sessions,))
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")
    return sessions


def _sop(i: int) -> str:
    return f"2.25.{3 * 10**30 + i * 7919}"


def _median_ms(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), result


def _cli(work: Path, *args: str) -> float | None:
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "dicomd", *args, "--config", str(work / "dicomd.toml"),
                           "--data-dir", str(work / "data")], capture_output=True, text=True, timeout=600)
    return time.monotonic() - t0 if done.returncode == 0 else None


def measure_size(work: Path, n: int, progress: Callable[[str], None], pg_url: str | None = None) -> list[CatalogRow]:
    """The queries at ``n`` instance rows, on SQLite, or on the PostgreSQL database ``pg_url``."""
    work.mkdir(parents=True, exist_ok=True)
    text = dicomd_config(1048576, 300.0) + (f'\n[catalog]\nurl = "{pg_url}"\n' if pg_url else "")
    (work / "dicomd.toml").write_text(text)
    config = load(work / "dicomd.toml", {"data_dir": str(work / "data")})
    backend = config.catalog_url.kind
    stores = Stores.open(config)  # creates the catalog with dicomd's migrations
    stores.close()
    t0 = time.monotonic()
    sessions = _fill_postgresql(pg_url, n) if pg_url else _fill_sqlite(stores.layout.catalog, n)
    fill_s = time.monotonic() - t0
    rows = sessions * PER_SESSION
    progress(f"catalog ({backend}): {rows} instance rows in {sessions} sessions written in {fill_s:.1f} s")
    stores = Stores.open(config)
    try:
        cat = stores.catalog
        pre_ms, pre = _median_ms(lambda: cat.sessions(PREARCHIVE), 5)
        where_ms, found = _median_ms(lambda: cat.sessions(ARCHIVE, where={"site": "S7"}), 5)
        uids = [_sop(i) for i in range(0, rows, max(1, rows // 101))][:101]
        lookups = [_median_ms(lambda u=u: cat.instance_by_uid(u), 1)[0] for u in uids]
        hit = cat.instance_by_uid(uids[len(uids) // 2])
    finally:
        stores.close()
    out = [
        CatalogRow("prearchive list", rows, sessions, len(pre), pre_ms,  # type: ignore[arg-type]
                   _cli(work, "prearchive", "list", "--json"), backend, fill_s),
        CatalogRow("archive list --where site=S7", rows, sessions, len(found), where_ms,  # type: ignore[arg-type]
                   _cli(work, "archive", "list", "--where", "site=S7", "--json"), backend, fill_s),
        CatalogRow("instance by SOP Instance UID", rows, sessions, len(hit), statistics.median(lookups), None,
                   backend, fill_s),
    ]
    if pg_url is None:
        shutil.rmtree(work / "data", ignore_errors=True)  # 10M rows are gigabytes: free them for the next size
    return out


def run_catalog(work: Path, sizes: list[int], progress: Callable[[str], None],
                new_pg_database: Callable[[], str] | None = None,
                drop_pg_database: Callable[[str], None] | None = None, *, sqlite: bool = True) -> list[CatalogRow]:
    """Every size on SQLite (unless ``sqlite`` is False), and on PostgreSQL when ``new_pg_database``
    gives databases."""
    out: list[CatalogRow] = []
    for n in sizes:
        if sqlite:
            out += measure_size(work / f"catalog-{n}", n, progress)
        if new_pg_database is not None:
            url = new_pg_database()
            try:
                out += measure_size(work / f"catalog-{n}-pg", n, progress, url)
            finally:
                if drop_pg_database is not None:
                    drop_pg_database(url)
    return out
