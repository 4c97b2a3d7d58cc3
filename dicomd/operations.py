"""What people do to the stores, from either face (the CLI or the HTTP API), with the permission checks.

Every operation takes the acting user: an HTTP `User` (dicomd.auth) or the `LocalOperator` who runs
the CLI on this machine and may do everything. The session history names who acted (`http:<name>`,
`cli:<login>`). Permission is checked on the project a request names *before* anything is looked up,
so a caller cannot learn what exists in projects they cannot read (403, not 404).

Nothing here knows HTTP or click: the faces parse arguments, call one operation and format its result.
"""

from __future__ import annotations

import getpass
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Protocol, Sequence

from dicomd.auth import MANAGE, READ, UPLOAD
from dicomd.catalog import Catalog, QuarantineRow, SessionRow
from dicomd.config import OVERWRITE_POLICIES
from dicomd.errors import DicomdError, Forbidden, InvalidInput, InvalidState, NotFound
from dicomd.ingest import Source, Staged, note_refused
from dicomd.layout import SessionRef
from dicomd.lifecycle import NEEDS_ATTENTION, RECEIVABLE, SETTABLE, QuarantineStatus, Stage
from dicomd.pixels.policy import PIXEL_TEXT, PixelPolicy, text_outside
from dicomd.pixels.policy import describe as describe_text
from dicomd.processors import archive_order
from dicomd.progress import ARCHIVING, BatchProgress
from dicomd.routing import UNASSIGNED, Explicit
from dicomd.stores import Stores

logger = logging.getLogger(__name__)

HELD, RETRIED, DELETED = QuarantineStatus.HELD, QuarantineStatus.RETRIED, QuarantineStatus.DELETED


# ---------------------------------------------------------------- who acts


class Actor(Protocol):
    """Who acts: an HTTP `User`, or the CLI's `LocalOperator`."""

    @property
    def name(self) -> str: ...

    @property
    def admin(self) -> bool: ...

    @property
    def via(self) -> str:
        """The face they act through, as ingest records it: `HTTP` or `CLI`."""
        ...

    @property
    def history_name(self) -> str:
        """Their name in the session history."""
        ...

    def can(self, action: str, project: str) -> bool: ...

    def require(self, action: str, project: str) -> None: ...


@dataclass(frozen=True)
class LocalOperator:
    """Someone running the CLI on this machine: the stores are theirs already, so they may do anything."""

    login: str = ""
    via: ClassVar[str] = "CLI"
    admin: ClassVar[bool] = True

    @classmethod
    def current(cls) -> LocalOperator:
        """The operator of this process, by login name (there may be none, e.g. in a container)."""
        try:
            return cls(getpass.getuser())
        except Exception:  # noqa: BLE001 - no login name: still the operator
            return cls()

    @property
    def name(self) -> str:
        return self.login or "cli"

    @property
    def history_name(self) -> str:
        """`cli:<login>`, or `cli` without a login name."""
        return f"cli:{self.login}" if self.login else "cli"

    def can(self, action: str, project: str) -> bool:
        return True

    def require(self, action: str, project: str) -> None:
        """Never refuses."""


# ---------------------------------------------------------------- results, and finding sessions


@dataclass(frozen=True)
class Outcome:
    """One session an operation touched: its row before, and its row now (None once deleted)."""

    before: SessionRow
    after: SessionRow | None
    instances: int = 0  # archive: the instances this archive wrote

    @property
    def current(self) -> SessionRow:
        """The session's row now; once deleted, its last row."""
        return self.after if self.after is not None else self.before

    @property
    def url(self) -> str:
        return self.after.url if self.after is not None else ""

    @property
    def uri(self) -> str:
        return SessionRef.of(self.after).uri if self.after is not None else ""


def project_id(stores: Stores, name: str) -> str:
    """A configured project's ID from an ID or alias (Unassigned included); NotFound otherwise."""
    if name == UNASSIGNED:
        return UNASSIGNED
    found = stores.config.resolve_project(name)
    if found is None:
        raise NotFound(f"no project {name!r}")
    return found


def readable_projects(stores: Stores, actor: Actor, names: Sequence[str]) -> list[str]:
    """Project IDs for names given by the caller; 403 for any they cannot read."""
    ids = [project_id(stores, n) for n in names]
    for pid in ids:
        actor.require(READ, pid)
    return ids


def overwrite_policy(value: str) -> str | None:
    if not value:
        return None
    if value not in OVERWRITE_POLICIES:
        raise InvalidInput(f"overwrite must be one of {', '.join(OVERWRITE_POLICIES)}")
    return value


