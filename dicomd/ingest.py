"""One entry for every receiver: parse the header, route, stage the file durably, record it.

`Ingest.stage(path, source)` returns only when the file is fsync'd under its final prearchive
name and its row is committed in the catalog, or raises a DicomdError that the receiver turns
into its own kind of answer (DIMSE status, HTTP status, quarantine entry).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from dicomd import storage
from dicomd.catalog import Catalog, NewInstance, SessionRow
from dicomd.config import Config
from dicomd.errors import DicomdError, InvalidInput, StorageFailure, StorageFull
from dicomd.header import HeaderInfo, read_header
from dicomd.layout import Layout
from dicomd.crashpoints import crashpoint
from dicomd.logsafe import escape
from dicomd.routing import Explicit, Route, RoutingTable, route

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Who sent an instance and how; recorded with it."""

    kind: str  # DICOM | HTTP | DROP | CLI
    ae_title: str = ""
    address: str = ""
    receiver: int | None = None  # index into config.receivers
    fixed_project: str = ""
    explicit: Explicit = field(default_factory=Explicit)
    prevent_anon: bool = False
    auto_archive: bool | None = None

    def describe(self) -> str:
        """Who sent it, as one line of text (peer-supplied parts escaped: it is logged)."""
        if self.kind == "DICOM":
            return f"DICOM:{escape(self.ae_title)}@{escape(self.address)}"
        return self.kind if not self.address else f"{self.kind}:{escape(self.address)}"


@dataclass(frozen=True)
class Staged:
    """One staged instance: where it went and what happened."""

    session: SessionRow
    sop_instance_uid: str
    outcome: str  # added | duplicate | replaced
    path: Path


class SiteTransform(Protocol):
    """The site script hook: rewrites a staged file in place (see dicomd.anonymize)."""

    def __call__(self, path: Path, header: HeaderInfo, route: Route) -> HeaderInfo: ...


