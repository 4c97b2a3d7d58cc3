"""Watched drop folders: whatever lands in one is staged through the same path as C-STORE.

Each top-level entry of a watched folder (a file, a folder of files, a zip or a tar) is one unit.
A watchdog observer per folder and a start-up scan only *wake* the worker thread; the disk is the
source of truth (a rescan every few seconds catches missed events). An entry is read only once its
signature (size and mtime of every file in it) has stayed the same for ``stable_seconds``, so a
slow copy is never read half-way. Hidden and temporary names (``.*``, ``*.part``, ``*.tmp``,
``~*``) are ignored, as is the ``processed/`` folder.

After durable staging the entry is deleted, or moved to ``<folder>/processed/`` when the folder is
configured with ``processed = true``. A file that is not DICOM goes to a quarantine entry with a
reason file. Archives are all-or-nothing: one bad member quarantines the whole archive. Nothing is
deleted that was not staged or quarantined; on storage errors the entry is left and retried.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from dicomd import storage
from dicomd.bulk import FILE, FOLDER, BatchResult, detect, stage_batch
from dicomd.config import Config, DropFolderConfig
from dicomd.errors import DicomdError, InvalidInput
from dicomd.ingest import Source, quarantine
from dicomd.logsafe import escape

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

    from dicomd.stores import Stores

logger = logging.getLogger(__name__)

PROCESSED = "processed"
RESCAN_SECONDS = 5.0
RETRY_SECONDS = 30.0
TEMP_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload", ".filepart")


def ignored(name: str) -> bool:
    """Hidden and temporary names a copy in progress uses; never read."""
    lowered = name.lower()
    return name.startswith((".", "~")) or lowered.endswith(TEMP_SUFFIXES)


@dataclass(frozen=True)
class Watched:
    """One configured drop folder, resolved."""

    path: Path
    config: DropFolderConfig

    @property
    def processed(self) -> Path:
        return self.path / PROCESSED

    def source(self) -> Source:
        return Source("DROP", address=str(self.path), fixed_project=self.config.project)

    def entry(self, path: Path) -> Path | None:
        """The top-level entry of this folder that ``path`` belongs to (None when ignored)."""
        try:
            rel = path.relative_to(self.path)
        except ValueError:
            return None
        if not rel.parts or rel.parts[0] == PROCESSED or ignored(rel.parts[0]):
            return None
        return self.path / rel.parts[0]


@dataclass(frozen=True)
class Signature:
    """What must not change for ``stable_seconds`` before an entry is read."""

    files: int  # visible files (what a batch would read)
    size: int
    digest: str  # every file, hidden ones too: a copy in progress changes it


def signature(entry: Path) -> Signature | None:
    """Size, mtime and names of every file under ``entry`` (None when it vanished or is not a
    regular file or folder)."""
    try:
        if entry.is_symlink():
            return None
        if entry.is_file():
            st = entry.stat()
            return Signature(1, st.st_size, f"{st.st_size}:{st.st_mtime_ns}")
        if not entry.is_dir():
            return None
        digest = hashlib.sha1()
        files = size = 0
        for root, dirs, names in os.walk(entry):
            dirs.sort()
            hidden_dir = any(part.startswith(".") for part in Path(root).relative_to(entry).parts)
            for name in sorted(names):
                path = os.path.join(root, name)
                st = os.lstat(path)
                files += 0 if hidden_dir or name.startswith(".") else 1
                size += st.st_size
                digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return Signature(files, size, digest.hexdigest())
    except OSError:
        return None


class _Stopping(Exception):
    """The service is stopping in the middle of a batch."""


@dataclass
class _Pending:
    watched: Watched
    signature: Signature | None
    since: float


class _Wake(FileSystemEventHandler):
    """Watchdog callback: note which entry changed and wake the worker; never does work itself."""

    def __init__(self, owner: "DropFolders", watched: Watched) -> None:
        self.owner = owner
        self.watched = watched

    def on_any_event(self, event: FileSystemEvent) -> None:
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                entry = self.watched.entry(Path(os.fsdecode(raw)))
                if entry is not None:
                    self.owner.notify(self.watched, entry)


class DropFolders:
    """The drop-folder service the daemon starts: observers plus one worker thread."""

    def __init__(self, config: Config, stores: "Stores") -> None:
        self.config = config
        self.stores = stores
        self.folders = [Watched(self._resolve(c.path), c) for c in config.drop_folders]
        self._observers: list["BaseObserver"] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._noticed: dict[Path, Watched] = {}
        self._pending: dict[Path, _Pending] = {}
        self._settled: dict[Path, Signature | None] = {}
        self._retry_at: dict[Path, float] = {}
        self._thread: threading.Thread | None = None
        stable = min((c.stable_seconds for c in config.drop_folders), default=1.0)
        self.poll_seconds = max(0.02, min(0.25, stable / 4))

    def _resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return (p if p.is_absolute() else self.config.data_dir / p).resolve()

    # ------------------------------------------------------------------ service

    def start(self) -> None:
        for watched in self.folders:
            storage.ensure_dir(watched.path)
            observer = Observer()
            observer.schedule(_Wake(self, watched), str(watched.path), recursive=True)
            observer.daemon = True
            observer.start()
            self._observers.append(observer)
            logger.info("watching drop folder %s (project %s)", watched.path, watched.config.project or "routed")
        self._scan()  # what was dropped while we were down
        self._thread = threading.Thread(target=self._run, name="dicomd-dropfolder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for observer in self._observers:
            observer.stop()
        for observer in self._observers:
            observer.join(timeout=10)
        self._observers.clear()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def notify(self, watched: Watched, entry: Path) -> None:
        with self._lock:
            self._noticed[entry] = watched
        self._wake.set()

    # ------------------------------------------------------------------ worker

    def _run(self) -> None:
        next_scan = time.monotonic() + RESCAN_SECONDS
        while not self._stop.is_set():
            timeout = self.poll_seconds if self._pending else RESCAN_SECONDS
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stop.is_set():
                break
            if time.monotonic() >= next_scan:
                self._scan()
                next_scan = time.monotonic() + RESCAN_SECONDS
            try:
                self._tick()
            except Exception:  # the one place that catches the unexpected: log and keep watching
                logger.exception("drop folder worker failed; continuing")

    def _scan(self) -> None:
        for watched in self.folders:
            try:
                names = os.listdir(watched.path)
            except OSError as exc:
                logger.error("cannot list drop folder %s: %s", watched.path, exc)
                continue
            for name in names:
                entry = watched.entry(watched.path / name)
                if entry is not None:
                    self.notify(watched, entry)

    def _tick(self) -> None:
        with self._lock:
            noticed, self._noticed = self._noticed, {}
        now = time.monotonic()
        for entry, watched in noticed.items():
            if entry not in self._pending:
                self._pending[entry] = _Pending(watched, None, now)
        for entry, pending in list(self._pending.items()):
            if self._stop.is_set():
                return
            self._consider(entry, pending, now)

    def _consider(self, entry: Path, pending: _Pending, now: float) -> None:
        current = signature(entry)
        if current is None:
            del self._pending[entry]
            self._settled.pop(entry, None)
            return
        if current != pending.signature:
            pending.signature, pending.since = current, now
            return
        if now - pending.since < pending.watched.config.stable_seconds:
            return
        if self._settled.get(entry) == current or self._retry_at.get(entry, 0.0) > now:
            del self._pending[entry]
            return
        del self._pending[entry]
        self._retry_at.pop(entry, None)
        if current.files == 0:
            self._settled[entry] = current  # nothing visible in it: wait for something to land
            return
        if self._ingest(pending.watched, entry):
            left = signature(entry)  # hidden files left in a folder: not read again until it changes
            if left is not None:
                self._settled[entry] = left

    # ------------------------------------------------------------------ one entry

    def _ingest(self, watched: Watched, entry: Path) -> bool:
        """Stage one entry; False when it was left in place to be retried."""
        try:
            kind = detect(entry)
            if kind == FOLDER:
                self._ingest_folder(watched, entry)
            elif kind == FILE:
                self._ingest_file(watched, entry)
            else:
                self._ingest_archive(watched, entry)
            return True
        except _Stopping:
            logger.info("drop folder: stopping; a batch was rolled back and stays for the next start")
            return False
        except (DicomdError, OSError) as exc:
            logger.error("drop folder: an entry was left in place, retried in %.0fs: %s", RETRY_SECONDS, escape(exc))
            logger.debug("drop folder: the entry left in place is %s", escape(entry.name))
        except Exception:  # a bug, not the data: keep the entry, say so, try again later
            logger.exception("drop folder: %s left in place after an unexpected error", escape(entry.name))
        self._retry_at[entry] = time.monotonic() + RETRY_SECONDS
        return False

    def _unless_stopping(self, _done: int, _total: int) -> None:
        """Progress hook of archive and folder batches: a stop rolls the batch back (the entry
        stays and is read at the next start). Single files are quick and not interrupted."""
        if self._stop.is_set():
            raise _Stopping()

    def _ingest_file(self, watched: Watched, entry: Path) -> None:
        consume = not watched.config.processed
        result = stage_batch(self.stores, entry, watched.source(), ignore_unparsable=True, consume=consume,
                             keep_skipped=True)
        if entry.exists():
            if result.quarantined:
                entry.unlink()  # a copy is in the quarantine
            else:
                self._done(watched, entry)
        _log(entry, result)

    def _ingest_archive(self, watched: Watched, entry: Path) -> None:
        try:
            result = stage_batch(self.stores, entry, watched.source(), progress=self._unless_stopping)
        except InvalidInput as exc:  # unparseable member or hostile: the whole archive is refused
            quarantine(self.stores.layout, self.stores.catalog, entry, watched.source(), str(exc), move=True)
            return
        self._done(watched, entry)
        _log(entry, result)

    def _ingest_folder(self, watched: Watched, entry: Path) -> None:
        before = {path: storage.file_stamp(path) for path in _visible_files(entry)}
        result = stage_batch(self.stores, entry, watched.source(), ignore_unparsable=True,
                             progress=self._unless_stopping, keep_skipped=True)
        # Each file listed before the batch and unchanged since is staged or quarantined now;
        # anything that arrived or changed meanwhile stays for the next round. Hidden files stay.
        target = self._processed_target(watched, entry) if watched.config.processed else None
        for path, stamp in before.items():
            if storage.file_stamp(path) != stamp:
                continue
            if target is None:
                path.unlink(missing_ok=True)
            else:
                dst = target / path.relative_to(entry)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, dst)
        _remove_empty_tree(entry)
        _log(entry, result)

    def _done(self, watched: Watched, entry: Path) -> None:
        """A staged file or archive: delete it, or move it to processed/."""
        if watched.config.processed:
            os.replace(entry, self._processed_target(watched, entry))
        else:
            entry.unlink(missing_ok=True)

    @staticmethod
    def _processed_target(watched: Watched, entry: Path) -> Path:
        storage.ensure_dir(watched.processed)
        target = watched.processed / entry.name
        if target.exists():
            target = watched.processed / f"{entry.name}.{time.strftime('%Y%m%d-%H%M%S')}.{uuid.uuid4().hex[:8]}"
        return target


def _visible_files(folder: Path) -> Iterable[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            path = Path(root, name)
            if not name.startswith(".") and path.is_file() and not path.is_symlink():
                yield path


def _remove_empty_tree(folder: Path) -> None:
    for root, _dirs, _files in os.walk(folder, topdown=False):  # children before their parents
        try:
            os.rmdir(root)
        except OSError:
            pass


def _log(entry: Path, result: BatchResult) -> None:
    # file names can carry patient names: only at DEBUG
    logger.debug("drop folder: %s read", escape(entry.name))
    logger.info(
        "drop folder: %d staged, %d duplicate(s), %d quarantined (%d of them skipped non-DICOM files), %d session(s)",
        result.staged, result.duplicates, result.quarantined, len(result.skipped), len(result.sessions),
    )
