"""Per-project secret keys, keyed pseudonym generation, and the original -> pseudonym map.

The key never leaves this module's database: a SQLite file (owner-only; the default
keys/pseudonyms.sqlite) or a PostgreSQL database of its own (``keys.url``), never the catalog's. Values are generated with dicognito's
generators (names from its name lists, 12-character IDs, the number behind each UID) driven by the
key, so the same original gives the same pseudonym in every run, forever, and nobody without the
key can recompute it.

A key's *derivation version* is stored with it and never changes, so a project's pseudonyms never
change either:

- version 1 (keys created before versions existed): dicognito's Randomizer seeded with the key;
  the patient basis is the raw Patient ID (or the raw name when there is none).
- version 2 (every new key): separate HMAC-SHA256 derivations, one label each, for UIDs, IDs,
  names and the date shift; the patient basis is the Issuer of Patient ID with the Patient ID
  (the same ID from two issuers is two patients), or else the normalized name (case, spaces,
  `^` components and trailing empty components do not matter).

A key belongs to one project, so the same patient in two projects is not linkable; projects that
name the same `key_group` share one key (stored under the name `group:<name>`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
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

import psycopg

from dicomd.catalog.pg import PgConnection
from dicomd.catalog.pg import connect as pg_connect
from dicomd.dburl import DatabaseUrl, mask
from dicomd.errors import Conflict, InvalidInput, StorageFailure

logger = logging.getLogger(__name__)

KEY_BYTES = 32
CURRENT_DERIVATION = 2
DERIVATIONS = (1, 2)
MIN_SHIFT_DAYS = 62  # dicognito's range: dates move back 62 to 730 days
MAX_SHIFT_DAYS = 730

_SCHEMA = """
CREATE TABLE IF NOT EXISTS project_keys (
    project TEXT PRIMARY KEY,
    key BLOB NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS key_derivations (
    project TEXT PRIMARY KEY,
    version INTEGER NOT NULL
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


_KEYS_LOCK = 0x6B657973  # "keys": the advisory lock a key transaction holds on PostgreSQL


class PseudonymStore:
    """One database holding each project's key and its original -> pseudonym rows.

    A SQLite file is created 0600 inside a 0700 directory; a PostgreSQL URL names a database (or
    schema) of its own with its own credentials. Thread-safe: one connection per thread, key
    writes serialised by SQLite's write lock or a PostgreSQL advisory lock.
    """

    def __init__(self, target: Path | DatabaseUrl) -> None:
        self.url = target if isinstance(target, DatabaseUrl) else None
        self.postgresql = bool(self.url and self.url.is_postgresql)
        self.path = Path(self.url.path if self.url and self.url.path else ("" if self.postgresql else target))
        self.where = self.url.masked if self.postgresql and self.url else self.path.name  # for messages
        self._local = threading.local()
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}
        self._versions: dict[str, int] = {}
        self._create()

    def _create(self) -> None:
        if self.postgresql:
            try:
                conn = self._conn()
                for statement in _SCHEMA.replace("BLOB", "BYTEA").split(";"):
                    if statement.strip():
                        conn.execute(statement)
            except psycopg.Error as exc:
                raise StorageFailure(f"pseudonym store {self.where}: {mask(str(exc).strip())}") from None
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(self.path.parent, 0o700)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            os.chmod(self.path, 0o600)
            self._conn().executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StorageFailure(f"pseudonym store {self.path.name}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection | PgConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None and self.postgresql:
            assert self.url is not None
            conn = PgConnection(pg_connect(self.url.dsn))
            conn.execute("SET synchronous_commit TO off")  # as SQLite's NORMAL below; key writes are synchronous
            self._local.conn = conn
        elif conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            # WAL + NORMAL: recording a pair costs no fsync. Pairs are recomputable from the key, so a
            # power cut can only lose map rows, never consistency; the key itself is written FULL.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def project_key(self, project: str) -> bytes:
        """The project's secret key, created on first use and kept forever."""
        return self.key_and_version(project)[0]

    def key_and_version(self, project: str) -> tuple[bytes, int]:
        """The key (created on first use, with the current derivation) and its derivation version.
        A key without a recorded version predates versions: it is version 1."""
        with self._lock:
            if project in self._keys:
                return self._keys[project], self._versions[project]
            conn = self._conn()
            self._begin_key_write(conn)
            try:
                row = conn.execute("SELECT key FROM project_keys WHERE project = ?", (project,)).fetchone()
                if row is None:
                    key = secrets.token_bytes(KEY_BYTES)
                    conn.execute(
                        "INSERT INTO project_keys (project, key, created) VALUES (?, ?, ?)", (project, key, _now())
                    )
                    conn.execute("INSERT INTO key_derivations (project, version) VALUES (?, ?)"
                                 " ON CONFLICT(project) DO UPDATE SET version = excluded.version",
                                 (project, CURRENT_DERIVATION))
                    version = CURRENT_DERIVATION
                    logger.info("created the pseudonym key for %s", project)
                else:
                    key = bytes(row[0])
                    version = self._version_of(conn, project)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                self._end_key_write(conn)
            self._keys[project] = key
            self._versions[project] = version
            return key, version

    def _begin_key_write(self, conn: sqlite3.Connection | PgConnection) -> None:
        """A transaction that writes keys: synchronous, and one at a time across processes."""
        if self.postgresql:
            conn.execute("BEGIN")
            conn.execute("SET LOCAL synchronous_commit TO on")
            conn.execute("SELECT pg_advisory_xact_lock(?)", (_KEYS_LOCK,))
        else:
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("BEGIN IMMEDIATE")

    def _end_key_write(self, conn: sqlite3.Connection | PgConnection) -> None:
        if not self.postgresql:
            conn.execute("PRAGMA synchronous=NORMAL")

    @staticmethod
    def _version_of(conn: sqlite3.Connection | PgConnection, project: str) -> int:
        row = conn.execute("SELECT version FROM key_derivations WHERE project = ?", (project,)).fetchone()
        return int(row[0]) if row else 1

    def has_key(self, project: str) -> bool:
        if project in self._keys:
            return True
        row = self._conn().execute("SELECT 1 FROM project_keys WHERE project = ?", (project,)).fetchone()
        return row is not None

    def export_keys(self) -> list[dict[str, str]]:
        """Every project's key (hex), creation time and derivation version: the backup `dicomd anon key
        export` writes."""
        conn = self._conn()
        rows = conn.execute("SELECT project, key, created FROM project_keys ORDER BY project").fetchall()
        return [{"project": p, "key": bytes(k).hex(), "created": c, "derivation": self._version_of(conn, p)}
                for p, k, c in rows]

    def import_keys(self, rows: list[dict[str, str]]) -> tuple[list[str], list[str]]:
        """Restore keys from a backup: returns (projects added, projects already holding that key).
        A project whose key differs from the backup's is refused whole: pseudonyms must never change."""
        parsed: list[tuple[str, bytes, str, int]] = []
        for i, row in enumerate(rows):
            try:
                project, key, created = str(row["project"]), bytes.fromhex(str(row["key"])), str(row["created"])
                version = int(row.get("derivation", 1))  # backups written before versions hold version 1 keys
            except (KeyError, TypeError, ValueError, AttributeError):
                raise InvalidInput(f"key backup entry {i}: needs project, key (hex) and created") from None
            if len(key) != KEY_BYTES or not project:
                raise InvalidInput(f"key backup entry {i}: a key is {KEY_BYTES} bytes and names its project")
            if version not in DERIVATIONS:
                raise InvalidInput(f"key backup entry {i}: unknown derivation version {version}")
            parsed.append((project, key, created, version))
        added: list[str] = []
        same: list[str] = []
        with self._lock:
            conn = self._conn()
            self._begin_key_write(conn)
            try:
                for project, key, created, version in parsed:
                    row = conn.execute("SELECT key FROM project_keys WHERE project = ?", (project,)).fetchone()
                    if row is None:
                        conn.execute("INSERT INTO project_keys (project, key, created) VALUES (?, ?, ?)",
                                     (project, key, created))
                        conn.execute("INSERT INTO key_derivations (project, version) VALUES (?, ?)"
                                     " ON CONFLICT(project) DO UPDATE SET version = excluded.version",
                                     (project, version))
                        added.append(project)
                    elif bytes(row[0]) == key and self._version_of(conn, project) == version:
                        same.append(project)
                    else:
                        raise Conflict(f"project {project} already has a different key; nothing was imported")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                self._end_key_write(conn)
            self._keys.clear()
            self._versions.clear()
        return added, same

    def record(self, project: str, kind: str, original: str, pseudonym: str) -> None:
        """Remember one original -> pseudonym pair (the first one recorded is kept)."""
        self._conn().execute(
            "INSERT INTO pseudonyms (project, kind, original, pseudonym, first_seen) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT DO NOTHING",
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


class _KeyedRandomizer(Randomizer):
    """dicognito's Randomizer interface over HMAC-SHA256 with one derivation label (version 2)."""

    def __init__(self, key: bytes, label: str) -> None:
        super().__init__(None)
        self._key = hmac.new(key, f"dicomd/v2/{label}".encode(), hashlib.sha256).digest()

    def to_int(self, original_value: str) -> int:
        digest = hmac.new(self._key, str(original_value).encode("utf-8"), hashlib.sha256).digest()
        return int.from_bytes(digest[:16], "big")


def normalize_name(name: str) -> str:
    """A person name as compared for identity: upper case, single spaces, no empty trailing
    components (`Doe^John^^` = `DOE^JOHN` = ` doe ^ john `)."""
    groups = []
    for group in str(name).split("="):
        parts = [re.sub(r"\s+", " ", part).strip().upper() for part in group.split("^")]
        while parts and not parts[-1]:
            parts.pop()
        groups.append("^".join(parts))
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


class Pseudonymizer:
    """Keyed value generation for one project; records what it generated in the store."""

    def __init__(self, project: str, key: bytes, store: PseudonymStore | None, version: int = 1) -> None:
        if version not in DERIVATIONS:
            raise ValueError(f"unknown pseudonym derivation version {version}")
        self.project = project
        self.version = version
        self._store = store
        if version == 1:
            self._randomizer = Randomizer(key.hex())
            uid_rng = id_rng = name_rng = shift_rng = self._randomizer
        else:
            uid_rng, id_rng = _KeyedRandomizer(key, "uid"), _KeyedRandomizer(key, "id")
            name_rng, shift_rng = _KeyedRandomizer(key, "name"), _KeyedRandomizer(key, "date-shift")
        self._uid_rng, self._shift_rng = uid_rng, shift_rng
        self._ids = IDAnonymizer(id_rng, "", "", "PatientID")
        self._names = PNAnonymizer(name_rng)
        self._recorded: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._blank = Dataset()  # read-only context for dicognito's generators
        self._memo: dict[tuple[str, str], str] = {}  # the instances of a study share their patient

    # -- recording -------------------------------------------------------------------------------

    def remember(self, kind: str, original: str, pseudonym: str) -> None:
        if self._store is None or not original:
            return
        with self._lock:
            if (kind, original) in self._recorded:
                return
            self._recorded.add((kind, original))
        self._store.record(self.project, kind, original, pseudonym)

    # -- generators ------------------------------------------------------------------------------

    def new_id(self, original: str) -> str:
        """12 characters A-Z0-9; safe as an archive label."""
        found = self._memo.get(("id", original))
        if found is None:
            elem = DataElement(0x00100020, "LO", str(original))
            self._ids(self._blank, elem)
            found = self._remember_value(("id", original), str(elem.value))
        return found

    def new_name(self, original: str) -> str:
        found = self._memo.get(("name", original))
        if found is None:
            elem = DataElement(0x00100010, "PN", str(original) or " ")
            self._names(self._blank, elem)
            found = self._remember_value(("name", original), str(elem.value))
        return found

    def _remember_value(self, key: tuple[str, str], value: str) -> str:
        if len(self._memo) > 10_000:
            self._memo.clear()
        self._memo[key] = value
        return value

    def new_uid(self, original: str) -> str:
        """A UUID-derived UID (PS3.5 B.2, "2.25." root) from the keyed number for `original`.

        (dicognito's own UIAnonymizer writes "2." + 40 digits, which falls under an ISO arc that is not
        ours to use; the number is the same keyed hash, shaped as a version-3 UUID.)"""
        number = self._uid_rng.to_int(str(original))
        return f"2.25.{uuid.UUID(int=number, version=3).int}"

    def shift_days(self, patient_id: str) -> int:
        """Days to add to this patient's dates: negative, 62 to 730 days back, fixed per patient."""
        span = MAX_SHIFT_DAYS - MIN_SHIFT_DAYS + 1
        prefix = "date-shift:" if self.version == 1 else ""
        return -(MIN_SHIFT_DAYS + self._shift_rng.to_int(prefix + patient_id) % span)

    # -- patient-level pseudonyms (recorded) ----------------------------------------------------

    def patient_basis(self, patient_id: str, patient_name: str, issuer: str = "") -> str:
        """What a patient's pseudonyms derive from (version 1: the raw ID, else the raw name;
        version 2: issuer and ID, else the normalized name)."""
        if self.version == 1:
            return patient_id or patient_name
        patient_id, issuer = patient_id.strip(), issuer.strip()
        if patient_id:
            return f"id:{issuer}|{patient_id}"
        return f"name:{normalize_name(patient_name)}"

    def patient(self, patient_id: str, patient_name: str, issuer: str = "") -> tuple[str, str, int]:
        """(new Patient ID, new Patient Name, date shift in days) for one original patient.

        All three derive from one basis (see `patient_basis`), so a patient keeps the same
        pseudonyms in every study even if the name is spelled differently.
        """
        basis = self.patient_basis(patient_id, patient_name, issuer)
        new_id = self.new_id(basis)
        new_name = self.new_name(basis)
        days = self.shift_days(basis)
        shown = basis
        if self.version > 1:  # the map shows what an operator knows: the ID (with its issuer) or the name
            shown = (f"{patient_id} [{issuer}]" if issuer.strip() else patient_id) if patient_id else patient_name
        if patient_id:
            self.remember("patient_id", shown if self.version > 1 else patient_id, new_id)
        if patient_name:
            self.remember("patient_name", patient_name, new_name)
        self.remember("date_shift_days", shown, str(days))
        return new_id, new_name, days


def well_known_uid(uid: str) -> bool:
    """UIDs defined by the standard (transfer syntaxes, SOP classes, coding schemes...)."""
    return uid.startswith("1.2.840.10008.") or uid in pydicom.uid.UID_dictionary