class Ingest:
    def __init__(
        self,
        config: Config,
        catalog: Catalog,
        layout: Layout,
        *,
        site_transform: SiteTransform | None = None,
        on_staged: Callable[[Staged], None] | None = None,
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.layout = layout
        self.site_transform = site_transform
        self.on_staged = on_staged
        site = config.routing
        self._tables = [
            RoutingTable.from_text(r.routing, site) for r in config.receivers
        ]
        self._site_table = RoutingTable.from_text(site)
        self._sessions: dict[tuple[str, str, str], SessionRow] = {}
        self._lock = threading.Lock()
        # flock on SQLite, an advisory lock on PostgreSQL (dicomd.catalog.locks)
        self._same_file = catalog.key_lock(layout.locks)
        # A receive engine's batched durability (dicomd.engine.durable): makes a new file durable
        # (data and folder entry) after its rename. None: each file is synced before its rename.
        self.barrier: Callable[[Path], None] | None = None

    # ------------------------------------------------------------------ public

    def stage(self, path: Path, source: Source, *, move: bool = False, header: HeaderInfo | None = None,
              digest: tuple[str, int] | None = None) -> Staged:
        """Stage the file at ``path``. With ``move`` the file is consumed (renamed when possible).
        ``header`` is the file's already-checked header (batch import reads it first), if known;
        ``digest`` its (sha256, size), if known (the asyncio engine hashes as it receives)."""
        storage.check_free(self.layout.root, self.config.min_free_bytes)
        header = header if header is not None else read_header(path)
        where = self.route(header, source)
        if self.site_transform is not None and not source.prevent_anon:
            header = self.site_transform(path, header, where)
            digest = None  # the script may have rewritten the file
        prefix = b"" if header.has_preamble else header.meta_prefix()
        session = self._session_for(where, header, source)
        try:
            for _attempt in range(3):
                scan_id = Layout.scan_id(header.series_number, header.series_instance_uid)
                dst = self.layout.instance_path(session.relative_dir, scan_id, header.sop_instance_uid)
                # The same SOP Instance UID may arrive on two associations (or in two receiver
                # processes) at once: file and row must come from the same one.
                with self._same_file.hold(str(dst)):
                    existed = dst.exists()
                    deferred = self.barrier is not None and not existed and not prefix
                    sha256, size = storage.install_file(path, dst, move=move, prefix=prefix, sync_dir=False,
                                                        digest=None if prefix else digest,
                                                        sync_after=deferred)
                    crashpoint("ingest.installed")
                    record = NewInstance(
                        scan_id=scan_id,
                        sop_instance_uid=header.sop_instance_uid,
                        sop_class_uid=header.sop_class_uid,
                        series_instance_uid=header.series_instance_uid,
                        series_number=header.series_number,
                        series_description=header.series_description,
                        modality=header.modality,
                        study_date=header.study_date,
                        study_time=header.study_time,
                        transfer_syntax=header.transfer_syntax,
                        size=size,
                        sha256=sha256,
                        path=self.layout.relative(dst),
                        source=source.describe(),
                    )
                    try:
                        if deferred:
                            _durable(self.barrier, dst)  # type: ignore[arg-type]
                        outcome = self.catalog.add_instance(session.id, record,
                                                            sync_dir=None if deferred else dst.parent)
                    except DicomdError:
                        # Not recorded (e.g. the disk filled under the catalog): the caller refuses the
                        # instance, so it must not stay on disk either. A moved source goes back.
                        if not existed:
                            _undo_install(dst, path if move else None)
                        raise
                crashpoint("ingest.recorded")
                if outcome != "moved":
                    staged = Staged(session, header.sop_instance_uid, outcome, dst)
                    if self.on_staged is not None:
                        self.on_staged(staged)
                    return staged
                # The session was taken for archiving/moving between lookup and commit: the file
                # must go to the session that now takes new data for this study.
                self._forget(where, header)
                path, move, prefix, digest = dst, True, b"", (sha256, size)
                session = self._session_for(where, header, source)
        except DicomdError:
            self._drop_if_empty(session, where, header)
            raise
        raise InvalidInput("could not find a prearchive session that accepts this instance")  # pragma: no cover

    def _drop_if_empty(self, session: SessionRow, where: Route, header: HeaderInfo) -> None:
        """A refused instance leaves nothing behind: not even the session opened for it."""
        try:
            if self.catalog.drop_if_empty(session.id):
                self._forget(where, header)
        except DicomdError as exc:
            logger.debug("could not drop the empty session %d: %s", session.id, exc)

    def route(self, header: HeaderInfo, source: Source) -> Route:
        table = self._tables[source.receiver] if source.receiver is not None else self._site_table
        return route(
            header.routing,
            resolve_project=self.config.resolve_project,
            table=table,
            fixed_project=source.fixed_project,
            explicit=source.explicit,
            study_uid=header.study_instance_uid if self.config.session_label == "study" else None,
        )

    def forget_session(self, session_id: int) -> None:
        """Drop a cached session (it was archived, moved or deleted)."""
        with self._lock:
            for key, row in list(self._sessions.items()):
                if row.id == session_id:
                    del self._sessions[key]

    # ------------------------------------------------------------------ private

    def _key(self, where: Route, header: HeaderInfo) -> tuple[str, str, str]:
        return (where.project, header.study_instance_uid, where.session)

    def _forget(self, where: Route, header: HeaderInfo) -> None:
        with self._lock:
            self._sessions.pop(self._key(where, header), None)

    def _session_for(self, where: Route, header: HeaderInfo, source: Source) -> SessionRow:
        key = self._key(where, header)
        with self._lock:
            cached = self._sessions.get(key)
        if cached is not None:
            return cached
        auto = source.auto_archive if source.auto_archive is not None else where.auto_archive
        row = self.catalog.open_prearchive_session(
            project=where.project,
            subject=where.subject,
            label=where.session,
            study_uid=header.study_instance_uid,
            subject_from=where.subject_from,
            session_from=where.session_from,
            source=source.describe(),
            auto_archive=auto,
            prevent_anon=source.prevent_anon,
        )
        with self._lock:
            self._sessions[key] = row
            if len(self._sessions) > 10000:
                self._sessions.clear()
        return row


def _durable(barrier: Callable[[Path], None], dst: Path) -> None:
    try:
        barrier(dst)
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise (StorageFull if full else StorageFailure)(f"cannot store {dst.name}: {exc.strerror or exc}") from exc


def _undo_install(dst: Path, source: Path | None) -> None:
    try:
        if source is not None and not source.exists():
            os.replace(dst, source)
        else:
            dst.unlink(missing_ok=True)
    except OSError as exc:
        logger.error("could not undo an unrecorded file %s: %s", dst.name, exc)


def quarantine(layout: Layout, catalog: Catalog, path: Path, source: Source, reason: str, *, move: bool) -> int:
    """Keep refused bytes with a reason file beside them; returns the quarantine entry id."""
    folder = layout.quarantine_item(source.kind)
    storage.ensure_dir(folder)
    target = folder / "data.bin"
    _digest, size = storage.install_file(path, target, move=move)
    detail = {"reason": reason, "source": source.describe(), "original_name": path.name}
    storage.write_bytes_durably(folder / "reason.json", json.dumps(detail, indent=2).encode())
    storage.write_bytes_durably(folder / "reason.txt", (reason + "\n").encode())
    entry = catalog.add_quarantine(source=source.describe(), reason=reason, path=layout.relative(target), size=size)
    logger.warning("quarantined an object from %s: %s (quarantine entry %d)", source.describe(), escape(reason), entry)
    logger.debug("quarantine entry %d was %s", entry, escape(path.name))
    return entry


def note_refused(catalog: Catalog, source: Source, why: str) -> None:
    """Count a refused object for `dicomd status` (an event naming the way in, never the sender).
    Best effort: a refusal often happens because the disk or the catalog is failing."""
    try:
        catalog.event("refused", {"source": source.kind, "why": why})
    except DicomdError:
        logger.debug("could not record a refusal from %s", source.kind)
