"""The catalog's own tables, as named migrations (set "dicomd"; see dicomd.migrations).

Applied migrations are recorded by name, so these names and bodies never change: a new column or
table is a new migration at the end. Auth and mappings keep their tables in the same file with
their own migration sets, in their own modules; the pseudonym map has its own file under keys/.
"""

from __future__ import annotations

from dicomd.migrations import POSTGRESQL, Migrations, Schema

migrations = Migrations("dicomd")


@migrations(name="001_initial")
def _m001(db: Schema) -> None:
    db.script(
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
def _m002(db: Schema) -> None:
    """What a rolled-forward job must record on the archive row: the (new) Study UID and the
    anonymization fingerprint."""
    db.script(
        """
        ALTER TABLE archive_jobs ADD COLUMN study_uid TEXT NOT NULL DEFAULT '';
        ALTER TABLE archive_jobs ADD COLUMN fingerprint TEXT NOT NULL DEFAULT '';
        """
    )


@migrations(name="003_receivers")
def _m003(db: Schema) -> None:
    """DICOM receivers added over the API (/xapi/dicomscp); the config file's are not stored here."""
    db.script(
        """
        CREATE TABLE receivers (
            id INTEGER PRIMARY KEY,
            ae_title TEXT NOT NULL,
            port INTEGER NOT NULL,
            bind TEXT NOT NULL,
            allowed TEXT NOT NULL DEFAULT '[]',
            project TEXT NOT NULL DEFAULT '',
            prevent_anon INTEGER NOT NULL DEFAULT 0,
            enabled INTEGER NOT NULL DEFAULT 1,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            updated_by TEXT NOT NULL DEFAULT ''
        );
        """
    )


@migrations(name="004_processor_settings")
def _m004(db: Schema) -> None:
    """The order and enabled flags of the archive-time steps (/xapi/processors), per project, with the
    site's defaults under scope ''; a step without a row keeps what the config makes of it."""
    db.script(
        """
        CREATE TABLE processor_settings (
            scope TEXT NOT NULL,
            name TEXT NOT NULL,
            position INTEGER NOT NULL,
            enabled INTEGER NOT NULL,
            updated_at REAL NOT NULL,
            updated_by TEXT NOT NULL DEFAULT '',
            PRIMARY KEY (scope, name)
        );
        """
    )


@migrations(name="005_postgresql_functions")
def _m005(db: Schema) -> None:
    """SQLite's json_extract(text, '$."field"') for the custom-field filters of sessions(), on
    PostgreSQL (nothing to do on SQLite). Only the one-level paths dicomd writes are understood."""
    if db.dialect != POSTGRESQL:
        return
    db.raw(
        "CREATE OR REPLACE FUNCTION json_extract(doc text, path text) RETURNS text LANGUAGE sql IMMUTABLE"
        " AS $fn$ SELECT (doc::jsonb) ->> regexp_replace(regexp_replace(path, '^[$][.]', ''), '^\"(.*)\"$', '\\1')"
        " $fn$"
    )


# Portable SQL (SQLite and PostgreSQL): text ids, float epoch times, no autoincrement.
NODES_DDL = """
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    process TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL DEFAULT 'daemon',
    dicom_ports TEXT NOT NULL DEFAULT '',
    http_port INTEGER,
    version TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL,
    stopped_at REAL
);
CREATE TABLE claims (
    kind TEXT NOT NULL,
    item TEXT NOT NULL,
    node TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    PRIMARY KEY (kind, item)
);
CREATE INDEX claims_node ON claims(node);
"""


@migrations(name="006_nodes")
def _m006(db: Schema) -> None:
    """The nodes (`dicomd serve` processes, and CLI commands while they work) sharing this catalog,
    with their heartbeats, and the work each has claimed (dicomd.cluster)."""
    db.script(NODES_DDL)
