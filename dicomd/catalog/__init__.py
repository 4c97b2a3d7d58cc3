"""The catalog (SQLite or PostgreSQL): every SQL statement dicomd's sessions, instances, archive jobs,
quarantine and history run, one module per table group.

One `Catalog` per process, composed of the per-concept parts below over one `Engine` (the
file, its readers and the group-commit writer):

  engine.py      connections, migrations, readers, group commit (SQLite or PostgreSQL)
  pg.py          PostgreSQL connections in sqlite3's shape (placeholders, the reader pool)
  schema.py      the named migrations of the catalog's own tables
  rows.py        the frozen rows (SessionRow, InstanceRow, ArchiveJob, PlanItem, ...)
  sessions.py    finding, opening and changing sessions
  instances.py   instance rows, scans and counts
  jobs.py        archive jobs
  quarantine.py  quarantined files
  events.py      status history and the event log
  arrivals.py    what arrived through each way in (for `dicomd status`)
  projects.py    the configured projects
  receivers.py   DICOM receivers added over the API
  processors.py  the order and enabled flags of the archive-time steps
  nodes.py       the nodes sharing the catalog, their heartbeats and claims (dicomd.cluster)
  locks.py       the same-key lock of ingest: flock on SQLite, advisory locks on PostgreSQL

The rules of the session lifecycle (statuses, which may follow which) are in dicomd.lifecycle.
"""

from __future__ import annotations

from pathlib import Path

from dicomd.dburl import DatabaseUrl

from dicomd.catalog import schema
from dicomd.catalog.arrivals import Arrivals
from dicomd.catalog.engine import Engine
from dicomd.catalog.events import Events
from dicomd.catalog.instances import InstanceOutcome, Instances
from dicomd.catalog.jobs import ArchiveJobs
from dicomd.catalog.locks import KeyLock, KeyLocks
from dicomd.catalog.nodes import ClaimRow, NodeRow, Nodes
from dicomd.catalog.projects import Projects
from dicomd.catalog.processors import ProcessorSettings
from dicomd.catalog.quarantine import Quarantine
from dicomd.catalog.receivers import ReceiverRow, Receivers
from dicomd.catalog.rows import ArchiveJob, InstanceFields, InstanceRow, NewInstance, PlanItem, QuarantineRow, SessionRow
from dicomd.catalog.sessions import Sessions
from dicomd.lifecycle import ARCHIVABLE, RECEIVABLE, Stage, Status


class Catalog(Sessions, Instances, ArchiveJobs, Quarantine, Events, Arrivals, Projects, Receivers, ProcessorSettings,
              Nodes, KeyLocks, Engine):
    """The catalog database. Thread-safe; one per process."""

    def __init__(self, target: Path | str | DatabaseUrl, *, batch_max: int = 256) -> None:
        super().__init__(target, batch_max=batch_max)
        self.apply_migrations(schema.migrations)


# The names this module had before dicomd.lifecycle; new code imports Stage and Status from there.
PREARCHIVE, ARCHIVE = Stage.PREARCHIVE, Stage.ARCHIVE
RECEIVING, BUILDING, READY = Status.RECEIVING, Status.BUILDING, Status.READY
ARCHIVING, MOVING, DELETING = Status.ARCHIVING, Status.MOVING, Status.DELETING
ERROR, CONFLICT, ARCHIVED, REVIEW = Status.ERROR, Status.CONFLICT, Status.ARCHIVED, Status.REVIEW

__all__ = [
    "ARCHIVABLE", "ARCHIVE", "ARCHIVED", "ARCHIVING", "ArchiveJob", "BUILDING", "CONFLICT", "Catalog", "ClaimRow", "DELETING",
    "ERROR", "InstanceFields", "InstanceOutcome", "InstanceRow", "KeyLock", "MOVING", "NewInstance", "PREARCHIVE", "PlanItem", "QuarantineRow",
    "NodeRow", "READY", "RECEIVABLE", "RECEIVING", "REVIEW", "ReceiverRow", "SessionRow",
]
