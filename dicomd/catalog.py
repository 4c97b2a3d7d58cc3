"""The SQLite catalog: schema, migrations and every SQL statement dicomd runs.

One `Catalog` per process. Writes go through one writer thread that commits whatever is queued
in a single transaction (group commit): concurrent associations share fsyncs without anyone
being answered before their row is durable. Readers use their own per-thread connections
(WAL mode), so the CLI can read while the daemon writes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import sqlite_utils
from sqlite_utils.migrations import Migrations

from dicomd.errors import InvalidState, NotFound, StorageFailure
from dicomd.storage import fsync_dir

logger = logging.getLogger(__name__)
T = TypeVar("T")

PREARCHIVE = "prearchive"
ARCHIVE = "archive"

# Session statuses (XNAT's names)
RECEIVING = "RECEIVING"
BUILDING = "BUILDING"
READY = "READY"
ARCHIVING = "ARCHIVING"
MOVING = "MOVING"
DELETING = "DELETING"
ERROR = "ERROR"
CONFLICT = "CONFLICT"
ARCHIVED = "ARCHIVED"
REVIEW = "REVIEW"  # dicomd: held for a person (burned-in annotation, ...)
# New data may join a prearchive session in these states (it goes back to RECEIVING).
RECEIVABLE = (RECEIVING, BUILDING, READY, ERROR, CONFLICT, REVIEW)
ARCHIVABLE = (READY, ERROR, CONFLICT, REVIEW, RECEIVING)

migrations = Migrations("dicomd")


@migrations(name="001_initial")
def _m001(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE projects (id TEXT PRIMARY KEY, name TEXT, aliases TEXT, auto_archive INTEGER,
            overwrite TEXT, updated_at REAL);
        CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            stage TEXT NOT NULL,
            project TEXT NOT NULL,
            subject TEXT NOT NULL DEFAULT '',
            label TEXT NOT NULL,
            timestamp TEXT NOT NULL DEFAULT '',
            study_instance_uid TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            subject_from TEXT NOT NULL DEFAULT '',
            session_from TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT '',
            auto_archive INTEGER,
            prevent_anon INTEGER NOT NULL DEFAULT 0,
            late_for INTEGER,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            last_received_at REAL,
            built_at REAL,
            archived_at REAL,
            scan_date TEXT NOT NULL DEFAULT '',
            scan_time TEXT NOT NULL DEFAULT '',
            modalities TEXT NOT NULL DEFAULT '',
            scans INTEGER NOT NULL DEFAULT 0,
            instances INTEGER NOT NULL DEFAULT 0,
            bytes INTEGER NOT NULL DEFAULT 0,
            summary TEXT NOT NULL DEFAULT '{}',
            custom TEXT NOT NULL DEFAULT '{}',
            anonymization TEXT NOT NULL DEFAULT ''
        );
        CREATE UNIQUE INDEX sessions_prearchive_path ON sessions(project, timestamp, label)
            WHERE stage = 'prearchive';
        CREATE UNIQUE INDEX sessions_archive_label ON sessions(project, label) WHERE stage = 'archive';
        CREATE INDEX sessions_key ON sessions(stage, project, study_instance_uid, label);
        CREATE INDEX sessions_status ON sessions(stage, status, last_received_at);
        CREATE TABLE scans (
            id INTEGER PRIMARY KEY,
            session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            scan_id TEXT NOT NULL,
            series_instance_uid TEXT NOT NULL DEFAULT '',
            series_number TEXT NOT NULL DEFAULT '',
            description TEXT NOT NULL DEFAULT '',
            modality TEXT NOT NULL DEFAULT '',
            instances INTEGER NOT NULL DEFAULT 0,
            bytes INTEGER NOT NULL DEFAULT 0,
            custom TEXT NOT NULL DEFAULT '{}',
            UNIQUE(session_id, scan_id)
        );
        CREATE TABLE instances (
            id INTEGER PRIMARY KEY,
            session_id INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            scan_id TEXT NOT NULL,
            sop_instance_uid TEXT NOT NULL,
            sop_class_uid TEXT NOT NULL DEFAULT '',
            series_instance_uid TEXT NOT NULL DEFAULT '',
            series_number TEXT NOT NULL DEFAULT '',
            series_description TEXT NOT NULL DEFAULT '',
            modality TEXT NOT NULL DEFAULT '',
            study_date TEXT NOT NULL DEFAULT '',
            study_time TEXT NOT NULL DEFAULT '',
            transfer_syntax TEXT NOT NULL DEFAULT '',
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            path TEXT NOT NULL,
            received_at REAL NOT NULL,
            source TEXT NOT NULL DEFAULT '',
            UNIQUE(session_id, sop_instance_uid)
        );
        CREATE INDEX instances_sop ON instances(sop_instance_uid);
        CREATE INDEX instances_session_scan ON instances(session_id, scan_id);
        CREATE TABLE history (
            id INTEGER PRIMARY KEY,
            session_id INTEGER NOT NULL,
            at REAL NOT NULL,
            status TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            actor TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX history_session ON history(session_id, at);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            session_id INTEGER,
            detail TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX events_at ON events(at);
        CREATE TABLE quarantine (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            source TEXT NOT NULL DEFAULT '',
            reason TEXT NOT NULL,
            path TEXT NOT NULL,
            size INTEGER NOT NULL DEFAULT 0,
            sop_instance_uid TEXT NOT NULL DEFAULT '',
            status TEXT NOT NULL DEFAULT 'held'
        );
        CREATE TABLE archive_jobs (
            id INTEGER PRIMARY KEY,
            session_id INTEGER NOT NULL,
            target_session_id INTEGER,
            state TEXT NOT NULL,
            overwrite TEXT NOT NULL,
            project TEXT NOT NULL,
            subject TEXT NOT NULL,
            label TEXT NOT NULL,
            work_dir TEXT NOT NULL,
            plan TEXT NOT NULL DEFAULT '[]',
            started_at REAL NOT NULL,
            finished_at REAL,
            error TEXT NOT NULL DEFAULT ''
        );
        """
    )


