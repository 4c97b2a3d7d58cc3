"""Prearchive session -> archive: conflict checks, overwrite policies, crash-safe commit.

A job goes through three recorded states:
  staging  files are written (anonymized or hard-linked) into work/{job}; nothing in the archive
           has changed. A crash here rolls back: the work folder is removed, the session is READY.
  moving   the plan is recorded; files are renamed into the archive (idempotent), then one catalog
           transaction swaps the rows. A crash here rolls forward.
  done     rows are swapped; the prearchive copy and the work folder are removed (idempotent).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dicomd import storage
from dicomd.catalog import CONFLICT, ERROR, READY, RECEIVING, REVIEW, Catalog, InstanceRow, SessionRow
from dicomd.config import Config
from dicomd.errors import Conflict, DicomdError, HeldForReview, InvalidState, Rejected
from dicomd.layout import Layout
from dicomd.logsafe import escape
from dicomd.reliability import crashpoint
from dicomd.routing import UNASSIGNED

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Written:
    """One instance as written into the work folder."""

    relpath: str  # inside the session folder: SCANS/{scan}/DICOM/{name}
    scan_id: str
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    series_number: str
    series_description: str
    modality: str
    study_date: str
    study_time: str
    transfer_syntax: str
    size: int
    sha256: str


class SessionWriter(Protocol):
    """Turns prearchive files into archive files for one session (identity, or anonymization)."""

    fingerprint: str

    def labels(self) -> tuple[str, str]:
        """(subject, session label) in the archive."""

    def write(self, src: Path, inst: InstanceRow, work_dir: Path) -> Written | None:
        """Write the archived form of ``src`` under ``work_dir``; None drops the instance."""

    def review_reason(self) -> str | None:
        """Why the session must wait for a person (burned-in annotation, ...), or None."""


class WriterFactory(Protocol):
    def __call__(self, session: SessionRow) -> SessionWriter: ...


class CopyWriter:
    """No anonymization: hard-link each file (same bytes, no copy)."""

    fingerprint = ""

    def __init__(self, session: SessionRow) -> None:
        self.session = session

    def labels(self) -> tuple[str, str]:
        return self.session.subject or "unknown", self.session.label

    def review_reason(self) -> str | None:
        return None

    def write(self, src: Path, inst: InstanceRow, work_dir: Path) -> Written:
        rel = f"SCANS/{inst.scan_id}/DICOM/{Layout.instance_name(inst.sop_instance_uid)}"
        dst = work_dir / rel
        storage.ensure_dir(dst.parent)
        if dst.exists():
            dst.unlink()
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        return Written(
            relpath=rel,
            scan_id=inst.scan_id,
            sop_instance_uid=inst.sop_instance_uid,
            sop_class_uid=inst.sop_class_uid,
            study_instance_uid=self.session.study_instance_uid,
            series_instance_uid=inst.series_instance_uid,
            series_number=inst.series_number,
            series_description=inst.series_description,
            modality=inst.modality,
            study_date=inst.study_date,
            study_time=inst.study_time,
            transfer_syntax=inst.transfer_syntax,
            size=inst.size,
            sha256=inst.sha256,
        )


@dataclass(frozen=True)
class ArchiveResult:
    session_id: int
    url: str
    instances: int


class Archiver:
    def __init__(self, config: Config, catalog: Catalog, layout: Layout, writers: WriterFactory = CopyWriter) -> None:
        self.config = config
        self.catalog = catalog
        self.layout = layout
        self.writers = writers

    # ------------------------------------------------------------------ archive one session

    def archive(self, session_id: int, *, overwrite: str | None = None, actor: str = "",
                force_review: bool = False) -> ArchiveResult:
        """Archive a prearchive session. Raises Conflict (session left in CONFLICT), InvalidState."""
        session = self.catalog.session(session_id)
        if session.project == UNASSIGNED:
            raise InvalidState("sessions in Unassigned cannot be archived; move them to a project first")
        project = self.config.project(session.project)
        policy = overwrite or (project.overwrite_policy if project else "none")
        job_id = self.catalog.begin_archive(
            session_id, overwrite=policy, actor=actor, work_dir=""
        )
        work_dir = self.layout.work / f"job-{job_id}"
        try:
            plan, subject, label, study_uid, fingerprint = self._stage(session, policy, work_dir, force_review)
        except HeldForReview as exc:
            self._rollback(job_id, session_id, work_dir, REVIEW, str(exc), actor)
            raise
        except Conflict as exc:
            self._rollback(job_id, session_id, work_dir, CONFLICT, str(exc), actor)
            raise
        except DicomdError as exc:
            self._rollback(job_id, session_id, work_dir, ERROR, str(exc), actor)
            raise
        except Exception as exc:
            self._rollback(job_id, session_id, work_dir, ERROR, f"{type(exc).__name__}: {exc}", actor)
            raise
        self.catalog.plan_archive(job_id, subject, label, plan, study_uid=study_uid, fingerprint=fingerprint)
        crashpoint("archive.planned")
        target_id = self._roll_forward(
            self.catalog.job(job_id), study_uid=study_uid, fingerprint=fingerprint, actor=actor
        )
        target = self.catalog.session(target_id)
        logger.info("archived session #%d into %s (%d instances)", session_id, target.ref, len(plan))
        return ArchiveResult(target_id, target.url, len(plan))

    def _stage(
        self, session: SessionRow, policy: str, work_dir: Path, force_review: bool
    ) -> tuple[list[dict[str, Any]], str, str, str, str]:
        writer = self.writers(session)
        subject, label = writer.labels()
        instances = self.catalog.instances(session.id)
        if not instances:
            raise DicomdError("the session has no instances")
        storage.ensure_dir(work_dir)
        plan: list[dict[str, Any]] = []
        study_uids: set[str] = set()
        for inst in instances:
            src = self.layout.resolve(inst.path)
            try:
                written = writer.write(src, inst, work_dir)
            except Rejected as exc:
                logger.warning("instance dropped at archive by the project script: %s", escape(exc))
                continue
            if written is None:
                continue
            crashpoint("archive.staging")
            study_uids.add(written.study_instance_uid)
            final = f"archive/{session.project}/{subject}/{label}/{written.relpath}"
            plan.append(
                {
                    "work": str(work_dir / written.relpath),
                    "final": final,
                    "prearchive": inst.path,
                    "received_at": inst.received_at,
                    "source": inst.source,
                    **{k: getattr(written, k) for k in (
                        "scan_id", "sop_instance_uid", "sop_class_uid", "series_instance_uid", "series_number",
                        "series_description", "modality", "study_date", "study_time", "transfer_syntax", "size",
                        "sha256")},
                }
            )
        storage.flush_everything()  # every work file and folder durable before the plan is recorded
        reason = None if force_review else writer.review_reason()
        if reason:
            raise HeldForReview(f"held for review: {reason}")
        study_uid = sorted(study_uids)[0] if study_uids else session.study_instance_uid
        self._check_conflicts(session.project, label, study_uid, plan, policy)
        return plan, subject, label, study_uid, writer.fingerprint

    def _check_conflicts(self, project: str, label: str, study_uid: str, plan: list[dict[str, Any]], policy: str) -> None:
        existing = self.catalog.find_session("archive", project, "", label)
        if existing is None:
            return
        if policy == "none":
            raise Conflict(f"session already exists in the archive: {existing.url} (overwrite is 'none')")
        if existing.study_instance_uid and existing.study_instance_uid != study_uid and policy != "delete":
            raise Conflict(f"UID changed: archived session {existing.url} holds another study")
        if policy == "delete":
            return
        archived = {i.sop_instance_uid: i.sha256 for i in self.catalog.instances(existing.id)}
        clashes = [p["sop_instance_uid"] for p in plan if archived.get(p["sop_instance_uid"], p["sha256"]) != p["sha256"]]
        if clashes:
            raise Conflict(
                f"{len(clashes)} instance(s) differ from archived objects with the same SOP Instance UID "
                f"(first: {clashes[0]}); use overwrite=delete to replace"
            )

    def _rollback(self, job_id: int, session_id: int, work_dir: Path, status: str, reason: str, actor: str) -> None:
        shutil.rmtree(work_dir, ignore_errors=True)
        self.catalog.fail_archive(job_id, session_id, status, reason, actor)
        logger.warning("archive of session %d stopped: %s -> %s", session_id, escape(reason), status)

    # ------------------------------------------------------------------ moving + commit (idempotent)

    def _roll_forward(self, job: dict[str, Any], *, study_uid: str = "", fingerprint: str = "", actor: str = "") -> int:
        import json

        plan: list[dict[str, Any]] = json.loads(job["plan"])
        old_files: list[Path] = []
        if job["overwrite"] == "delete":
            existing = self.catalog.find_session("archive", job["project"], "", job["label"])
            if existing is not None:
                keep = {p["final"] for p in plan}
                old_files = [self.layout.resolve(i.path) for i in self.catalog.instances(existing.id) if i.path not in keep]
        touched: set[Path] = set()
        for item in plan:
            work, final = Path(item["work"]), self.layout.root / item["final"]
            storage.ensure_dir(final.parent)
            if work.exists():
                os.replace(work, final)
                touched.add(final.parent)
                crashpoint("archive.moving")
        for folder in touched:
            storage.fsync_dir(folder)
        study_uid = study_uid or job.get("study_uid") or ""
        fingerprint = fingerprint or job.get("fingerprint") or ""
        fields: dict[str, Any] = {}
        if fingerprint:
            fields["anonymization"] = fingerprint
        target_id = self.catalog.commit_archive(job, study_uid=study_uid, session_fields=fields, actor=actor)
        crashpoint("archive.committed")
        self._cleanup(job, plan, old_files)
        return target_id

    def _cleanup(self, job: dict[str, Any], plan: list[dict[str, Any]], old_files: list[Path]) -> None:
        for path in old_files:
            path.unlink(missing_ok=True)
        folders: set[Path] = set()
        for item in plan:
            pre = self.layout.root / item["prearchive"]
            pre.unlink(missing_ok=True)
            folders.add(pre.parent)
            crashpoint("archive.cleaning")
        for folder in folders:
            storage.remove_empty_dirs(folder, self.layout.prearchive)
        shutil.rmtree(self.layout.work / f"job-{job['id']}", ignore_errors=True)
        self.catalog.finish_job(job["id"])

    # ------------------------------------------------------------------ recovery

    def recover(self, *, dry_run: bool = False) -> list[str]:
        """Finish or roll back archive jobs a crash interrupted. Returns what was (or, with
        ``dry_run``, would be) done; a dry run changes nothing."""
        import json

        done: list[str] = []
        for job in self.catalog.archive_jobs(["staging"]):
            if not dry_run:
                work = self.layout.work / f"job-{job['id']}"
                # RECEIVING, not READY: the watcher rebuilds it and re-decides (auto-archive resumes)
                self._rollback(job["id"], job["session_id"], work, RECEIVING, "archive interrupted by a restart; rolled back", "recovery")
            done.append(f"archive job {job['id']}: rolled back (session {job['session_id']} RECEIVING)")
        for job in self.catalog.archive_jobs(["moving"]):
            if dry_run:
                done.append(f"archive job {job['id']}: finished (archive {job['project']}/{job['label']})")
                continue
            target = self._roll_forward(job, actor="recovery")
            done.append(f"archive job {job['id']}: finished (archive session {target})")
        for job in self.catalog.archive_jobs(["done"]):
            if not dry_run:
                self._cleanup(job, json.loads(job["plan"]), [])
            done.append(f"archive job {job['id']}: cleaned up")
        if not dry_run:
            for line in done:
                logger.warning("recovery: %s", line)
        return done
