"""The de-identified writes of an archive job spread over worker processes (`[archive] workers`).

The job (`dicomd.archive.Archiver`) still owns everything that makes it crash-safe: it records
the staging state before any file is written, waits for every worker's files, makes them durable
with its one sync, then records the plan. A worker only reads prearchive files and writes work
files (no fsync, no catalog): what it wrote counts only once the job has synced and planned it.
While it waits, the job's process asks the kernel to start writing back each file a worker has
reported (a hint, `storage.hint_writeback`), so that its one sync finds little left to do.
A worker that dies (killed, out of memory) breaks the pool: the job's wait ends with
`StorageFailure`, the job rolls back like any failed staging (session ERROR, data still in the
prearchive) and the next job starts a new pool. A job that stops early for any reason first
waits for the chunks already running, so no worker writes into a work folder after it is gone.

The pool is started on first use (never by opening the stores: receivers and read-only commands
never pay for it) and shared by every job of the process. Each worker builds a project's
de-identification once, from the same settings and the same pseudonym store file as the job's
process, and checks that it has the job's fingerprint; the store records the pairs it derives
(SQLite serialises the processes' writes). Per-instance work is `anonymize_file`, the one
function the job's own process runs too when there is no pool (sessions under
`MIN_PARALLEL_INSTANCES`, or `workers = 1`), so both ways write the same bytes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import warnings
from concurrent.futures import Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import pydicom
from pydicom.dataset import Dataset

from dicomd import storage
from dicomd.anonymize.anonymizer import Anonymizer, Labels
from dicomd.anonymize.encode import write_file
from dicomd.anonymize.filemeta import fresh_file_meta
from dicomd.anonymize.ordered import ScriptFirst, script_first
from dicomd.anonymize.pseudonyms import PseudonymStore
from dicomd.archive import Written
from dicomd.catalog import InstanceRow
from dicomd.config import AnonymizeConfig
from dicomd.crashpoints import crashpoint
from dicomd.dburl import DatabaseUrl
from dicomd.errors import Rejected, StorageFailure
from dicomd.layout import Layout
from dicomd.pixels.policy import PixelPolicy
from dicomd.pixels.redact import CannotRedact, redact
from dicomd.pixels.rules import Box

logger = logging.getLogger(__name__)

MIN_PARALLEL_INSTANCES = 16  # below this a session is written by the job's process (no start-up, no IPC)
_CHUNKS_PER_WORKER = 4  # small enough to balance the workers, large enough to amortise the pipe
_MAX_CHUNK = 64
_START_TIMEOUT = 120.0  # seconds ArchivePool.start waits for every worker to answer


def read_dataset(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path)


@dataclass(frozen=True)
class PixelStep:
    """What the pixel step did to one instance (folded into the job's totals by its writer)."""

    hold: str | None = None  # why a person must look before it is archived
    rule: str | None = None  # the redaction rule that blanked it
    unredacted: bool = False  # it may carry burned-in text and no rule cleaned it
    areas: tuple[Box, ...] = ()  # the rectangles blanked


def anonymize_file(anonymizer: Anonymizer | ScriptFirst, labels: Labels, policy: PixelPolicy, src: Path,
                   inst: InstanceRow, work_dir: Path) -> tuple[Written, PixelStep]:
    """De-identify one prearchive file into ``work_dir`` (not synced: the job syncs once); the
    redaction rule that matches it blanks its rectangles (Clean Pixel Data)."""
    ds = read_dataset(src)
    decision = policy.decide(ds)
    anonymizer.apply(ds, labels)
    step = PixelStep(hold=decision.hold, unredacted=bool(decision.reasons))
    if decision.rule is not None:
        try:
            redact(ds, decision.rule)
        except CannotRedact as exc:
            hold = decision.hold or (None if policy.allow_burned_in else f"rule {decision.rule.name}: {exc}")
            step = PixelStep(hold=hold, unredacted=bool(decision.reasons))
        else:
            step = PixelStep(hold=decision.hold, rule=decision.rule.name, areas=tuple(decision.areas(ds)))
    if decision.rule is not None:
        fresh_file_meta(ds)  # redaction may have re-encoded the pixels (apply wrote group 0002 before)
    sop_uid = str(ds.get("SOPInstanceUID", inst.sop_instance_uid))
    # the scan folder: the Series Number, else the new Series UID (never the original's, which
    # the prearchive folder is named from when there is no number: SR, KO, PR, ECG ...)
    scan_id = Layout.scan_id(str(ds.get("SeriesNumber", "") or ""), str(ds.get("SeriesInstanceUID", "") or ""))
    rel = Layout.instance_relpath(scan_id, sop_uid)
    dst = work_dir / rel
    storage.ensure_dir(dst.parent)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        digest, size = write_file(ds, out)  # pydicom's bytes (save_as), hashed as they are written
    written = Written(
        relpath=rel,
        scan_id=scan_id,
        sop_instance_uid=sop_uid,
        sop_class_uid=str(ds.get("SOPClassUID", inst.sop_class_uid)),
        study_instance_uid=str(ds.get("StudyInstanceUID", "")),
        series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        series_number=str(ds.get("SeriesNumber", inst.series_number) or ""),
        series_description=str(ds.get("SeriesDescription", "") or "")[:256],
        modality=inst.modality,
        study_date=str(ds.get("StudyDate", "") or "")[:8],
        study_time=str(ds.get("StudyTime", "") or "")[:16],
        transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", inst.transfer_syntax)),  # redaction may decode
        size=size,
        sha256=digest,
    )
    return written, step


# ---------------------------------------------------------------- what crosses the pipe


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build a project's de-identification as the job's process has it."""

    project: str
    settings: AnonymizeConfig
    script_first: bool
    fingerprint: str
    keys: DatabaseUrl  # the pseudonym store (a file or a PostgreSQL database)


@dataclass(frozen=True)
class Chunk:
    spec: WorkerSpec
    labels: Labels
    policy: PixelPolicy
    work_dir: str
    items: tuple[tuple[str, InstanceRow], ...]  # (prearchive file, its row)


@dataclass(frozen=True)
class Outcome:
    """One instance's result: written (with what its pixel step did), or rejected by the script."""

    written: Written | None
    pixels: PixelStep = PixelStep()
    rejected: str = ""


# ---------------------------------------------------------------- the worker side


class _WorkerState:
    """One worker process's de-identifications, built on first use per spec (a worker serves
    every job of its pool, so a project is built once per worker, not per chunk)."""

    def __init__(self) -> None:
        self.store: PseudonymStore | None = None
        self.built: dict[WorkerSpec, Anonymizer | ScriptFirst] = {}

    def anonymizer(self, spec: WorkerSpec) -> Anonymizer | ScriptFirst:
        found = self.built.get(spec)
        if found is None:
            if self.store is None or self.store.url != spec.keys:
                if self.store is not None:
                    self.store.close()
                self.store = PseudonymStore(spec.keys)
            full = Anonymizer(spec.project, spec.settings, self.store)
            found = script_first(full, self.store) if spec.script_first else full
            if found.fingerprint != spec.fingerprint:  # the script file changed under the job
                raise StorageFailure(f"project {spec.project}: its anonymization script changed since dicomd"
                                     " loaded it; restart dicomd (or the command) to archive with the new one")
            self.built[spec] = found
        return found


_STATE = _WorkerState()  # per worker process: the pool's processes run nothing else


def _worker_started() -> None:
    """Each worker's initializer: unpickling it imported this module (pydicom, dicognito, the
    profile tables), so a worker is ready before its first chunk."""


def _worker_ready(hold: float = 0.0) -> int:
    time.sleep(hold)  # busy for a moment, so that the next call goes to another worker if one is free
    return os.getpid()


def write_chunk(chunk: Chunk) -> list[Outcome]:
    """Runs in a worker: de-identify a chunk of one job's instances."""
    anonymizer = _STATE.anonymizer(chunk.spec)
    work_dir = Path(chunk.work_dir)
    out: list[Outcome] = []
    for src, inst in chunk.items:
        crashpoint("archive.worker")
        try:
            written, pixels = anonymize_file(anonymizer, chunk.labels, chunk.policy, Path(src), inst, work_dir)
        except Rejected as exc:
            out.append(Outcome(None, rejected=str(exc)))
            continue
        out.append(Outcome(written, pixels))
    return out


# ---------------------------------------------------------------- the job side


def chunks_of(items: Sequence[tuple[Path, InstanceRow]], workers: int) -> list[tuple[tuple[str, InstanceRow], ...]]:
    """``items`` in consecutive chunks whose sizes differ by one at most (the larger first), about
    ``_CHUNKS_PER_WORKER`` per worker and none over ``_MAX_CHUNK``: no short chunk left at the end
    while a worker waits for the other's last long one."""
    flat = [(str(src), inst) for src, inst in items]
    count = min(len(flat), max(workers * _CHUNKS_PER_WORKER, -(-len(flat) // _MAX_CHUNK)))
    if count == 0:
        return []
    size, longer = divmod(len(flat), count)
    bounds = [i * size + min(i, longer) for i in range(count + 1)]
    return [tuple(flat[a:b]) for a, b in zip(bounds, bounds[1:])]


class ArchivePool:
    """The worker processes of one `Stores` (daemon or command), started on first use."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._executor: ProcessPoolExecutor | None = None
        self.answered: set[int] = set()  # the worker processes that answered `start`
        self._lock = threading.Lock()

    @property
    def started(self) -> bool:
        return self._executor is not None

    def wanted(self, instances: int) -> bool:
        return self.size > 1 and instances >= MIN_PARALLEL_INSTANCES

    def _get(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                # spawn: the daemon has threads (a fork would copy their locks mid-use)
                self._executor = ProcessPoolExecutor(self.size, mp_context=multiprocessing.get_context("spawn"),
                                                     initializer=_worker_started)
                logger.info("started %d archive worker processes", self.size)
            return self._executor

    def _discard(self, executor: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is executor:
                self._executor = None
        executor.shutdown(wait=False, cancel_futures=True)

    def run(self, spec: WorkerSpec, labels: Labels, policy: PixelPolicy, work_dir: Path,
            items: Sequence[tuple[Path, InstanceRow]]) -> Iterator[Outcome]:
        """Each item's outcome, in the items' order, as the chunks finish."""
        executor = self._get()
        try:
            futures: list[Future[list[Outcome]]] = [
                executor.submit(write_chunk, Chunk(spec, labels, policy, str(work_dir), chunk))
                for chunk in chunks_of(items, self.size)]
        except BrokenProcessPool as exc:
            self._discard(executor)
            raise _died() from exc
        try:
            for future in futures:
                try:
                    outcomes = future.result()
                except BrokenProcessPool as exc:
                    self._discard(executor)
                    raise _died() from exc
                yield from outcomes
        finally:
            # nothing still writes into work_dir once the job goes on (or rolls back); a chunk that
            # could be withdrawn never starts (and a broken pool never marks it as done: no wait)
            wait([future for future in futures if not future.cancel()])

    def start(self) -> float:
        """Start the workers now rather than with the first large job (the benchmark times jobs
        the way a running daemon has them: pool up), and return once every one of them has
        answered (one that is ready first could answer for all). Returns the seconds it took."""
        began = time.monotonic()
        if self.size > 1:
            executor = self._get()
            answered = self.answered = set()
            while len(answered) < self.size and time.monotonic() - began < _START_TIMEOUT:
                try:
                    answered.update(future.result() for future in
                                    [executor.submit(_worker_ready, 0.02) for _ in range(self.size)])
                except BrokenProcessPool:
                    self._discard(executor)  # the first job starts a new pool (and says why if it fails)
                    break
        return time.monotonic() - began

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _died() -> StorageFailure:
    logger.error("an archive worker process ended unexpectedly (killed or out of memory); its job fails")
    return StorageFailure("an archive worker process ended unexpectedly (killed or out of memory);"
                          " nothing was archived, the data is still in the prearchive")