@migrations(name="002_archive_job_identity")
def _m002(db: sqlite_utils.Database) -> None:
    """What a rolled-forward job must record on the archive row: the (new) Study UID and the
    anonymization fingerprint."""
    db.executescript(
        """
        ALTER TABLE archive_jobs ADD COLUMN study_uid TEXT NOT NULL DEFAULT '';
        ALTER TABLE archive_jobs ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
        """
    )


@dataclass(frozen=True)
class SessionRow:
    """A prearchive or archive session as the catalog has it."""

    id: int
    stage: str
    project: str
    subject: str
    label: str
    timestamp: str
    study_instance_uid: str
    status: str
    reason: str
    subject_from: str
    session_from: str
    source: str
    auto_archive: int | None
    prevent_anon: int
    late_for: int | None
    created_at: float
    updated_at: float
    last_received_at: float | None
    built_at: float | None
    archived_at: float | None
    scan_date: str
    scan_time: str
    modalities: str
    scans: int
    instances: int
    bytes: int
    summary: str
    custom: str
    anonymization: str

    @property
    def url(self) -> str:
        if self.stage == PREARCHIVE:
            return f"/prearchive/projects/{self.project}/{self.timestamp}/{self.label}"
        return f"/archive/projects/{self.project}/subjects/{self.subject}/experiments/{self.label}"

    @property
    def ref(self) -> str:
        """A name for logs: no labels, which may be derived from patient names or IDs."""
        return f"session #{self.id} ({self.stage} {self.project})"

    @property
    def relative_dir(self) -> str:
        if self.stage == PREARCHIVE:
            return f"prearchive/{self.project}/{self.timestamp}/{self.label}"
        return f"archive/{self.project}/{self.subject}/{self.label}"

    def custom_fields(self) -> dict[str, Any]:
        return json.loads(self.custom or "{}")


@dataclass(frozen=True)
class NewInstance:
    """What ingest hands the catalog for one durable file."""

    scan_id: str
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    series_number: str
    series_description: str
    modality: str
    study_date: str
    study_time: str
    transfer_syntax: str
    size: int
    sha256: str
    path: str
    source: str


NEW_INSTANCE_FIELDS = tuple(f.name for f in dataclasses.fields(NewInstance))


@dataclass(frozen=True)
class InstanceRow(NewInstance):
    """An instance as the catalog has it: what ingest recorded, plus the row's own columns."""

    id: int
    session_id: int
    received_at: float


@dataclass(frozen=True)
class QuarantineRow:
    id: int
    at: float
    source: str
    reason: str
    path: str
    size: int
    sop_instance_uid: str
    status: str


def _row(cls: type[T], cursor: sqlite3.Cursor, row: Sequence[Any] | None) -> T | None:
    if row is None:
        return None
    names = [d[0] for d in cursor.description]
    return cls(**dict(zip(names, row)))  # type: ignore[call-arg]


def _rows(cls: type[T], cursor: sqlite3.Cursor) -> list[T]:
    names = [d[0] for d in cursor.description]
    return [cls(**dict(zip(names, row))) for row in cursor.fetchall()]  # type: ignore[call-arg]


class _Job:
    __slots__ = ("fn", "future", "durable", "sync_dirs")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], durable: bool, sync_dirs: Sequence[Path]) -> None:
        self.fn = fn
        self.future: Future[Any] = Future()
        self.durable = durable
        self.sync_dirs = sync_dirs


