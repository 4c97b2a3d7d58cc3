"""Durable file operations: owner-only folders, fsync'd writes and renames, the free-space floor."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import BinaryIO

from dicomd.errors import StorageFailure, StorageFull

logger = logging.getLogger(__name__)
CHUNK = 1024 * 1024


def ensure_dir(path: Path) -> Path:
    """Create ``path`` and its parents with mode 0700 (existing folders are left as they are)."""
    if not path.is_dir():
        missing = [path, *(p for p in path.parents)]
        missing = missing[: next((i for i, p in enumerate(missing) if p.is_dir()), len(missing))]
        try:
            for folder in reversed(missing):  # every new level 0700, not just the last (mkdir(parents=True))
                try:
                    folder.mkdir(mode=0o700)
                except FileExistsError:
                    pass
        except OSError as exc:
            raise _translate(exc, f"cannot create folder {path.name!r}") from exc
    return path


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hint_writeback(path: Path) -> None:
    """Have the kernel start writing a file's data to disk now, without waiting for it (and drop
    it from the page cache once written): a hint, not a sync. A job that writes many files and
    then syncs once calls it for the files already written while the others are being written,
    so that its one `flush_everything` finds less left to do. Does nothing where there is no
    fadvise, or when the file cannot be opened. (The receive engine does the same for an open
    file with sync_file_range: dicomd.engine.durable.start_writeback.)"""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def flush_everything() -> None:
    """One sync of all file systems: cheaper than an fsync per file when a job wrote many files."""
    os.sync()


def file_stamp(path: Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file, or None when it is gone: enough to see that it changed."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def check_free(path: Path, floor: int, needed: int = 0) -> None:
    """Raise StorageFull when the file system holding ``path`` has less than ``floor`` bytes free,
    or would have once ``needed`` more bytes are written. A floor of 0 turns the check off.
    The message names no path (it may reach an HTTP client)."""
    if floor <= 0:
        return
    try:
        free = shutil.disk_usage(path).free
    except OSError as exc:
        raise StorageFailure(f"cannot read free space of the data disk: {exc.strerror or exc}") from exc
    if free - needed < floor:
        if needed:
            raise StorageFull(f"{needed} more bytes would leave less than the free-space floor of {floor} bytes"
                              f" ({free} free)")
        raise StorageFull(f"only {free} bytes free on the data disk, below the floor of {floor}")


def sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def install_file(src: Path, dst: Path, *, move: bool, prefix: bytes = b"", sync_dir: bool = True,
                 digest: tuple[str, int] | None = None, sync_after: bool = False) -> tuple[str, int]:
    """Put ``src`` at ``dst`` durably (fsync'd file, atomic rename, fsync'd folder).

    With ``sync_dir=False`` the folder is not fsync'd here: the caller must do it (ingest hands
    it to the catalog writer, which fsyncs each folder once per group commit) before answering.

    With ``move`` the source is renamed when it is on the same file system and ``prefix`` is empty
    (no copy at all); otherwise it is copied (``prefix`` first) through a temporary name beside
    ``dst``. Returns (sha256, size) of what is now at ``dst``. ``digest`` is the caller's (sha256,
    size) of ``src`` when it already knows it (a rename then reads nothing). With ``sync_after`` a
    renamed file is not synced here: the caller makes it durable after the rename (the asyncio
    receive engine batches that across associations, dicomd.engine.durable).
    """
    ensure_dir(dst.parent)
    tmp: Path | None = None
    try:
        if move and not prefix:
            try:
                sha, size = digest if digest is not None else sha256_file(src)
                if not sync_after:
                    with open(src, "rb+") as fh:
                        os.fdatasync(fh.fileno())
                os.chmod(src, 0o600)
                os.replace(src, dst)
                if sync_dir:
                    fsync_dir(dst.parent)
                return sha, size
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
        tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.part")  # unique: same-UID stores may race
        digest_obj = hashlib.sha256()
        size = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out, open(src, "rb") as fh:
            if prefix:
                out.write(prefix)
                digest_obj.update(prefix)
                size += len(prefix)
            size += _copy(fh, out, digest_obj)
            out.flush()
            os.fdatasync(out.fileno())
        os.replace(tmp, dst)
        if sync_dir:
            fsync_dir(dst.parent)
        if move:
            src.unlink(missing_ok=True)
        return digest_obj.hexdigest(), size
    except OSError as exc:
        if tmp is not None:  # a half-written copy must not hold on to the space (ENOSPC)
            tmp.unlink(missing_ok=True)
        raise _translate(exc, f"cannot store {dst.name}") from exc


def _copy(fh: BinaryIO, out: BinaryIO, digest: "hashlib._Hash") -> int:
    size = 0
    while chunk := fh.read(CHUNK):
        out.write(chunk)
        digest.update(chunk)
        size += len(chunk)
    return size


def write_bytes_durably(dst: Path, data: bytes) -> None:
    ensure_dir(dst.parent)
    tmp = dst.with_name(f".{dst.name}.part")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dst)
        fsync_dir(dst.parent)
    except OSError as exc:
        raise _translate(exc, f"cannot write {dst.name}") from exc


def remove_empty_dirs(start: Path, stop: Path) -> None:
    """Remove ``start`` and its parents while they are empty, up to (not including) ``stop``."""
    current = start
    while current != stop and stop in current.parents:
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent


def _translate(exc: OSError, what: str) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"{what}: disk full")
    return StorageFailure(f"{what}: {exc.strerror or type(exc).__name__}")  # str(exc) may name a path