def session_for(catalog: Catalog, ref: SessionRef) -> SessionRow:
    """The session a url named (an archive url may leave out the subject); NotFound otherwise."""
    if ref.stage == Stage.PREARCHIVE:
        row = catalog.find_session(Stage.PREARCHIVE, ref.project, ref.timestamp, ref.label)
        where = f"{ref.project}/{ref.timestamp}/{ref.label}"
    else:
        row = catalog.find_session(Stage.ARCHIVE, ref.project, "", ref.label)
        if row is not None and ref.subject and row.subject != ref.subject:
            row = None
        where = f"{ref.project}/{ref.subject or '*'}/{ref.label}"
    if row is None:
        raise NotFound(f"no {ref.stage} session {where}")
    return row


def prearchive_read(stores: Stores, project: str) -> str:
    """The right it takes to see a project's prearchive. Where the project is de-identified at
    archive, its prearchive holds identified data: owners and members only (as in XNAT,
    collaborators read the archive); elsewhere whoever reads the project."""
    settings = stores.config.project(project)
    return UPLOAD if settings is not None and settings.anonymize.enabled else READ


def may_see_prearchive(stores: Stores, actor: Actor, project: str) -> bool:
    return actor.can(prearchive_read(stores, project), project)


def readable_session(stores: Stores, actor: Actor, ref: SessionRef) -> SessionRow:
    """The session ``ref`` names, for an actor who may read it (checked first: a prearchive
    session of a de-identified project needs a member's rights)."""
    actor.require(prearchive_read(stores, ref.project) if ref.stage == Stage.PREARCHIVE else READ, ref.project)
    return session_for(stores.catalog, ref)


def readable_prearchive_projects(stores: Stores, actor: Actor, names: Sequence[str]) -> list[str]:
    """Project IDs for names given by the caller; 403 for any whose prearchive they may not see."""
    ids = [project_id(stores, n) for n in names]
    for pid in ids:
        actor.require(prearchive_read(stores, pid), pid)
    return ids


def prearchive_sessions(stores: Stores, actor: Actor, refs: Iterable[SessionRef], action: str) -> list[SessionRow]:
    """The prearchive sessions ``refs`` name; all are read, then each project is permission-checked,
    then they are looked up."""
    refs = list(refs)
    for ref in refs:
        if ref.stage != Stage.PREARCHIVE:
            raise InvalidInput(f"{ref.uri}: not a prearchive session")
        actor.require(action, ref.project)
    return [session_for(stores.catalog, ref) for ref in refs]


# ---------------------------------------------------------------- acting on prearchive sessions


def archive(stores: Stores, actor: Actor, session: SessionRow, *, overwrite: str | None,
            new_project: str = "", force_review: bool = False, label: str = "",
            confirm_text: bool = False) -> Outcome:
    """Archive one prearchive session (optionally moving it to ``new_project`` first, optionally
    under a new session ``label``). ``force_review`` archives past a burned-in review hold,
    ``confirm_text`` past text the OCR check found outside the redacted areas."""
    actor.require(MANAGE, session.project)
    if new_project:
        actor.require(MANAGE, project_id(stores, new_project))  # archiving writes into the target project
    before = session
    if new_project and project_id(stores, new_project) != session.project:
        session = stores.catalog.session(move(stores, actor, session, new_project).before.id)
    result = stores.archiver.archive(session.id, overwrite=overwrite, actor=actor.history_name,
                                     force_review=force_review, label=label, confirm_text=confirm_text)
    return Outcome(before, stores.catalog.session(result.session_id), result.instances)


def move(stores: Stores, actor: Actor, session: SessionRow, new_project: str) -> Outcome:
    """Move a session to another project (ID, alias or Unassigned); it is rebuilt there."""
    target = project_id(stores, new_project)
    actor.require(MANAGE, session.project)
    actor.require(MANAGE, target)  # a move writes into the target project's prearchive
    moved = stores.prearchive.move(session.id, target, actor=actor.history_name)
    return Outcome(session, moved)


def move_all(stores: Stores, actor: Actor, refs: Iterable[SessionRef], new_project: str) -> list[Outcome]:
    """XNAT's prearchive move service: an admin's target project is checked first (before ``refs``
    are read); every session is found and checked before the first one moves."""
    target = project_id(stores, new_project) if actor.admin else new_project
    sessions = prearchive_sessions(stores, actor, refs, MANAGE)
    actor.require(MANAGE, target)
    return [move(stores, actor, s, new_project) for s in sessions]


def delete(stores: Stores, actor: Actor, session: SessionRow) -> Outcome:
    actor.require(MANAGE, session.project)
    stores.prearchive.delete(session.id, actor=actor.history_name)
    return Outcome(session, None)


