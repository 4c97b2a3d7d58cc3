"""The catalog's rows as frozen dataclasses, and the helpers that read them from a cursor."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

from dicomd.layout import SessionRef
from dicomd.lifecycle import JobState

T = TypeVar("T")


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
        return SessionRef.of(self).url

    @property
    def ref(self) -> str:
        """A name for logs: no labels, which may be derived from patient names or IDs."""
        return f"session #{self.id} ({self.stage} {self.project})"

    @property
    def relative_dir(self) -> str:
        return SessionRef.of(self).relative_dir

    def custom_fields(self) -> dict[str, Any]:
        return json.loads(self.custom or "{}")

    def summary_fields(self) -> dict[str, Any]:
        """The build summary (the OCR check's findings under `pixel_text`: counts and boxes only)."""
        return json.loads(self.summary or "{}")


@dataclass(frozen=True)
class InstanceFields:
    """What the catalog records of one instance's header and bytes: shared by what ingest stages,
    what an archive job plans and what a writer wrote."""

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

    def instance_fields(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(InstanceFields)}


@dataclass(frozen=True)
class NewInstance(InstanceFields):
    """What ingest hands the catalog for one durable file."""

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


@dataclass(frozen=True)
class PlanItem(InstanceFields):
    """One file an archive job puts into the archive: where it is staged, where it goes, and the
    instance row it gets there. Stored in the job's ``plan`` column as a JSON object with these keys."""

    work: str  # absolute path of the staged file (work/job-N/...)
    final: str  # its path in the archive, relative to the data directory
    prearchive: str  # the prearchive file it came from (removed once the job is done)
    received_at: float
    source: str

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> PlanItem:
        return cls(**{f.name: item[f.name] for f in dataclasses.fields(cls)})

    def to_json(self) -> dict[str, Any]:
        """Where the file is first, then its instance fields (the key order of every release)."""
        where = {k: getattr(self, k) for k in ("work", "final", "prearchive", "received_at", "source")}
        return {**where, **self.instance_fields()}

    @property
    def dropped(self) -> bool:
        """An instance the project's script rejected: kept in the quarantine, not archived; only
        its prearchive file is removed when the job is done."""
        return not self.final

    def archived_instance(self) -> NewInstance:
        """The instance row it gets in the archive."""
        return NewInstance(**self.instance_fields(), path=self.final, source=self.source)


def plan_to_json(plan: Sequence[PlanItem]) -> str:
    return json.dumps([item.to_json() for item in plan])


def plan_from_json(text: str) -> tuple[PlanItem, ...]:
    return tuple(PlanItem.from_json(item) for item in json.loads(text or "[]"))


@dataclass(frozen=True)
class ArchiveJob:
    """A row of archive_jobs (see dicomd.archive for what each state means)."""

    id: int
    session_id: int  # the prearchive session
    target_session_id: int | None  # the archive session, once committed
    state: JobState
    overwrite: str
    project: str
    subject: str
    label: str
    work_dir: str
    plan: tuple[PlanItem, ...]
    started_at: float
    finished_at: float | None
    error: str
    study_uid: str
    fingerprint: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ArchiveJob:
        return cls(**{**row, "state": JobState(row["state"]), "plan": plan_from_json(row["plan"])})

    @property
    def replaces_archived(self) -> bool:
        """overwrite=delete: the plan replaces everything the archive session held."""
        return self.overwrite == "delete"


def one(cls: type[T], cursor: sqlite3.Cursor) -> T | None:
    """The cursor's next row as ``cls``, or None."""
    row = cursor.fetchone()
    if row is None:
        return None
    names = [d[0] for d in cursor.description]
    return cls(**dict(zip(names, row)))  # type: ignore[call-arg]


def every(cls: type[T], cursor: sqlite3.Cursor) -> list[T]:
    """The cursor's remaining rows as ``cls``."""
    names = [d[0] for d in cursor.description]
    return [cls(**dict(zip(names, row))) for row in cursor.fetchall()]  # type: ignore[call-arg]


def dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    """The cursor's remaining rows as column -> value."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]
