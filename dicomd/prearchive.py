"""Prearchive sessions: naming, build, rebuild, move, delete, and reconciliation with the disk."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from dicomd import storage
from dicomd.catalog import Catalog, NewInstance, SessionRow
from dicomd.cluster import SCAN, SESSION, Node
from dicomd.config import Config
from dicomd.crashpoints import crashpoint
from dicomd.errors import Ambiguous, DicomdError, InvalidInput, InvalidState, NotFound
from dicomd.header import read_header
from dicomd.layout import Layout, SessionRef
from dicomd.lifecycle import BUILDABLE, RECEIVABLE, JobState, Stage, Status

logger = logging.getLogger(__name__)

# session -> {"session": {field: value}, "scans": {scan_id: {field: value}}}
FieldExtractor = Callable[[SessionRow], dict[str, Any]]


@dataclass
class Prearchive:
    config: Config
    catalog: Catalog
    layout: Layout
    extract_fields: FieldExtractor | None = None
    inspect_pixels: Callable[[SessionRow], dict[str, Any] | None] | None = None  # the OCR check
    on_forget: Callable[[int], None] = field(default=lambda _sid: None)
    node: Node | None = None  # None: the only process working on this data directory (no claims)

    @contextlib.contextmanager
    def _claimed(self, kind: str, item: int | str) -> Iterator[bool]:
        """The cluster-wide claim for the block (always True without a node)."""
        if self.node is None:
            yield True
            return
        with self.node.trying(kind, item) as got:
            yield got

    @contextlib.contextmanager
    def _holding(self, session_id: int) -> Iterator[None]:
        with self._claimed(SESSION, session_id) as got:
            if not got:
                raise InvalidState(f"session {session_id} is being worked on by another node; try again later")
            yield

    # ------------------------------------------------------------------ naming

    def resolve(self, name: str, stage: str = Stage.PREARCHIVE) -> SessionRow:
        """A session by url (`/prearchive/projects/P/T/S`, with or without `/data`), `P/T/S`,
        folder name when unique, or a unique prefix of it (archive: `P/LABEL` and its urls)."""
        ref = SessionRef.from_name(name, stage)
        if ref is not None:
            row = self.catalog.find_session(ref.stage, ref.project, ref.timestamp, ref.label)
            if row is None:
                raise NotFound(f"no {'prearchive' if stage == Stage.PREARCHIVE else 'archived'} session {ref.name}")
            return row
        parts = SessionRef.name_parts(name, stage)
        if len(parts) != 1 or not parts[0]:
            raise NotFound(f"cannot read {name!r} as a session name")
        rows = self.catalog.sessions(stage)
        exact = [r for r in rows if r.label == parts[0]]
        candidates = exact or [r for r in rows if r.label.startswith(parts[0])]
        if not candidates:
            raise NotFound(f"no {stage} session named {name!r}")
        if len(candidates) > 1:
            names = ", ".join(SessionRef.of(r).name for r in candidates[:10])
            raise Ambiguous(f"{name!r} matches {len(candidates)} sessions: {names}")
        return candidates[0]

    # ------------------------------------------------------------------ build

    def build(self, session_id: int, *, actor: str = "build") -> SessionRow | None:
        """Summarize a session (scans, counts, dates, mapped fields) and make it READY.

        Returns the built row, or None when new data arrived meanwhile (it stays RECEIVING) or
        another node holds the session's claim (it builds it).
        """
        with self._claimed(SESSION, session_id) as got:
            return self._build(session_id, actor) if got else None

    def _build(self, session_id: int, actor: str) -> SessionRow | None:
        try:
            folder = self.layout.session_dir(self.catalog.session(session_id).relative_dir)
        except NotFound:
            return None
        if self.catalog.drop_if_empty(session_id):  # its only store failed (e.g. disk full)
            self.on_forget(session_id)
            self._prune_empty(folder)
            logger.info("removed empty session #%d", session_id)
            return None
        try:
            session = self.catalog.set_status(
                session_id, Status.BUILDING, expect=BUILDABLE, actor=actor
            )
        except (InvalidState, NotFound):
            return None
        crashpoint("build.started")
        fields: dict[str, Any] = {}
        scan_fields: dict[str, dict[str, Any]] = {}
        status, reason = Status.READY, ""
        try:
            if self.extract_fields is not None:
                extracted = self.extract_fields(session)
                fields["custom"] = json.dumps(extracted.get("session", {}))
                scan_fields = extracted.get("scans", {})
            if self.inspect_pixels is not None:
                findings = self.inspect_pixels(session)
                fields["summary"] = json.dumps({"pixel_text": findings} if findings is not None else {})
        except DicomdError as exc:
            status, reason = Status.ERROR, f"build failed: {exc}"
        except Exception as exc:  # noqa: BLE001 - a build failure is an ERROR state, not a crash
            logger.exception("build of session %d failed", session_id)
            status, reason = Status.ERROR, f"build failed: {type(exc).__name__}: {exc}"
        return self.catalog.finish_build(session_id, fields, status, reason, scan_fields)

    def _prune_empty(self, top: Path) -> None:
        """Remove a dropped empty session's folders, deepest first (rmdir only: never a file)."""
        if top.is_dir():
            for folder in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
                storage.remove_empty_dirs(folder, top)
        storage.remove_empty_dirs(top, self.layout.prearchive)

    def rebuild(self, session_id: int, *, actor: str = "") -> SessionRow | None:
        """Re-scan the session folder (adopt files the catalog lacks, drop rows whose file is gone), then build."""
        with self._holding(session_id):
            session = self.catalog.session(session_id)
            self.reconcile_session(session)
            return self.build(session_id, actor=actor or "rebuild")

    # ------------------------------------------------------------------ move / delete

    def move(self, session_id: int, new_project: str, *, actor: str = "") -> SessionRow:
        target = self.config.resolve_project(new_project) if new_project != "Unassigned" else "Unassigned"
        if target is None:
            raise NotFound(f"no project {new_project!r}")
        with self._holding(session_id):
            return self._move(session_id, target, actor)

    def _move(self, session_id: int, target: str, actor: str) -> SessionRow:
        session = self.catalog.session(session_id)
        if session.project == target:
            return session
        stamp = self.catalog.unique_timestamp(target, session.label)
        new_rel = SessionRef.prearchive(target, stamp, session.label).relative_dir
        session = self.catalog.set_status(
            session_id, Status.MOVING, f"to {target}", expect=RECEIVABLE, actor=actor,
            extra={"summary": json.dumps({"moving_to": [target, stamp]})},
        )
        self.on_forget(session_id)
        crashpoint("move.started")
        return self._finish_move(session, target, stamp, new_rel, actor)

    def _finish_move(self, session: SessionRow, target: str, stamp: str, new_rel: str, actor: str) -> SessionRow:
        old_dir = self.layout.session_dir(session.relative_dir)
        new_dir = self.layout.session_dir(new_rel)
        if old_dir.exists() and not new_dir.exists():
            storage.ensure_dir(new_dir.parent)
            os.replace(old_dir, new_dir)
            storage.fsync_dir(new_dir.parent)
            crashpoint("move.renamed")
            storage.remove_empty_dirs(old_dir.parent, self.layout.prearchive)
        old_prefix = session.relative_dir + "/"
        paths = {
            inst.id: new_rel + "/" + inst.path[len(old_prefix):]
            for inst in self.catalog.instances(session.id)
            if inst.path.startswith(old_prefix)
        }
        self.catalog.move_session(session.id, target, stamp, paths, actor)
        built = self.build(session.id, actor="move")
        return built or self.catalog.session(session.id)

    def delete(self, session_id: int, *, actor: str = "") -> None:
        with self._holding(session_id):
            session = self.catalog.set_status(session_id, Status.DELETING, expect=RECEIVABLE, actor=actor)
            self.on_forget(session_id)
            crashpoint("delete.started")
            self._finish_delete(session, actor)

    def _finish_delete(self, session: SessionRow, actor: str) -> None:
        folder = self.layout.session_dir(session.relative_dir)
        shutil.rmtree(folder, ignore_errors=True)
        storage.remove_empty_dirs(folder.parent, self.layout.prearchive)
        crashpoint("delete.removed")
        self.catalog.delete_session_rows(session.id, "deleted from the prearchive", actor)
        logger.info("deleted %s", session.ref)

    # ------------------------------------------------------------------ reconciliation

    def reconcile_session(self, session: SessionRow, *, dry_run: bool = False) -> list[str]:
        """Make the catalog match the session folder. Returns what differed."""
        findings: list[str] = []
        folder = self.layout.session_dir(session.relative_dir)
        rows = {inst.path: inst for inst in self.catalog.instances(session.id)}
        on_disk: set[str] = set()
        if folder.exists():
            for path in folder.rglob("*"):
                if not path.is_file():
                    continue
                rel = self.layout.relative(path)
                if path.name.startswith(".") and path.name.endswith(".part"):
                    findings.append(f"{session.ref}: {path.name}: unfinished temporary file removed")
                    if not dry_run:
                        path.unlink(missing_ok=True)
                    continue
                on_disk.add(rel)
        missing = [inst for p, inst in rows.items() if p not in on_disk]
        extra = sorted(on_disk - set(rows))
        for inst in missing:
            findings.append(f"{session.ref}: {Path(inst.path).name}: in the catalog but not on disk; row removed")
        adopted: list[NewInstance] = []
        for rel in extra:
            try:
                header = read_header(self.layout.root / rel)
            except InvalidInput as exc:
                findings.append(f"{session.ref}: {Path(rel).name}: on disk but unreadable ({exc}); left in place")
                continue
            digest, size = storage.sha256_file(self.layout.root / rel)
            findings.append(f"{session.ref}: {Path(rel).name}: on disk but not in the catalog; adopted")
            scan_id = Path(rel).parent.parent.name
            adopted.append(
                NewInstance(
                    scan_id=scan_id, sop_instance_uid=header.sop_instance_uid, sop_class_uid=header.sop_class_uid,
                    series_instance_uid=header.series_instance_uid, series_number=header.series_number,
                    series_description=header.series_description, modality=header.modality,
                    study_date=header.study_date, study_time=header.study_time,
                    transfer_syntax=header.transfer_syntax, size=size, sha256=digest, path=rel, source="recovered",
                )
            )
        if not dry_run and (missing or adopted):
            if missing:
                self.catalog.remove_instance_rows([i.id for i in missing])
            if adopted:
                self.catalog.add_instance_rows(session.id, adopted)
        return findings

    def _adopt_folder(self, session_dir: Path, *, dry_run: bool) -> list[str]:
        """A session folder the catalog does not know (its rows were lost, e.g. to a power cut
        after ingest's non-fsync'd commit): rebuild its session row from the files on disk."""
        ref = SessionRef.from_dir(self.layout.relative(session_dir))
        where = f"{Path(ref.relative_dir).parent}/..."  # no label: it may come from a patient's name
        header = None
        for path in sorted(session_dir.rglob("*.dcm")):
            try:
                header = read_header(path)
                break
            except InvalidInput:
                continue
        if header is None:
            return [f"{where}: folder without a catalog session and no readable DICOM; left for an operator"]
        if dry_run:
            return [f"{where}: folder without a catalog session; would be adopted"]
        from dicomd.routing import PATIENT_NAME, clean_label

        row = self.catalog.adopt_session(
            project=ref.project, timestamp=ref.timestamp, label=ref.label, study_uid=header.study_instance_uid,
            subject=clean_label(header.routing.get(PATIENT_NAME, "")),
        )
        return [f"{where}: folder without a catalog session; adopted as {row.ref}",
                *self.reconcile_session(row)]

    def recover(self, *, dry_run: bool = False, sessions: set[int] | None = None) -> list[str]:
        """Repair what a crash left: half-moved or half-deleted sessions, interrupted builds,
        temp files, and differences between session folders and the catalog.

        ``sessions``: only those sessions' interrupted moves, deletes and builds (a take-over of
        an expired node's claims). With several nodes each session is recovered under its claim,
        and the scan of the whole data directory runs only on a node that finds no other alive."""
        done: list[str] = []
        for status in (Status.MOVING, Status.DELETING, Status.BUILDING):
            for session in self.catalog.sessions_in(Stage.PREARCHIVE, [status]):
                if sessions is not None and session.id not in sessions:
                    continue
                if dry_run:
                    done += self._recover_session(session, dry_run=True)
                    continue
                with self._claimed(SESSION, session.id) as got:
                    row = self._current(session.id) if got else None
                    if row is not None and row.status == status:  # still interrupted, now ours
                        done += self._recover_session(row, dry_run=False)
        if sessions is not None:
            return self._log_recovered(done, dry_run)
        if dry_run or self.node is None:
            return self._log_recovered(done + self._recover_disk(dry_run=dry_run), dry_run)
        with self._claimed(SCAN, "data") as got:
            if not got:  # a node starting at the same time scans: receive only once it is done
                self._wait_for_scan()
                return self._log_recovered(done, dry_run)
            others = self.node.others_alive()
            if others:  # their receives are under way: only a node starting alone reconciles the whole disk
                logger.info("recovery: %d other live node(s): the scan of the whole data directory is left"
                            " to a node that starts alone", len(others))
                return self._log_recovered(done, dry_run)
            done += self._recover_disk(dry_run=False)
        return self._log_recovered(done, dry_run)

    def _current(self, session_id: int) -> SessionRow | None:
        try:
            return self.catalog.session(session_id)
        except NotFound:
            return None

    def _wait_for_scan(self) -> None:
        """Until the node scanning the whole data directory has finished (or expired)."""
        assert self.node is not None
        pause, said = threading.Event(), ""
        while True:
            holder = self.catalog.holder(SCAN, "data")
            if not holder or holder in self.node.expired():
                return
            if holder != said:
                logger.info("recovery: waiting for node %s to finish its scan of the data directory", holder)
                said = holder
            pause.wait(0.2)

    def _recover_session(self, session: SessionRow, *, dry_run: bool) -> list[str]:
        """Finish one session's interrupted move or delete, or send its interrupted build back."""
        if session.status == Status.MOVING:
            info = json.loads(session.summary or "{}").get("moving_to")
            if not dry_run and info:
                target, stamp = info
                new_rel = SessionRef.prearchive(target, stamp, session.label).relative_dir
                self._finish_move(session, target, stamp, new_rel, "recovery")
            return [f"{session.ref}: move interrupted; finished"]
        if session.status == Status.DELETING:
            if not dry_run:
                self._finish_delete(session, "recovery")
            return [f"{session.ref}: delete interrupted; finished"]
        if not dry_run:
            self.catalog.set_status(session.id, Status.RECEIVING, "build interrupted by a restart", actor="recovery")
        return [f"{session.ref}: build interrupted; back to RECEIVING"]

    @staticmethod
    def _log_recovered(done: list[str], dry_run: bool) -> list[str]:
        for line in done if not dry_run else ():
            logger.warning("recovery: %s", line)
        return done

    def _recover_disk(self, *, dry_run: bool) -> list[str]:
        """The whole data directory against the catalog: rows without files, files without rows,
        folders without sessions, temporary files. Only safe when no other node is receiving."""
        done: list[str] = []
        for session in self.catalog.sessions_in(Stage.PREARCHIVE, RECEIVABLE):
            done += self.reconcile_session(session, dry_run=dry_run)
            folder = self.layout.session_dir(session.relative_dir)
            if not self.catalog.instances(session.id) and not any(p.is_file() for p in folder.rglob("*")):
                # opened for a receive that died before its first instance: nothing to keep
                done.append(f"{session.ref}: empty (interrupted before its first instance); removed")
                if not dry_run:
                    self._finish_delete(session, "recovery")
        known = {s.relative_dir for s in self.catalog.sessions(Stage.PREARCHIVE)}
        # folders an archived session's clean-up removes (the archiver's recovery does it first;
        # a dry run must not report them as orphans to adopt)
        known |= {SessionRef.from_dir(item.prearchive).relative_dir
                  for job in self.catalog.archive_jobs([JobState.DONE]) for item in job.plan}
        for session in self.catalog.sessions_in(Stage.PREARCHIVE, [Status.MOVING]):  # the folder a move renamed to
            target = json.loads(session.summary or "{}").get("moving_to")
            if target:
                known.add(SessionRef.prearchive(target[0], target[1], session.label).relative_dir)
        if self.layout.prearchive.exists():
            for session_dir in self.layout.prearchive.glob("*/*/*"):
                rel = self.layout.relative(session_dir)
                if session_dir.is_dir() and rel not in known:
                    if not any(p.is_file() for p in session_dir.rglob("*")):
                        if not dry_run:  # only empty folders (a store that died before its file): nothing to report
                            self._prune_empty(session_dir)
                        continue
                    done += self._adopt_folder(session_dir, dry_run=dry_run)
        if self.layout.tmp.exists() and not dry_run:
            for leftover in self.layout.tmp.iterdir():
                if leftover.is_file():
                    leftover.unlink(missing_ok=True)
        return done
