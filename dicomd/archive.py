"""Prearchive session -> archive: conflict checks, overwrite policies, crash-safe commit.

A job goes through three recorded states:
  staging  files are written (anonymized or hard-linked) into work/{job}; nothing in the archive
           has changed. A crash here rolls back: the work folder is removed, the session is READY.
  moving   the plan is recorded; files are renamed into the archive (idempotent), then one catalog
           transaction swaps the rows. A crash here rolls forward.
  done     rows are swapped; the prearchive copy and the work folder are removed (idempotent).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

from dicomd import storage
from dicomd.catalog import ArchiveJob, Catalog, InstanceFields, InstanceRow, PlanItem, SessionRow
from dicomd.catalog.jobs import Fence
from dicomd.cluster import SESSION, Node
from dicomd.config import Config
from dicomd.crashpoints import crashpoint
from dicomd.errors import ClaimLost, Conflict, DicomdError, HeldForReview, InvalidState, Rejected, StorageFailure
from dicomd.ingest import Source, quarantine
from dicomd.layout import Layout
from dicomd.lifecycle import JobState, Stage, Status
from dicomd.routing import UNASSIGNED, check_label, clean_label

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Written(InstanceFields):
    """One instance as written into the work folder."""

    relpath: str  # inside the session folder: SCANS/{scan}/DICOM/{name}
    study_instance_uid: str


class SessionWriter(Protocol):
    """Turns prearchive files into archive files for one session (identity, or anonymization)."""

    fingerprint: str

    def labels(self) -> tuple[str, str]:
        """(subject, session label) in the archive."""

    def write(self, src: Path, inst: InstanceRow, work_dir: Path) -> Written | None:
        """Write the archived form of ``src`` under ``work_dir``; None drops the instance."""

    def write_all(self, items: Sequence[tuple[Path, InstanceRow]], work_dir: Path) -> Iterator[Written | Rejected | None]:
        """``write`` for each item, in order; a Rejected is yielded (not raised) for an instance the
        project's script rejects. Every file is written once the iterator is exhausted or closed."""

    def review_reason(self) -> str | None:
        """Why the session must wait for a person (burned-in annotation, ...), or None."""

    def unconfirmed_text(self) -> str | None:
        """Why archiving needs the operator's confirmation (OCR text outside redacted areas), or None."""

    def report(self) -> dict[str, Any] | None:
        """What the writer did that the catalog records as a `pixels` event (no PHI), or None."""