def rebuild(stores: Stores, actor: Actor, session: SessionRow) -> Outcome:
    """Re-scan the session folder against the catalog, then build."""
    actor.require(UPLOAD, session.project)
    row = stores.prearchive.rebuild(session.id, actor=actor.history_name) or stores.catalog.session(session.id)
    return Outcome(session, row)


def build(stores: Stores, actor: Actor, session: SessionRow) -> Outcome:
    actor.require(UPLOAD, session.project)
    row = stores.prearchive.build(session.id, actor=actor.history_name) or stores.catalog.session(session.id)
    return Outcome(session, row)


def set_status(stores: Stores, actor: Actor, session: SessionRow, status: str) -> Outcome:
    """XNAT's set-status, for sessions stuck after a failure: READY, RECEIVING or ERROR only."""
    actor.require(MANAGE, session.project)
    if status not in SETTABLE:
        raise InvalidInput(f"status must be one of {', '.join(SETTABLE)}")
    row = stores.catalog.set_status(session.id, status, "set over HTTP", expect=RECEIVABLE,
                                    actor=actor.history_name)
    return Outcome(session, row)


# ---------------------------------------------------------------- importing


@dataclass(frozen=True)
class ImportPlan:
    """The checked parameters of one import (`import_project` made the checks on its project)."""

    explicit: Explicit
    archive: bool
    overwrite: str | None
    ignore_unparsable: bool
    prevent_anon: bool
    auto_archive: bool | None


def import_project(stores: Stores, actor: Actor, project: str, *, archive: bool) -> str:
    """The project an import stages into, checked before a byte of it arrives: the actor must be
    allowed to upload there (to archive: to manage it); only site admins may leave it to routing."""
    if project:
        actor.require(MANAGE if archive else UPLOAD, project)
        project = project_id(stores, project)
    elif not actor.admin:
        raise Forbidden("only site admins may import without naming a project (project= or dest=)")
    if archive and project == UNASSIGNED:
        raise InvalidInput("data cannot be archived into Unassigned; name a project")
    return project


def import_upload(stores: Stores, actor: Actor, upload: Path, plan: ImportPlan, *, address: str,
                  tracker: BatchProgress | None = None) -> list[Outcome]:
    """Stage an upload (zip, tar, tar.gz or one file) as one all-or-nothing batch; with
    ``plan.archive``, build and archive every session it made. ``address``: where it came from;
    ``tracker`` follows the batch's counts and phase (an upload status reads it)."""
    from dicomd.bulk import stage_batch

    source = Source(kind=actor.via, address=address, explicit=plan.explicit, prevent_anon=plan.prevent_anon,
                    auto_archive=plan.auto_archive)
    try:
        result = stage_batch(stores, upload, source, ignore_unparsable=plan.ignore_unparsable, consume=True,
                             tracker=tracker)
    except DicomdError as exc:
        note_refused(stores.catalog, source, type(exc).__name__)
        raise
    sessions = list({s.id: s for s in result.sessions}.values())
    if not sessions:
        raise InvalidInput("nothing in the upload could be staged")
    logger.info("%s import by %s: %d staged, %d duplicates, %d sessions", actor.via, actor.name, result.staged,
                result.duplicates, len(sessions))
    if not plan.archive:
        return [Outcome(s, s) for s in sessions]
    if tracker is not None:
        tracker.set_phase(ARCHIVING)
    outcomes = []
    for session in sessions:
        stores.prearchive.build(session.id, actor=actor.history_name)
        outcomes.append(archive(stores, actor, stores.catalog.session(session.id), overwrite=plan.overwrite))
    return outcomes


def retry_quarantined(stores: Stores, actor: Actor, entry: QuarantineRow, explicit: Explicit) -> Staged:
    """Run held data through ingest again (after a config or routing fix); success marks it retried.

    No permission check: only the CLI offers this (its operator may do anything)."""
    if entry.status != HELD:
        raise InvalidState(f"entry {entry.id} is {entry.status}, not held")
    source = Source(kind=actor.via, address=f"quarantine/{entry.id}", explicit=explicit)
    staged = stores.ingest.stage(stores.layout.resolve(entry.path), source, move=False)
    stores.catalog.set_quarantine_status(entry.id, RETRIED)
    return staged


# ---------------------------------------------------------------- before archiving