class Catalog:
    """The catalog database. Thread-safe; one per process."""

    def __init__(self, path: Path, *, batch_max: int = 256) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._local = threading.local()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._batch_max = batch_max
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()
        self._closed = False
        self._synchronous_full = True
        self._migrate()

    # ------------------------------------------------------------ connections

    def _connect(self) -> sqlite3.Connection:
        existed = self.path.exists()
        conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        if not existed:
            os.chmod(self.path, 0o600)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _migrate(self) -> None:
        self.apply_migrations(migrations)

    def apply_migrations(self, migration_set: Migrations) -> None:
        """Apply a named migration set to the catalog file (other modules keep their tables here too)."""
        conn = self._connect()
        try:
            migration_set.apply(sqlite_utils.Database(conn))
        finally:
            conn.close()

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
        return conn

    def write(self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = True,
              sync_dirs: Sequence[Path] = ()) -> T:
        """Run ``fn(conn)`` inside a committed transaction and return its result.

        Calls from many threads are committed together; a call whose ``fn`` raises is rolled back
        alone (savepoint) and re-raises in its caller. A failed COMMIT fails every call in it.
        ``sync_dirs`` are fsync'd (once per batch) before the commit. ``durable=False`` lets the
        batch commit without an fsync of the WAL (synchronous=NORMAL): the commit survives a process
        crash, and after a power loss the start-up scan re-adopts fsync'd files from disk. Only
        ingest uses it; operations that move data stay fully synchronous.
        """
        if self._closed:
            raise StorageFailure("the catalog is closed")
        self._ensure_writer()
        job = _Job(fn, durable, sync_dirs)
        self._queue.put(job)
        return job.future.result()

    def _ensure_writer(self) -> None:
        if self._writer is not None:
            return
        with self._writer_lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_loop, name="catalog-writer", daemon=True)
                self._writer.start()

    def _write_loop(self) -> None:
        conn = self._connect()
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            stop = False
            while len(batch) < self._batch_max:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            self._commit_batch(conn, batch)
            if stop:
                break
        conn.close()

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        results: list[tuple[_Job, bool, Any]] = []
        try:
            for folder in {d for job in batch for d in job.sync_dirs}:
                fsync_dir(folder)
            durable = any(job.durable for job in batch)
            if durable != self._synchronous_full:
                conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._synchronous_full = durable
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                conn.execute("SAVEPOINT job")
                try:
                    value = job.fn(conn)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append((job, False, exc))
                else:
                    conn.execute("RELEASE job")
                    results.append((job, True, value))
            conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            logger.error("catalog commit failed: %s", exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            failure = StorageFailure(f"catalog write failed: {exc}")
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(failure)
            return
        for job, ok, value in results:
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    def close(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=10)
            self._writer = None
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ------------------------------------------------------------ projects

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

    # ------------------------------------------------------------ sessions: reads

    def session(self, session_id: int) -> SessionRow:
        cur = self.reader().execute("SELECT * FROM sessions WHERE id = ?", (session_id,))
        row = _row(SessionRow, cur, cur.fetchone())
        if row is None:
            raise NotFound(f"no session with id {session_id}")
        return row

    def find_session(self, stage: str, project: str, timestamp: str, label: str) -> SessionRow | None:
        if stage == PREARCHIVE:
            sql = "SELECT * FROM sessions WHERE stage=? AND project=? AND timestamp=? AND label=?"
            args: tuple[Any, ...] = (stage, project, timestamp, label)
        else:
            sql = "SELECT * FROM sessions WHERE stage=? AND project=? AND label=?"
            args = (stage, project, label)
        cur = self.reader().execute(sql, args)
        return _row(SessionRow, cur, cur.fetchone())

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
        sql = "SELECT * FROM sessions WHERE stage = ?"
        args: list[Any] = [stage]
        if projects:
            sql += f" AND project IN ({','.join('?' * len(projects))})"
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
        cur = self.reader().execute(sql, args)
        return _rows(SessionRow, cur)

    def sessions_by_key(self, stage: str, project: str, study_uid: str, label: str) -> list[SessionRow]:
        cur = self.reader().execute(
            "SELECT * FROM sessions WHERE stage=? AND project=? AND study_instance_uid=? AND label=? ORDER BY id DESC",
            (stage, project, study_uid, label),
        )
        return _rows(SessionRow, cur)

    def archived_study(self, project: str, study_uid: str) -> SessionRow | None:
        cur = self.reader().execute(
            "SELECT * FROM sessions WHERE stage='archive' AND project=? AND study_instance_uid=? ORDER BY id LIMIT 1",
            (project, study_uid),
        )
        return _row(SessionRow, cur, cur.fetchone())

    def idle_sessions(self, older_than: float) -> list[SessionRow]:
        """RECEIVING sessions idle since ``older_than``, and builds stuck since then (a build whose
        last write failed, e.g. on a full disk, is retried instead of staying BUILDING)."""
        cur = self.reader().execute(
            "SELECT * FROM sessions WHERE stage='prearchive' AND ((status='RECEIVING' AND last_received_at < ?)"
            " OR (status='BUILDING' AND updated_at < ?))",
            (older_than, older_than),
        )
        return _rows(SessionRow, cur)

    def sessions_in(self, stage: str, statuses: Sequence[str]) -> list[SessionRow]:
        cur = self.reader().execute(
            f"SELECT * FROM sessions WHERE stage=? AND status IN ({','.join('?' * len(statuses))})",
            (stage, *statuses),
        )
        return _rows(SessionRow, cur)

    def instances(self, session_id: int, scan_id: str | None = None) -> list[InstanceRow]:
        sql = "SELECT * FROM instances WHERE session_id = ?"
        args: list[Any] = [session_id]
        if scan_id is not None:
            sql += " AND scan_id = ?"
            args.append(scan_id)
        cur = self.reader().execute(sql + " ORDER BY scan_id, path", args)
        return _rows(InstanceRow, cur)

    def instance_by_uid(self, sop_instance_uid: str) -> list[InstanceRow]:
        cur = self.reader().execute("SELECT * FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,))
        return _rows(InstanceRow, cur)

    def scans(self, session_id: int) -> list[dict[str, Any]]:
        cur = self.reader().execute(
            "SELECT * FROM scans WHERE session_id = ? ORDER BY CAST(scan_id AS INTEGER), scan_id", (session_id,)
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def history(self, session_id: int) -> list[dict[str, Any]]:
        cur = self.reader().execute(
            "SELECT at, status, reason, actor FROM history WHERE session_id = ? ORDER BY id", (session_id,)
        )
        return [dict(zip(("at", "status", "reason", "actor"), r)) for r in cur.fetchall()]

    def status_counts(self, projects: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
        """stage -> status -> sessions, of ``projects`` only when given."""
        where = f" WHERE project IN ({','.join('?' * len(projects))})" if projects is not None else ""
        cur = self.reader().execute(
            f"SELECT stage, status, COUNT(*) FROM sessions{where} GROUP BY stage, status", tuple(projects or ()))
        counts: dict[str, dict[str, int]] = {}
        for stage, status, n in cur.fetchall():
            counts.setdefault(stage, {})[status] = n
        return counts

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

    # ------------------------------------------------------------ sessions: writes (inside txn)

    @staticmethod
    def _unique_timestamp(conn: sqlite3.Connection, project: str, label: str, now: float) -> str:
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

    @staticmethod
    def record_history(conn: sqlite3.Connection, session_id: int, status: str, reason: str = "", actor: str = "") -> None:
        conn.execute(
            "INSERT INTO history(session_id, at, status, reason, actor) VALUES (?,?,?,?,?)",
            (session_id, time.time(), status, reason, actor),
        )

    @staticmethod
    def record_event(conn: sqlite3.Connection, kind: str, detail: dict[str, Any], session_id: int | None = None) -> None:
        conn.execute(
            "INSERT INTO events(at, kind, session_id, detail) VALUES (?,?,?,?)",
            (time.time(), kind, session_id, json.dumps(detail, default=str)),
        )

    def event(self, kind: str, detail: dict[str, Any], session_id: int | None = None) -> None:
        self.write(lambda conn: self.record_event(conn, kind, detail, session_id))

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
        """The prearchive session new data for this key joins; created (RECEIVING) if none can take it."""

        def txn(conn: sqlite3.Connection) -> SessionRow:
            cur = conn.execute(
                "SELECT * FROM sessions WHERE stage='prearchive' AND project=? AND study_instance_uid=? AND label=?"
                f" AND status IN ({','.join('?' * len(RECEIVABLE))}) ORDER BY id DESC LIMIT 1",
                (project, study_uid, label, *RECEIVABLE),
            )
            existing = _row(SessionRow, cur, cur.fetchone())
            if existing is not None:
                return existing
            now = time.time()
            stamp = self._unique_timestamp(conn, project, label, now)
            archived = conn.execute(
                "SELECT id FROM sessions WHERE stage IN ('archive') AND project=? AND study_instance_uid=? LIMIT 1",
                (project, study_uid),
            ).fetchone()
            busy = conn.execute(
                "SELECT id FROM sessions WHERE stage='prearchive' AND project=? AND study_instance_uid=? AND label=?"
                " AND status IN ('ARCHIVING','MOVING') LIMIT 1",
                (project, study_uid, label),
            ).fetchone()
            late_for = archived[0] if archived else (busy[0] if busy else None)
            cur = conn.execute(
                "INSERT INTO sessions(stage, project, subject, label, timestamp, study_instance_uid, status,"
                " subject_from, session_from, source, auto_archive, prevent_anon, late_for, created_at,"
                " updated_at, last_received_at) VALUES ('prearchive',?,?,?,?,?,'RECEIVING',?,?,?,?,?,?,?,?,?)",
                (
                    project, subject, label, stamp, study_uid, subject_from, session_from, source,
                    None if auto_archive is None else int(auto_archive), int(prevent_anon), late_for, now, now, now,
                ),
            )
            session_id = int(cur.lastrowid or 0)
            reason = "late data for a study being archived or archived" if late_for else "new session"
            self.record_history(conn, session_id, RECEIVING, reason, source)
            row = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,))
            return _row(SessionRow, row, row.fetchone())  # type: ignore[return-value]

        return self.write(txn)

    def adopt_session(self, *, project: str, timestamp: str, label: str, study_uid: str, subject: str) -> SessionRow:
        """Recreate the row of a prearchive session folder found on disk (RECEIVING: it is rebuilt)."""

        def txn(conn: sqlite3.Connection) -> SessionRow:
            now = time.time()
            cur = conn.execute(
                "INSERT INTO sessions(stage, project, subject, label, timestamp, study_instance_uid, status, source,"
                " created_at, updated_at, last_received_at) VALUES ('prearchive',?,?,?,?,?,'RECEIVING','recovered',?,?,?)",
                (project, subject, label, timestamp, study_uid, now, now, now),
            )
            session_id = int(cur.lastrowid or 0)
            self.record_history(conn, session_id, RECEIVING, "recovered from disk", "recovery")
            row = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,))
            return _row(SessionRow, row, row.fetchone())  # type: ignore[return-value]

        return self.write(txn)

    def add_instance(self, session_id: int, inst: NewInstance, sync_dir: Path | None = None) -> str:
        """Record a durable file in a prearchive session.

        Returns "added", "replaced", "duplicate" (same bytes already there) or "moved" (the session
        no longer takes data: ingest must put the file in another session).
        """

        def txn(conn: sqlite3.Connection) -> str:
            status_row = conn.execute("SELECT status FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if status_row is None or status_row[0] not in RECEIVABLE:
                return "moved"
            now = time.time()
            old = conn.execute(
                "SELECT id, sha256, size, path FROM instances WHERE session_id=? AND sop_instance_uid=?",
                (session_id, inst.sop_instance_uid),
            ).fetchone()
            outcome = "added"
            if old is not None:
                if old[1] == inst.sha256:
                    outcome = "duplicate"
                else:
                    outcome = "replaced"
                conn.execute("DELETE FROM instances WHERE id = ?", (old[0],))
                conn.execute(
                    "UPDATE sessions SET instances = instances - 1, bytes = bytes - ? WHERE id = ?", (old[2], session_id)
                )
            self._insert_instance(conn, session_id, inst, now)
            new_scan = conn.execute(
                "SELECT COUNT(*) FROM (SELECT 1 FROM instances WHERE session_id=? AND scan_id=? LIMIT 2)",
                (session_id, inst.scan_id),
            ).fetchone()[0] == 1
            conn.execute(
                "UPDATE sessions SET instances = instances + 1, bytes = bytes + ?, scans = scans + ?,"
                " last_received_at = ?, updated_at = ?, status = 'RECEIVING' WHERE id = ?",
                (inst.size, int(new_scan), now, now, session_id),
            )
            if status_row[0] != RECEIVING:
                self.record_history(conn, session_id, RECEIVING, f"new data while {status_row[0]}")
            if outcome == "replaced":
                self.record_event(
                    conn, "instance_replaced", {"sop_instance_uid": inst.sop_instance_uid}, session_id
                )
            return outcome

        return self.write(txn, durable=False, sync_dirs=(sync_dir,) if sync_dir else ())

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
        """Change a session's status, atomically checking its current status is one of ``expect``."""

        def txn(conn: sqlite3.Connection) -> SessionRow:
            current = conn.execute("SELECT status FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if current is None:
                raise NotFound(f"session {session_id} no longer exists")
            if expect is not None and current[0] not in expect:
                raise InvalidState(f"session is {current[0]}, not {' or '.join(expect)}")
            sets = {"status": status, "reason": reason, "updated_at": time.time(), **(extra or {})}
            conn.execute(
                f"UPDATE sessions SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                (*sets.values(), session_id),
            )
            self.record_history(conn, session_id, status, reason, actor)
            cur = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,))
            return _row(SessionRow, cur, cur.fetchone())  # type: ignore[return-value]

        return self.write(txn)

    def finish_build(self, session_id: int, fields: dict[str, Any], status: str, reason: str,
                     scan_fields: dict[str, dict[str, Any]] | None = None) -> SessionRow | None:
        """Record a build's summary; only if the session is still BUILDING (new data wins)."""

        def txn(conn: sqlite3.Connection) -> SessionRow | None:
            current = conn.execute("SELECT status FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if current is None or current[0] != BUILDING:
                return None
            self._refresh_counts(conn, session_id)
            conn.executemany(
                "UPDATE scans SET custom=? WHERE session_id=? AND scan_id=?",
                [(json.dumps(v), session_id, k) for k, v in (scan_fields or {}).items()],
            )
            sets = {**fields, "status": status, "reason": reason, "built_at": time.time(), "updated_at": time.time()}
            conn.execute(
                f"UPDATE sessions SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?", (*sets.values(), session_id)
            )
            self.record_history(conn, session_id, status, reason, "build")
            cur = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,))
            return _row(SessionRow, cur, cur.fetchone())

        return self.write(txn)

    def delete_session_rows(self, session_id: int, reason: str, actor: str = "") -> None:
        def txn(conn: sqlite3.Connection) -> None:
            self.record_event(conn, "session_deleted", {"reason": reason, "actor": actor}, session_id)
            conn.execute("DELETE FROM instances WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM scans WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))

        self.write(txn)

    def drop_if_empty(self, session_id: int) -> bool:
        """Delete a prearchive session that never got an instance (its first store failed);
        atomic against a concurrent add_instance, which then finds it gone and re-routes."""

        def txn(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                f"DELETE FROM sessions WHERE id = ? AND stage = 'prearchive' AND status IN ({','.join('?' * len(RECEIVABLE))})"
                " AND NOT EXISTS (SELECT 1 FROM instances WHERE session_id = ?)",
                (session_id, *RECEIVABLE, session_id),
            )
            if cur.rowcount:
                conn.execute("DELETE FROM scans WHERE session_id = ?", (session_id,))
                self.record_event(conn, "session_deleted", {"reason": "empty", "actor": "build"}, session_id)
            return bool(cur.rowcount)

        return self.write(txn)

    def remove_instance_rows(self, ids: Sequence[int]) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            for i in ids:
                row = conn.execute("SELECT session_id, size FROM instances WHERE id = ?", (i,)).fetchone()
                if row:
                    conn.execute("DELETE FROM instances WHERE id = ?", (i,))
                    conn.execute(
                        "UPDATE sessions SET instances = instances - 1, bytes = bytes - ? WHERE id = ?", (row[1], row[0])
                    )

        self.write(txn)

    # ------------------------------------------------------------ quarantine

    def add_quarantine(self, *, source: str, reason: str, path: str, size: int, sop_instance_uid: str = "") -> int:
        def txn(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "INSERT INTO quarantine(at, source, reason, path, size, sop_instance_uid) VALUES (?,?,?,?,?,?)",
                (time.time(), source, reason, path, size, sop_instance_uid),
            )
            self.record_event(conn, "quarantined", {"source": source, "reason": reason, "path": path})
            return int(cur.lastrowid or 0)

        return self.write(txn)

    def quarantine(self, status: str | None = "held") -> list[QuarantineRow]:
        sql = "SELECT * FROM quarantine"
        args: tuple[Any, ...] = ()
        if status:
            sql += " WHERE status = ?"
            args = (status,)
        cur = self.reader().execute(sql + " ORDER BY id DESC", args)
        return _rows(QuarantineRow, cur)

    def quarantine_entry(self, entry_id: int) -> QuarantineRow:
        cur = self.reader().execute("SELECT * FROM quarantine WHERE id = ?", (entry_id,))
        row = _row(QuarantineRow, cur, cur.fetchone())
        if row is None:
            raise NotFound(f"no quarantine entry {entry_id}")
        return row

    def set_quarantine_status(self, entry_id: int, status: str) -> None:
        self.write(lambda conn: conn.execute("UPDATE quarantine SET status = ? WHERE id = ?", (status, entry_id)))

    # ------------------------------------------------------------ archive jobs

    def archive_jobs(self, states: Sequence[str]) -> list[dict[str, Any]]:
        cur = self.reader().execute(
            f"SELECT * FROM archive_jobs WHERE state IN ({','.join('?' * len(states))}) ORDER BY id", tuple(states)
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def iter_all_instance_paths(self) -> Iterator[tuple[int, int, str, int]]:
        cur = self.reader().execute("SELECT id, session_id, path, size FROM instances")
        yield from cur

    def begin_archive(self, session_id: int, *, overwrite: str, actor: str, work_dir: str) -> int:
        """Take a prearchive session for archiving (one caller wins); returns the job id."""

        def txn(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT status, stage, project FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None or row[1] != PREARCHIVE:
                raise NotFound(f"no prearchive session {session_id}")
            if row[0] not in ARCHIVABLE:
                raise InvalidState(f"session is {row[0]}; it can be archived only when {', '.join(ARCHIVABLE)}")
            now = time.time()
            conn.execute(
                "UPDATE sessions SET status='ARCHIVING', reason='', updated_at=? WHERE id=?", (now, session_id)
            )
            self.record_history(conn, session_id, ARCHIVING, f"overwrite={overwrite}", actor)
            cur = conn.execute(
                "INSERT INTO archive_jobs(session_id, state, overwrite, project, subject, label, work_dir, started_at)"
                " VALUES (?, 'staging', ?, ?, '', '', ?, ?)",
                (session_id, overwrite, row[2], work_dir, now),
            )
            return int(cur.lastrowid or 0)

        return self.write(txn)

    def plan_archive(self, job_id: int, subject: str, label: str, plan: list[dict[str, Any]], *,
                     study_uid: str = "", fingerprint: str = "") -> None:
        """The point of no return: from here a restart rolls the job forward."""
        self.write(
            lambda conn: conn.execute(
                "UPDATE archive_jobs SET state='moving', subject=?, label=?, plan=?, study_uid=?, fingerprint=?"
                " WHERE id=?",
                (subject, label, json.dumps(plan), study_uid, fingerprint, job_id),
            )
        )

    def fail_archive(self, job_id: int, session_id: int, status: str, reason: str, actor: str = "") -> None:
        def txn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE archive_jobs SET state='failed', error=?, finished_at=? WHERE id=?", (reason, time.time(), job_id)
            )
            conn.execute(
                "UPDATE sessions SET status=?, reason=?, updated_at=? WHERE id=? AND status='ARCHIVING'",
                (status, reason, time.time(), session_id),
            )
            self.record_history(conn, session_id, status, reason, actor)

        self.write(txn)

    def job(self, job_id: int) -> dict[str, Any]:
        cur = self.reader().execute("SELECT * FROM archive_jobs WHERE id = ?", (job_id,))
        names = [d[0] for d in cur.description]
        row = cur.fetchone()
        if row is None:
            raise NotFound(f"no archive job {job_id}")
        return dict(zip(names, row))

    def commit_archive(
        self,
        job: dict[str, Any],
        *,
        study_uid: str,
        session_fields: dict[str, Any],
        actor: str = "",
    ) -> int:
        """Swap catalog rows from the prearchive session to the archive session; returns its id."""
        plan: list[dict[str, Any]] = json.loads(job["plan"])

        def txn(conn: sqlite3.Connection) -> int:
            state = conn.execute("SELECT state FROM archive_jobs WHERE id=?", (job["id"],)).fetchone()
            if state and state[0] == "done":
                existing = conn.execute("SELECT target_session_id FROM archive_jobs WHERE id=?", (job["id"],))
                return int(existing.fetchone()[0])
            now = time.time()
            pre = conn.execute("SELECT * FROM sessions WHERE id=?", (job["session_id"],))
            pre_row = _row(SessionRow, pre, pre.fetchone())
            target = conn.execute(
                "SELECT id FROM sessions WHERE stage='archive' AND project=? AND label=?", (job["project"], job["label"])
            ).fetchone()
            if target is None:
                cur = conn.execute(
                    "INSERT INTO sessions(stage, project, subject, label, study_instance_uid, status, source,"
                    " created_at, updated_at, archived_at, anonymization) VALUES ('archive',?,?,?,?,'ARCHIVED',?,?,?,?,?)",
                    (
                        job["project"], job["subject"], job["label"], study_uid,
                        pre_row.source if pre_row else "", now, now, now, session_fields.get("anonymization", ""),
                    ),
                )
                target_id = int(cur.lastrowid or 0)
            else:
                target_id = int(target[0])
                if job["overwrite"] == "delete":
                    conn.execute("DELETE FROM instances WHERE session_id=?", (target_id,))
            for item in plan:
                conn.execute(
                    "DELETE FROM instances WHERE session_id=? AND sop_instance_uid=?", (target_id, item["sop_instance_uid"])
                )
                archived = NewInstance(**{k: item[k] for k in NEW_INSTANCE_FIELDS if k != "path"}, path=item["final"])
                self._insert_instance(conn, target_id, archived, item["received_at"])
            self._refresh_counts(conn, target_id)
            # mapped custom fields follow the data (extracted at build, from the data as archived)
            pre_scans = conn.execute(
                "SELECT scan_id, custom FROM scans WHERE session_id=? AND custom != '{}'", (job["session_id"],)
            ).fetchall()
            conn.executemany(
                "UPDATE scans SET custom=? WHERE session_id=? AND scan_id=?",
                [(custom, target_id, scan_id) for scan_id, custom in pre_scans],
            )
            old_custom = conn.execute("SELECT custom FROM sessions WHERE id=?", (target_id,)).fetchone()[0]
            merged = {**json.loads(old_custom or "{}"), **json.loads(pre_row.custom if pre_row else "{}")}
            sets = {**session_fields, "custom": json.dumps(merged), "updated_at": now, "archived_at": now,
                    "subject": job["subject"]}
            conn.execute(
                f"UPDATE sessions SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?", (*sets.values(), target_id)
            )
            self.record_history(conn, target_id, ARCHIVED, f"from {pre_row.ref if pre_row else '?'}", actor)
            self.record_event(
                conn, "archived", {"job": job["id"], "instances": len(plan), "overwrite": job["overwrite"]}, target_id
            )
            conn.execute("DELETE FROM instances WHERE session_id=?", (job["session_id"],))
            conn.execute("DELETE FROM scans WHERE session_id=?", (job["session_id"],))
            conn.execute("DELETE FROM sessions WHERE id=?", (job["session_id"],))
            conn.execute(
                "UPDATE archive_jobs SET state='done', target_session_id=?, finished_at=? WHERE id=?",
                (target_id, now, job["id"]),
            )
            return target_id

        return self.write(txn)

    def finish_job(self, job_id: int) -> None:
        self.write(lambda conn: conn.execute("UPDATE archive_jobs SET state='clean' WHERE id=?", (job_id,)))

    @staticmethod
    def _insert_instance(conn: sqlite3.Connection, session_id: int, inst: NewInstance, received_at: float, *,
                         replace: bool = False) -> None:
        """The one INSERT of an instance row (ingest, archive commit, adoption from disk)."""
        columns = ("session_id", *NEW_INSTANCE_FIELDS, "received_at")
        conn.execute(
            f"INSERT {'OR REPLACE ' if replace else ''}INTO instances({', '.join(columns)})"
            f" VALUES ({', '.join('?' * len(columns))})",
            (session_id, *(getattr(inst, k) for k in NEW_INSTANCE_FIELDS), received_at),
        )

    @staticmethod
    def _refresh_counts(conn: sqlite3.Connection, session_id: int) -> None:
        """Recompute a session's scans table, counts, modalities and dates from its instance rows."""
        old_custom = dict(conn.execute("SELECT scan_id, custom FROM scans WHERE session_id=?", (session_id,)).fetchall())
        conn.execute("DELETE FROM scans WHERE session_id=?", (session_id,))
        conn.execute(
            "INSERT INTO scans(session_id, scan_id, series_instance_uid, series_number, description, modality,"
            " instances, bytes) SELECT session_id, scan_id, MIN(series_instance_uid), MIN(series_number),"
            " MIN(series_description), MIN(modality), COUNT(*), SUM(size) FROM instances WHERE session_id=?"
            " GROUP BY scan_id",
            (session_id,),
        )
        conn.executemany(
            "UPDATE scans SET custom=? WHERE session_id=? AND scan_id=?",
            [(c, session_id, sid) for sid, c in old_custom.items()],
        )
        conn.execute(
            "UPDATE sessions SET instances=(SELECT COUNT(*) FROM instances WHERE session_id=:s),"
            " bytes=(SELECT COALESCE(SUM(size),0) FROM instances WHERE session_id=:s),"
            " scans=(SELECT COUNT(*) FROM scans WHERE session_id=:s),"
            " modalities=COALESCE((SELECT GROUP_CONCAT(m, ',') FROM (SELECT DISTINCT modality AS m FROM instances"
            "   WHERE session_id=:s AND modality != '' ORDER BY m)), ''),"
            " scan_date=COALESCE((SELECT MIN(study_date) FROM instances WHERE session_id=:s AND study_date != ''), ''),"
            " scan_time=COALESCE((SELECT MIN(study_time) FROM instances WHERE session_id=:s AND study_time != ''), '')"
            " WHERE id=:s",
            {"s": session_id},
        )

    def refresh_counts(self, session_id: int) -> None:
        self.write(lambda conn: self._refresh_counts(conn, session_id))

    def move_session(self, session_id: int, new_project: str, new_timestamp_dir: str, paths: dict[int, str],
                     actor: str = "") -> None:
        """Re-home a prearchive session's rows after its folder moved to another project."""

        def txn(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE sessions SET project=?, timestamp=?, status='RECEIVING', last_received_at=?, updated_at=?"
                " WHERE id=?",
                (new_project, new_timestamp_dir, time.time(), time.time(), session_id),
            )
            conn.executemany("UPDATE instances SET path=? WHERE id=?", [(p, i) for i, p in paths.items()])
            self.record_history(conn, session_id, RECEIVING, f"moved to project {new_project}", actor)

        self.write(txn)

    def unique_timestamp(self, project: str, label: str) -> str:
        return self.write(lambda conn: self._unique_timestamp(conn, project, label, time.time()))

    def add_instance_rows(self, session_id: int, rows: list[NewInstance]) -> None:
        def txn(conn: sqlite3.Connection) -> None:
            for inst in rows:
                self._insert_instance(conn, session_id, inst, time.time(), replace=True)
            self._refresh_counts(conn, session_id)

        self.write(txn)