def written_in_turn(writer: SessionWriter, items: Sequence[tuple[Path, InstanceRow]],
                    work_dir: Path) -> Iterator[Written | Rejected | None]:
    """``write_all`` in the job's own process, one instance after the other."""
    for src, inst in items:
        try:
            yield writer.write(src, inst, work_dir)
        except Rejected as exc:
            yield exc


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

    def unconfirmed_text(self) -> str | None:
        return None

    def report(self) -> dict[str, Any] | None:
        return None

    def write_all(self, items: Sequence[tuple[Path, InstanceRow]], work_dir: Path) -> Iterator[Written | Rejected | None]:
        return written_in_turn(self, items, work_dir)

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
    def __init__(self, config: Config, catalog: Catalog, layout: Layout, writers: WriterFactory = CopyWriter,
                 node: Node | None = None) -> None:
        self.config = config
        self.catalog = catalog
        self.layout = layout
        self.writers = writers
        self.node = node  # None: the only process working on this data directory (no claims)

    @contextlib.contextmanager
    def _claimed(self, session_id: int) -> Iterator[bool]:
        """The session's cluster-wide claim for the block (always True without a node)."""
        if self.node is None:
            yield True
            return
        with self.node.trying(SESSION, session_id) as got:
            yield got

    def _fence(self, session_id: int) -> Fence | None:
        return None if self.node is None else (SESSION, str(session_id), self.node.id)

    # ------------------------------------------------------------------ archive one session

    def archive(self, session_id: int, *, overwrite: str | None = None, actor: str = "",
                force_review: bool = False, label: str = "", confirm_text: bool = False) -> ArchiveResult:
        """Archive a prearchive session. Raises Conflict (session left in CONFLICT), InvalidState,
        HeldForReview (left in REVIEW). ``label`` archives it under another session label (a way out
        of a label conflict); ``force_review`` archives past a review hold (burned-in data without a
        redaction rule) and ``confirm_text`` past OCR text found outside the redacted areas.
        The session's claim is held throughout (InvalidState when another node holds it)."""
        with self._claimed(session_id) as got:
            if not got:
                raise InvalidState(f"session {session_id} is being worked on by another node; try again later")
            return self._archive(session_id, overwrite=overwrite, actor=actor, force_review=force_review,
                                 label=label, confirm_text=confirm_text)

    def _archive(self, session_id: int, *, overwrite: str | None, actor: str, force_review: bool,
                 label: str, confirm_text: bool) -> ArchiveResult:
        if label:
            label = check_label(clean_label(label), "label")
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
            writer = self.writers(session)
            plan, subject, label, study_uid, fingerprint = self._stage(
                session, policy, work_dir, force_review, label, confirm_text, writer)
        except HeldForReview as exc:
            self._rollback(job_id, session_id, work_dir, Status.REVIEW, str(exc), actor)
            raise
        except Conflict as exc:
            self._rollback(job_id, session_id, work_dir, Status.CONFLICT, str(exc), actor)
            raise
        except DicomdError as exc:
            self._rollback(job_id, session_id, work_dir, Status.ERROR, str(exc), actor)
            raise
        except Exception as exc:
            self._rollback(job_id, session_id, work_dir, Status.ERROR, f"{type(exc).__name__}: {exc}", actor)
            raise
        self.catalog.plan_archive(job_id, subject, label, plan, study_uid=study_uid, fingerprint=fingerprint,
                                  fence=self._fence(session_id))
        crashpoint("archive.planned")
        job = self.catalog.job(job_id)
        try:
            target_id = self._roll_forward(job, study_uid=study_uid, fingerprint=fingerprint, actor=actor)
        except ClaimLost:
            raise  # the node that took the claim over finishes the job
        except Exception as exc:  # noqa: BLE001 - a job that cannot finish must not stay half-done
            raise StorageFailure(self._give_up(job, exc, actor)) from exc
        report = writer.report()
        if report:
            self.catalog.event("pixels", {**report, "session": session_id}, target_id)
        target = self.catalog.session(target_id)
        archived = sum(not item.dropped for item in plan)
        logger.info("archived session #%d into %s (%d instances)", session_id, target.ref, archived)
        return ArchiveResult(target_id, target.url, archived)

    def _stage(
        self, session: SessionRow, policy: str, work_dir: Path, force_review: bool, new_label: str = "",
        confirm_text: bool = False, writer: SessionWriter | None = None,
    ) -> tuple[list[PlanItem], str, str, str, str]:
        writer = writer or self.writers(session)
        subject, label = writer.labels()
        label = new_label or label
        instances = self.catalog.instances(session.id)
        if not instances:
            raise DicomdError("the session has no instances")
        storage.ensure_dir(work_dir)
        plan: list[PlanItem] = []
        study_uids: set[str] = set()
        items = list(zip(self.layout.resolve_all([inst.path for inst in instances]), instances))
        results = writer.write_all(items, work_dir)
        try:
            for (src, inst), written in zip(items, results, strict=True):
                item = self._planned(session, inst, src, written, work_dir, subject, label, study_uids)
                if item is not None:
                    plan.append(item)
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # a pool's chunks still running finish before the work folder may be removed
        if all(item.dropped for item in plan):
            raise DicomdError("the project's script rejected every instance (they are in the quarantine)")
        storage.flush_everything()  # every work file and folder durable before the plan is recorded
        reason = None if force_review else writer.review_reason()
        if reason:
            raise HeldForReview(f"held for review: {reason}")
        text = None if confirm_text else writer.unconfirmed_text()
        if text:
            raise HeldForReview(f"held for review: {text}")
        study_uid = sorted(study_uids)[0] if study_uids else session.study_instance_uid
        self._check_conflicts(session.project, label, study_uid, plan, policy)
        return plan, subject, label, study_uid, writer.fingerprint

    def _planned(self, session: SessionRow, inst: InstanceRow, src: Path, written: Written | Rejected | None,
                 work_dir: Path, subject: str, label: str, study_uids: set[str]) -> PlanItem | None:
        """The plan's line for one written (or rejected) instance; None when the writer dropped it."""
        if isinstance(written, Rejected):
            return self._drop(session, inst, src, written)
        if written is None:
            return None
        crashpoint("archive.staging")
        study_uids.add(written.study_instance_uid)
        return PlanItem(
            work=str(work_dir / written.relpath),
            final=f"archive/{session.project}/{subject}/{label}/{written.relpath}",
            prearchive=inst.path,
            received_at=inst.received_at,
            source=inst.source,
            **written.instance_fields(),
        )

    def _drop(self, session: SessionRow, inst: InstanceRow, src: Path, exc: Rejected) -> PlanItem:
        """A rejected instance: a copy goes to the quarantine with the reason now; its prearchive
        file goes with the job's clean-up (never left behind for recovery to adopt again)."""
        quarantine(self.layout, self.catalog, src, Source(kind="ARCHIVE"), f"rejected by the project script: {exc}",
                   move=False)
        logger.warning("an instance of session #%d was rejected by the project script (quarantined)", session.id)
        return PlanItem(work="", final="", prearchive=inst.path, received_at=inst.received_at, source=inst.source,
                        **inst.instance_fields())

    def _check_conflicts(self, project: str, label: str, study_uid: str, plan: Sequence[PlanItem], policy: str) -> None:
        existing = self.catalog.find_session(Stage.ARCHIVE, project, "", label)
        if existing is None:
            return
        choices = ("to resolve it: archive with overwrite append (add these instances to it; CLI --overwrite"
                   " append) or delete (replace it; --overwrite delete), move this session to another project"
                   " (dicomd prearchive move --to P), or archive it under a new label (dicomd prearchive archive"
                   " --label NEW)")
        if policy == "none":
            raise Conflict(f"session already exists in the archive: {existing.url} (overwrite is 'none'); {choices}")
        if existing.study_instance_uid and existing.study_instance_uid != study_uid and policy != "delete":
            raise Conflict(f"UID changed: archived session {existing.url} holds another study; {choices}")
        if policy == "delete":
            return
        archived = {i.sop_instance_uid: i.sha256 for i in self.catalog.instances(existing.id)}
        clashes = [p.sop_instance_uid for p in plan
                   if not p.dropped and archived.get(p.sop_instance_uid, p.sha256) != p.sha256]
        if clashes:
            raise Conflict(
                f"{len(clashes)} instance(s) differ from archived objects with the same SOP Instance UID "
                f"(first: {clashes[0]}); use overwrite=delete to replace"
            )

    def _rollback(self, job_id: int, session_id: int, work_dir: Path, status: str, reason: str, actor: str) -> None:
        shutil.rmtree(work_dir, ignore_errors=True)
        self.catalog.fail_archive(job_id, session_id, status, reason, actor)
        # the reason may name labels and paths of identified data: it goes to the session row, not the log
        logger.warning("archive of session #%d stopped -> %s (the reason is on the session: `dicomd prearchive show`)",
                       session_id, status)
        logger.debug("archive of session #%d stopped: %s", session_id, reason)

    # ------------------------------------------------------------------ moving + commit (idempotent)

    def _roll_forward(self, job: ArchiveJob, *, study_uid: str = "", fingerprint: str = "", actor: str = "") -> int:
        plan = job.plan
        old_files: list[Path] = []
        if job.replaces_archived:
            existing = self.catalog.find_session(Stage.ARCHIVE, job.project, "", job.label)
            if existing is not None:
                keep = {p.final for p in plan}
                old_files = self.layout.resolve_all([i.path for i in self.catalog.instances(existing.id)
                                                     if i.path not in keep])
        touched: set[Path] = set()
        folders: set[Path] = set()
        for item in plan:
            if item.dropped:
                continue
            work, final = Path(item.work), self.layout.root / item.final
            if final.parent not in folders:
                storage.ensure_dir(final.parent)
                folders.add(final.parent)
            try:
                os.replace(work, final)
            except FileNotFoundError:
                if not work.exists():
                    continue  # moved before a restart
                storage.ensure_dir(final.parent)  # the folder went away meanwhile
                os.replace(work, final)
            touched.add(final.parent)
            crashpoint("archive.moving")
        for folder in touched:
            storage.fsync_dir(folder)
        study_uid = study_uid or job.study_uid
        fingerprint = fingerprint or job.fingerprint
        fields: dict[str, Any] = {}
        if fingerprint:
            fields["anonymization"] = fingerprint
        target_id = self.catalog.commit_archive(job, study_uid=study_uid, session_fields=fields, actor=actor,
                                                fence=self._fence(job.session_id))
        crashpoint("archive.committed")
        self._cleanup(job, plan, old_files)
        return target_id

    def _cleanup(self, job: ArchiveJob, plan: Sequence[PlanItem], old_files: list[Path]) -> None:
        for path in old_files:
            path.unlink(missing_ok=True)
        folders: set[Path] = set()
        for item in plan:
            pre = self.layout.root / item.prearchive
            pre.unlink(missing_ok=True)
            folders.add(pre.parent)
            crashpoint("archive.cleaning")
        for folder in folders:
            storage.remove_empty_dirs(folder, self.layout.prearchive)
        shutil.rmtree(self.layout.work / f"job-{job.id}", ignore_errors=True)
        self.catalog.finish_job(job.id)

    def _give_up(self, job: ArchiveJob, exc: BaseException, actor: str) -> str:
        """A planned job that cannot finish (a file-system error while moving): undo what it moved,
        end it, and leave its session in ERROR with the reason. Returns the reason."""
        reason = f"archive could not finish: {_describe(exc)}; the data is still in the prearchive"
        for item in job.plan:
            if item.dropped:
                continue
            final = self.layout.root / item.final
            claimed = any(row.path == item.final for row in self.catalog.instance_by_uid(item.sop_instance_uid))
            try:
                if final.is_file() and not claimed:  # a copy: the prearchive file is still there
                    final.unlink()
                    storage.remove_empty_dirs(final.parent, self.layout.archive)
            except OSError:
                continue
        shutil.rmtree(self.layout.work / f"job-{job.id}", ignore_errors=True)
        self.catalog.fail_archive(job.id, job.session_id, Status.ERROR, reason, actor)
        logger.error("archive job %d could not finish (%s); session #%d is ERROR",
                     job.id, type(exc).__name__, job.session_id)
        return reason

    # ------------------------------------------------------------------ recovery

    def recover(self, *, dry_run: bool = False, sessions: set[int] | None = None) -> list[str]:
        """Finish or roll back archive jobs a crash interrupted (of ``sessions`` only, when given).
        Returns what was (or, with ``dry_run``, would be) done; a dry run changes nothing.

        With several nodes, each job is recovered under its session's claim: a job whose session
        another live node holds is that node's running archive and is left alone."""
        done: list[str] = []
        for state in (JobState.STAGING, JobState.MOVING, JobState.DONE):
            for job in self.catalog.archive_jobs([state]):
                if sessions is not None and job.session_id not in sessions:
                    continue
                if dry_run:
                    done += self._recover_job(job, dry_run=True)
                    continue
                with self._claimed(job.session_id) as got:
                    current = self.catalog.job(job.id) if got else None
                    if current is not None and current.state == state:  # not finished meanwhile
                        done += self._recover_job(current, dry_run=False)
        if not dry_run:
            for line in done:
                logger.warning("recovery: %s", line)
        return done

    def _recover_job(self, job: ArchiveJob, *, dry_run: bool) -> list[str]:
        done: list[str] = []
        if job.state == JobState.STAGING:
            if not dry_run:
                work = self.layout.work / f"job-{job.id}"
                # RECEIVING, not READY: the watcher rebuilds it and re-decides (auto-archive resumes)
                self._rollback(job.id, job.session_id, work, Status.RECEIVING, "archive interrupted by a restart; rolled back", "recovery")
            done.append(f"archive job {job.id}: rolled back (session {job.session_id} RECEIVING)")
        elif job.state == JobState.MOVING:
            if dry_run:
                return [f"archive job {job.id}: finished (archive {job.project}/{job.label})"]
            try:
                target = self._roll_forward(job, actor="recovery")
            except ClaimLost:
                return [f"archive job {job.id}: taken over by another node"]
            except Exception as exc:  # noqa: BLE001 - one job that cannot finish must not stop the start
                self._give_up(job, exc, "recovery")
                return [f"archive job {job.id}: could not finish; session {job.session_id} ERROR"]
            done.append(f"archive job {job.id}: finished (archive session {target})")
        elif job.state == JobState.DONE:
            if not dry_run:
                try:
                    self._cleanup(job, job.plan, [])
                except Exception as exc:  # noqa: BLE001 - archived already: only leftovers remain
                    self.catalog.fail_archive(job.id, job.session_id, Status.ERROR,
                                              f"clean-up failed: {_describe(exc)}", "recovery")
                    return [f"archive job {job.id}: clean-up failed ({type(exc).__name__})"]
            done.append(f"archive job {job.id}: cleaned up")
        return done


def _describe(exc: BaseException) -> str:
    """An error for a session's reason: the OS's words without the path (which names labels)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
        cause = cause.__cause__
    return type(exc).__name__ if isinstance(exc, (OSError, StorageFailure)) else f"{type(exc).__name__}: {exc}"
