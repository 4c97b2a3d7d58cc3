"""Per-project secret keys, keyed pseudonym generation, and the original -> pseudonym map.

The key never leaves this module's SQLite file (owner-only). Values are generated with dicognito's
seeded generators (names from its name lists, 12-character IDs, the number behind each UID) seeded
with the project key,
so the same original gives the same pseudonym in every run, forever, and nobody without the key can
recompute it. The date shift is derived from the key and the original Patient ID.
"""

from __future__ import annotations

import logging
import os
import secrets
import sqlite3
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pydicom
from dicognito.idanonymizer import IDAnonymizer
from dicognito.pnanonymizer import PNAnonymizer
from dicognito.randomizer import Randomizer
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from dicomd.errors import Conflict, InvalidInput, StorageFailure

logger = logging.getLogger(__name__)

KEY_BYTES = 32
MIN_SHIFT_DAYS = 62  # dicognito's range: dates move back 62 to 730 days
MAX_SHIFT_DAYS = 730

_SCHEMA = """
CREATE TABLE IF NOT EXISTS project_keys (
    project TEXT PRIMARY KEY,
    key BLOB NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pseudonyms (
    project TEXT NOT NULL,
    kind TEXT NOT NULL,
    original TEXT NOT NULL,
    pseudonym TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    PRIMARY KEY (project, kind, original)
);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class PseudonymStore:
    """One SQLite file holding each project's key and its original -> pseudonym rows.

    The file is created 0600 inside a 0700 directory. Thread-safe: one connection per thread,
    writes serialised by SQLite's own locking (with a busy timeout).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}
        self._create()

    def _create(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.path.parent, 0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            os.chmod(self.path, 0o600)
            self._conn().executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StorageFailure(f"pseudonym store {self.path.name}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            # WAL + NORMAL: recording a pair costs no fsync. Pairs are recomputable from the key, so a
            # power cut can only lose map rows, never consistency; the key itself is written FULL.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def project_key(self, project: str) -> bytes:
        """The project's secret key, created on first use and kept forever."""
        with self._lock:
            if project in self._keys:
                return self._keys[project]
            conn = self._conn()
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT key FROM project_keys WHERE project = ?", (project,)).fetchone()
                if row is None:
                    key = secrets.token_bytes(KEY_BYTES)
                    conn.execute(
                        "INSERT INTO project_keys (project, key, created) VALUES (?, ?, ?)", (project, key, _now())
                    )
                    logger.info("created the pseudonym key for project %s", project)
                else:
                    key = bytes(row[0])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                conn.execute("PRAGMA synchronous=NORMAL")
            self._keys[project] = key
            return key

    def has_key(self, project: str) -> bool:
        if project in self._keys:
            return True
        row = self._conn().execute("SELECT 1 FROM project_keys WHERE project = ?", (project,)).fetchone()
        return row is not None

    def export_keys(self) -> list[dict[str, str]]:
        """Every project's key (hex) and creation time: the backup `dicomd anon key export` writes."""
        rows = self._conn().execute("SELECT project, key, created FROM project_keys ORDER BY project").fetchall()
        return [{"project": p, "key": bytes(k).hex(), "created": c} for p, k, c in rows]

    def import_keys(self, rows: list[dict[str, str]]) -> tuple[list[str], list[str]]:
        """Restore keys from a backup: returns (projects added, projects already holding that key).
        A project whose key differs from the backup's is refused whole: pseudonyms must never change."""
        parsed: list[tuple[str, bytes, str]] = []
        for i, row in enumerate(rows):
            try:
                project, key, created = str(row["project"]), bytes.fromhex(str(row["key"])), str(row["created"])
            except (KeyError, TypeError, ValueError):
                raise InvalidInput(f"key backup entry {i}: needs project, key (hex) and created") from None
            if len(key) != KEY_BYTES or not project:
                raise InvalidInput(f"key backup entry {i}: a key is {KEY_BYTES} bytes and names its project")
            parsed.append((project, key, created))
        added: list[str] = []
        same: list[str] = []
        with self._lock:
            conn = self._conn()
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                for project, key, created in parsed:
                    row = conn.execute("SELECT key FROM project_keys WHERE project = ?", (project,)).fetchone()
                    if row is None:
                        conn.execute("INSERT INTO project_keys (project, key, created) VALUES (?, ?, ?)",
                                     (project, key, created))
                        added.append(project)
                    elif bytes(row[0]) == key:
                        same.append(project)
                    else:
                        raise Conflict(f"project {project} already has a different key; nothing was imported")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                conn.execute("PRAGMA synchronous=NORMAL")
            self._keys.clear()
        return added, same

    def record(self, project: str, kind: str, original: str, pseudonym: str) -> None:
        """Remember one original -> pseudonym pair (the first one recorded is kept)."""
        self._conn().execute(
            "INSERT OR IGNORE INTO pseudonyms (project, kind, original, pseudonym, first_seen) VALUES (?, ?, ?, ?, ?)",
            (project, kind, original, pseudonym, _now()),
        )

    def lookup(self, project: str) -> list[dict]:
        """Every recorded pair of a project, for an operator on this machine (never served over HTTP)."""
        rows = self._conn().execute(
            "SELECT kind, original, pseudonym, first_seen FROM pseudonyms WHERE project = ? ORDER BY kind, original",
            (project,),
        ).fetchall()
        return [dict(zip(("kind", "original", "pseudonym", "first_seen"), row)) for row in rows]

    def close(self) -> None:
        """Close this thread's connection (other threads' close when they end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def projects(self) -> list[str]:
        rows = self._conn().execute("SELECT project FROM project_keys ORDER BY project").fetchall()
        return [row[0] for row in rows]


class Pseudonymizer:
    """Keyed value generation for one project; records what it generated in the store."""

    def __init__(self, project: str, key: bytes, store: PseudonymStore | None) -> None:
        self.project = project
        self._store = store
        self._randomizer = Randomizer(key.hex())
        self._ids = IDAnonymizer(self._randomizer, "", "", "PatientID")
        self._names = PNAnonymizer(self._randomizer)
        self._recorded: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    # -- recording -------------------------------------------------------------------------------

    def remember(self, kind: str, original: str, pseudonym: str) -> None:
        if self._store is None or not original:
            return
        with self._lock:
            if (kind, original) in self._recorded:
                return
            self._recorded.add((kind, original))
        self._store.record(self.project, kind, original, pseudonym)

    # -- generators (dicognito's, seeded with the key) -------------------------------------------

    def new_id(self, original: str) -> str:
        """12 characters A-Z0-9; safe as an archive label."""
        elem = DataElement(0x00100020, "LO", str(original))
        self._ids(Dataset(), elem)
        return str(elem.value)

    def new_name(self, original: str) -> str:
        elem = DataElement(0x00100010, "PN", str(original) or " ")
        self._names(Dataset(), elem)
        return str(elem.value)

    def new_uid(self, original: str) -> str:
        """A UUID-derived UID (PS3.5 B.2, "2.25." root) from dicognito's keyed number for `original`.

        (dicognito's own UIAnonymizer writes "2." + 40 digits, which falls under an ISO arc that is not
        ours to use; the number is the same keyed MD5, shaped as a version-3 UUID.)"""
        number = self._randomizer.to_int(str(original))
        return f"2.25.{uuid.UUID(int=number, version=3).int}"

    def shift_days(self, patient_id: str) -> int:
        """Days to add to this patient's dates: negative, 62 to 730 days back, fixed per patient."""
        span = MAX_SHIFT_DAYS - MIN_SHIFT_DAYS + 1
        return -(MIN_SHIFT_DAYS + self._randomizer.to_int("date-shift:" + patient_id) % span)

    # -- patient-level pseudonyms (recorded) ----------------------------------------------------

    def patient(self, patient_id: str, patient_name: str) -> tuple[str, str, int]:
        """(new Patient ID, new Patient Name, date shift in days) for one original patient.

        All three derive from the original Patient ID (or from the name when there is no ID), so a
        patient keeps the same pseudonyms in every study even if the name is spelled differently.
        """
        basis = patient_id or patient_name
        new_id = self.new_id(basis)
        new_name = self.new_name(basis)
        days = self.shift_days(basis)
        if patient_id:
            self.remember("patient_id", patient_id, new_id)
        if patient_name:
            self.remember("patient_name", patient_name, new_name)
        self.remember("date_shift_days", basis, str(days))
        return new_id, new_name, days


def well_known_uid(uid: str) -> bool:
    """UIDs defined by the standard (transfer syntaxes, SOP classes, coding schemes...)."""
    return uid.startswith("1.2.840.10008.") or uid in pydicom.uid.UID_dictionary
