"""The session watcher: builds idle RECEIVING sessions and archives what should auto-archive.

Disk and catalog are the truth; this loop only looks at them periodically (and when woken), so
nothing is lost if it stops. Archiving runs on this thread, never on a receiver's.

With several nodes every node runs a watcher: each session's build and auto-archive happen under
its claim (dicomd.cluster), so exactly one node does them; every ``cluster.heartbeat_seconds`` the
watcher also takes over the claims of expired nodes and finishes or rolls back what they left.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from dicomd.archive import Archiver
from dicomd.catalog import Catalog, SessionRow
from dicomd.cluster import SESSION, Node
from dicomd.config import Config
from dicomd.errors import DicomdError, NotFound
from dicomd.lifecycle import Stage, Status
from dicomd.prearchive import Prearchive
from dicomd.routing import UNASSIGNED

logger = logging.getLogger(__name__)


class SessionWatcher:
    def __init__(self, config: Config, catalog: Catalog, prearchive: Prearchive, archiver: Archiver,
                 node: Node | None = None) -> None:
        self.config = config
        self.catalog = catalog
        self.prearchive = prearchive
        self.archiver = archiver
        self.node = node
        self.taken_over: list[str] = []  # what this watcher finished for expired nodes
        self._next_sweep = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.idle = config.session_idle_seconds
        self.interval = config.watch_interval_seconds or min(max(self.idle / 4, 0.05), 60.0)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="session-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def wake(self) -> None:
        self._wake.set()

    def _resume(self) -> None:
        """Sessions built before a restart but not yet auto-archived (a kill between the two):
        decide for them again, as the tick after their build would have."""
        for row in self.catalog.sessions_in(Stage.PREARCHIVE, [Status.READY]):
            if self._stop.is_set():
                break
            if not self._may_archive(row):
                continue  # waits for a person: no claim needed to leave it alone
            with self._claimed(row.id) as got:
                fresh = self._ready(row.id) if got else None
                if fresh is not None:
                    self._maybe_archive(fresh)

    def _run(self) -> None:
        try:
            self._resume()
        except Exception:  # the watcher's one catch-all (see below)
            logger.exception("session watcher: resuming auto-archive failed")
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the one loop that catches everything, logs it and carries on
                logger.exception("session watcher tick failed")
            self._wake.wait(self.interval)
            self._wake.clear()

    def tick(self) -> int:
        """One pass: build every idle session and auto-archive what qualifies. Returns sessions built."""
        built = 0
        self._sweep()
        for session in self.catalog.idle_sessions(time.time() - self.idle):
            if self._stop.is_set():
                break
            with self._claimed(session.id) as got:  # build and auto-archive: one node, one go
                row = self.prearchive.build(session.id) if got else None
                if row is None:
                    continue
                built += 1
                logger.info("built %s: %d scans, %d instances", row.ref, row.scans, row.instances)
                self._maybe_archive(row)
        return built

    def _claimed(self, session_id: int) -> contextlib.AbstractContextManager[bool]:
        if self.node is None:
            return contextlib.nullcontext(True)
        return self.node.trying(SESSION, session_id)

    def _sweep(self) -> None:
        """Every heartbeat: take over what expired nodes claimed, finishing or rolling back their work."""
        if self.node is None or time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + self.config.cluster.heartbeat_seconds
        self.taken_over += self.take_over()

    def take_over(self) -> list[str]:
        """Recover the sessions whose claims belong to expired nodes; returns what was done."""
        if self.node is None:
            return []
        expired = set(self.node.expired())
        claims = [c for c in self.catalog.claims() if c.node in expired and c.kind == SESSION]
        stale = {int(c.item) for c in claims}
        if not stale:
            return []
        logger.warning("taking over %d claim(s) of expired node(s) %s", len(stale),
                       ", ".join(sorted({c.node for c in claims})))
        done = self.archiver.recover(sessions=stale) + self.prearchive.recover(sessions=stale)
        for session_id in stale:  # the rest: re-decide a built session's auto-archive, free the claim
            with self._claimed(session_id) as got:
                row = self._ready(session_id) if got else None
                if row is not None:
                    self._maybe_archive(row)
        return done

    def _may_archive(self, row: SessionRow) -> bool:
        """Whether _maybe_archive could do anything for this row (cheap: no catalog access)."""
        if row.project == UNASSIGNED:
            return False
        project = self.config.project(row.project)
        return row.late_for is not None or row.auto_archive is not None or bool(
            project and project.auto_archive in (4, 5))

    def _ready(self, session_id: int) -> SessionRow | None:
        """The session as it is now, if it is a READY prearchive session."""
        try:
            row = self.catalog.session(session_id)
        except NotFound:
            return None
        return row if row.stage == Stage.PREARCHIVE and row.status == Status.READY else None

    def _maybe_archive(self, row: SessionRow) -> None:
        if row.status != Status.READY or row.project == UNASSIGNED:
            return
        project = self.config.project(row.project)
        policy = project.overwrite_policy if project else "none"
        if row.late_for is not None and self.catalog.archived_study(row.project, row.study_instance_uid):
            if policy == "none":
                self.catalog.set_status(
                    row.id, Status.CONFLICT,
                    "late data for a study already in the archive; archive it with overwrite=append to merge",
                    actor="watcher",
                )
                return
            self._archive(row, policy)
            return
        wanted = bool(project and project.auto_archive in (4, 5))
        if row.auto_archive is not None and (not row.auto_archive or (project and project.header_auto_archive)):
            wanted = bool(row.auto_archive)  # `AA: false` always holds; `AA: true` only where the project allows it
        if wanted:
            self._archive(row, policy)

    def _archive(self, row: SessionRow, policy: str) -> None:
        try:
            result = self.archiver.archive(row.id, overwrite=policy, actor="auto-archive")
            logger.info("auto-archived %s -> archive session #%d", row.ref, result.session_id)
        except DicomdError as exc:
            logger.warning("auto-archive of %s stopped: %s (the reason is on the session)", row.ref, type(exc).__name__)
            logger.debug("auto-archive of %s stopped: %s", row.ref, exc)
