"""Upload statuses: imports that run in the background (`async=true`) or that a client follows by a
name of its own (XNAT's `http-session-listener=ID`), polled at `GET /data/status/ID`.

A job is opened before its upload's first byte is read, follows the batch's counts
(`dicomd.progress.BatchProgress`) while the body arrives and while it is staged, and ends `done`
with the result URIs or `failed` with the error. Bounded: at most ``max_running`` background
imports at once (more are refused with RateLimited, HTTP 429, until one ends) and at most
``max_kept`` statuses kept (the oldest finished go first). Statuses live in memory only: a restart
forgets them, and an import that was running when the daemon stopped rolls back with its batch.

Only the job's owner and site admins may read a status.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from dicomd.errors import Conflict, DicomdError, Forbidden, InvalidInput, NotFound, RateLimited
from dicomd.logsafe import escape
from dicomd.progress import DONE, FAILED, BatchProgress

logger = logging.getLogger(__name__)

RECEIVING, QUEUED, RUNNING = "receiving", "queued", "running"
FINISHED = (DONE, FAILED)
_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
RETRY_AFTER = 5  # seconds a refused background import is told to wait


@dataclass
class ImportJob:
    """One followed import. ``state``: receiving, queued, running, done or failed."""

    id: str
    owner: str
    background: bool
    tracker: BatchProgress = field(default_factory=BatchProgress)
    state: str = RECEIVING
    uris: list[str] = field(default_factory=list)
    error: str = ""
    created: float = field(default_factory=time.time)
    finished: float | None = None

    @property
    def uri(self) -> str:
        return f"/data/status/{self.id}"

    def view(self, clean: Callable[[str], str] = str) -> dict[str, Any]:
        """The status as JSON: dicomd's fields, and XNAT's `msgs` (its upload page's format: a list
        of `{status, msg}` whose last one starts `XXX` once the import ended). ``clean`` tidies the
        error text (the HTTP edge removes server paths)."""
        counts = self.tracker.snapshot()
        error = clean(self.error) if self.error else ""
        messages = [{"status": "PROCESSING", "msg": f"received {counts['received_bytes']} bytes"},
                    {"status": "PROCESSING", "msg": f"{counts['phase']}: {self.tracker.text()}"}]
        if counts["refused"] and self.state == DONE:
            messages.append({"status": "WARNING", "msg": f"{counts['refused']} file(s) refused and quarantined"})
        if self.state == DONE:
            stage = "archive" if self.uris and all(u.startswith("/data/archive") for u in self.uris) else "prearchive"
            urls = ";".join(u[len("/data"):] if u.startswith("/data") else u for u in self.uris)
            messages.append({"status": "COMPLETED", "msg": f"XXX{stage}:{urls}"})
        elif self.state == FAILED:
            messages.append({"status": "FAILED", "msg": f"XXX{error}"})
        return {
            "id": self.id, "uri": self.uri, "owner": self.owner, "async": self.background, "state": self.state,
            "done": self.state in FINISHED, "progress": counts, "uris": list(self.uris), "error": error,
            "created": self.created, "finished": self.finished, "msgs": [messages],
        }


class ImportJobs:
    """The upload statuses of one HTTP API (owned by its app)."""

    def __init__(self, max_running: int, max_kept: int) -> None:
        self.max_running = max_running
        self.max_kept = max(max_kept, max_running)
        self._jobs: dict[str, ImportJob] = {}  # in creation order
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_running, thread_name_prefix="dicomd-import")
        self._pending: dict[str, Callable[[], None]] = {}  # queued job -> its clean-up

    # ------------------------------------------------------------ opening and reading

    def open(self, owner: str, job_id: str = "", *, background: bool) -> ImportJob:
        """A new status for ``owner``'s import, named ``job_id`` or a fresh name. Refused when the name
        is taken (by another user, or by a running import), or when ``background`` and
        ``max_running`` background imports are under way (RateLimited)."""
        if job_id and not _ID_RE.match(job_id):
            raise InvalidInput("http-session-listener must be 1-64 characters from A-Z a-z 0-9 _ . -")
        with self._lock:
            old = self._jobs.get(job_id) if job_id else None
            if old is not None and (old.owner != owner or old.state not in FINISHED):
                raise Conflict(f"upload status {job_id!r} is in use; choose another http-session-listener")
            if background and sum(j.background and j.state not in FINISHED for j in self._jobs.values()) \
                    >= self.max_running:
                raise RateLimited(f"{self.max_running} background imports are running; try again when one ends",
                                  RETRY_AFTER)
            self._jobs.pop(job_id, None)
            self._evict()
            job = ImportJob(job_id or secrets.token_hex(8), owner, background)
            self._jobs[job.id] = job
        return job

    def _evict(self) -> None:
        """Make room for one more (under the lock): the oldest finished statuses go first."""
        finished = [k for k, j in self._jobs.items() if j.state in FINISHED]
        while len(self._jobs) >= self.max_kept and finished:
            del self._jobs[finished.pop(0)]
        if len(self._jobs) >= self.max_kept:
            raise RateLimited(f"{len(self._jobs)} imports are being followed; try again when one ends", RETRY_AFTER)

    def get(self, name: str, admin: bool, job_id: str) -> ImportJob:
        """A status for user ``name`` (site admins may read every one); Forbidden for another's."""
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFound(f"no upload status {job_id!r} (statuses are kept in memory until the daemon restarts)")
        if job.owner != name and not admin:
            raise Forbidden(f"upload status {job_id!r} belongs to another user")
        return job

    def jobs(self, name: str, admin: bool) -> list[ImportJob]:
        with self._lock:
            return [j for j in self._jobs.values() if admin or j.owner == name]

    # ------------------------------------------------------------ running

    def run(self, job: ImportJob, work: Callable[[], Sequence[str]]) -> list[str]:
        """Run ``work`` (which returns the result URIs) here, recording its outcome; errors re-raise."""
        job.state = RUNNING
        try:
            uris = list(work())
        except BaseException as exc:
            self.fail(job, exc)
            raise
        job.uris, job.state, job.finished = uris, DONE, time.time()
        job.tracker.set_phase(DONE)
        return uris

    def submit(self, job: ImportJob, work: Callable[[], Sequence[str]], cleanup: Callable[[], None]) -> None:
        """Run ``work`` on a background thread, then ``cleanup`` whatever happened."""
        job.state = QUEUED
        with self._lock:
            self._pending[job.id] = cleanup

        def body() -> None:
            with self._lock:
                self._pending.pop(job.id, None)
            try:
                self.run(job, work)
            except DicomdError:
                pass  # recorded on the job
            except Exception:  # the background import's one catch-all: recorded, logged, the pool goes on
                logger.exception("background import %s failed unexpectedly", escape(job.id))
            finally:
                cleanup()

        try:
            self._pool.submit(body)
        except RuntimeError as exc:  # the pool is shut down: the server is stopping
            with self._lock:
                self._pending.pop(job.id, None)
            cleanup()
            self.fail(job, exc)
            raise Conflict("the server is stopping; the import was not started") from None

    def fail(self, job: ImportJob, exc: BaseException) -> None:
        job.error = str(exc) if isinstance(exc, DicomdError) else f"internal error ({type(exc).__name__})"
        job.state, job.finished = FAILED, time.time()
        job.tracker.set_phase(FAILED)

    def close(self) -> None:
        """Stop taking jobs and wait for the running ones; queued ones never start (their uploads
        are removed and their statuses say so)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            pending, self._pending = self._pending, {}
            jobs = {job_id: self._jobs.get(job_id) for job_id in pending}
        for job_id, cleanup in pending.items():
            cleanup()
            job = jobs[job_id]
            if job is not None:
                self.fail(job, Conflict("the server stopped before this import started; send it again"))