def session_warnings(stores: Stores, actor: Actor, session: SessionRow) -> list[str]:
    """Conflicts and states an operator should know about before archiving.

    No permission check: only the CLI shows these (its operator may do anything)."""
    found: list[str] = []
    if session.status in NEEDS_ATTENTION and session.reason:
        found.append(f"{session.status}: {session.reason}")
    if session.project == UNASSIGNED:
        found.append("routed to Unassigned: move it to a project before archiving (prearchive move --to)")
    existing = stores.catalog.find_session(Stage.ARCHIVE, session.project, "", session.label)
    if existing is not None:
        same = existing.study_instance_uid == session.study_instance_uid
        found.append(
            f"the archive already has {existing.url} ({'same study' if same else 'another study'}); "
            "archiving needs --overwrite append or delete"
        )
    else:
        other = stores.catalog.archived_study(session.project, session.study_instance_uid)
        if other is not None:
            found.append(f"this study is already archived as {other.url}")
    if session.late_for is not None and existing is None:
        found.append("late data for a study that was being archived when it arrived")
    found += _text_warnings(stores, session)
    return found


def _text_warnings(stores: Stores, session: SessionRow) -> list[str]:
    """The OCR check's text that no rule rectangle covers: archiving will ask for --confirm-text."""
    findings = session.summary_fields().get(PIXEL_TEXT)
    if not findings or not findings.get("characters") or "OCR found" in session.reason:
        return []
    if stores.hooks.anonymizers.pixel_policy(session.project).allow_burned_in:
        return []
    marks = stores.hooks.inspect_pixels.marks(session)
    outside = text_outside(findings, {scan: blanked for scan, (blanked, _text) in marks.items()})
    if not outside:
        return []
    return [f"the OCR check found {outside.characters} characters in {outside.boxes} boxes outside the rectangles"
            f" to blank (scan {', '.join(outside.scans)}): archiving needs --confirm-text"]


def preview_anonymization(stores: Stores, actor: Actor, session: SessionRow,
                          scans: Sequence[str] = ()) -> dict[str, Any]:
    """What archiving would change, on the first instance of each scan (nothing is written).

    A JSON-ready report; per scan, the attribute changes and `pixels` (burned-in reasons, the
    redaction rule and its rectangles, the review hold); `pixel_text`, the OCR check's findings. No permission check: only the CLI
    offers this (its operator may do anything)."""
    import pydicom

    project = stores.config.project(session.project)
    if project is None or not project.anonymize.enabled:
        return _preview_off(session, f"anonymization is not configured for project {session.project!r}: "
                                     "archiving keeps the files as received")
    try:
        from dicomd.anonymize import Anonymizer, Labels, PseudonymStore
        from dicomd.anonymize import preview as diff_preview
        from dicomd.anonymize.ordered import in_order
    except ImportError:  # pragma: no cover - the package ships with dicomd
        return _preview_off(session, "this build has no anonymization support")
    store = PseudonymStore(stores.config.keys_url)
    anonymizer = in_order(Anonymizer(session.project, project.anonymize, store), store,
                          archive_order(stores.config, stores.catalog, session.project))  # as the archive runs it
    labels = Labels(session.project, session.subject, session.label, session.subject_from or "default",
                    session.session_from or "default")
    policy = PixelPolicy(stores.config.pixel_rules, project.anonymize.allow_burned_in)
    firsts: dict[str, Any] = {}
    for inst in stores.catalog.instances(session.id):
        if (not scans or inst.scan_id in scans) and inst.scan_id not in firsts:
            firsts[inst.scan_id] = inst
    if scans and not firsts:
        raise DicomdError(f"no scan {', '.join(scans)} in {session.url}")
    subject, label = session.subject, session.label
    report_scans: list[dict[str, Any]] = []
    for scan_id, inst in firsts.items():
        entry: dict[str, Any] = {"scan_id": scan_id, "file": inst.path.rsplit("/", 1)[-1]}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(stores.layout.resolve(inst.path), force=True)
            subject, label = anonymizer.archive_labels(ds, labels)
            entry["burned_in"] = anonymizer.burned_in_reason(ds)
            decision = policy.decide(ds)
            entry["pixels"] = {"reasons": list(decision.reasons), "rule": decision.rule.name if decision.rule else None,
                               "rectangles": [list(b) for b in decision.areas(ds)], "hold": decision.hold}
            entry["changes"] = [asdict(c) for c in diff_preview(ds, anonymizer, labels)]
        except DicomdError as exc:
            entry["error"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not hide the others
            logger.debug("preview of %s failed", inst.path, exc_info=True)
            entry["error"] = f"{type(exc).__name__}: {exc}"
        report_scans.append(entry)
    return {"session": session.url, "enabled": True, "fingerprint": anonymizer.fingerprint,
            "subject": subject, "label": label, "scans": report_scans,
            "pixel_text": describe_text(session.summary_fields().get(PIXEL_TEXT))}


def _preview_off(session: SessionRow, message: str) -> dict[str, Any]:
    return {"session": session.url, "enabled": False, "message": message, "scans": []}
