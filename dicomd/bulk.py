"""Stage a batch of files at once: a zip, a tar (plain, gz, bz2, xz), one DICOM file or a folder.

A batch is all-or-nothing. Archives are expanded member by member into a temporary folder under
``tmp/`` (never whole in memory), refusing hostile ones (paths escaping the target, links, devices,
too many members, too many uncompressed bytes - counted as they are written, not as the headers
claim). Stray files are skipped and listed, never a reason to refuse the batch: a file that is not
DICOM at all (no `DICM` at byte 128 and no plausible leading group 0002/0008 element), a
`DICOMDIR`, and the usual system files (hidden files, `Thumbs.db`, `desktop.ini`, `__MACOSX/`).
Every other member's header is checked before anything is staged; a DICOM member that is corrupt
fails the batch unless ``ignore_unparsable`` is set, in which case it is quarantined. If staging fails
part-way, what the batch added is removed again, so a failed upload leaves nothing behind.

Example::

    result = stage_batch(stores, Path("upload.zip"), Source("HTTP", address="10.0.0.7"))
    print(result.staged, [s.url for s in result.sessions])
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import lzma
import os
import re
import shutil
import stat
import struct
import tarfile
import time
import zipfile
import zlib
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Callable, Iterator

from dicomd import storage
from dicomd.catalog import SessionRow
from dicomd.config import Config
from dicomd.errors import HostileArchive, InvalidInput, Rejected, StorageFailure, StorageFull
from dicomd.header import HeaderInfo, read_header
from dicomd.ingest import Source, Staged, quarantine
from dicomd.layout import safe_name
from dicomd.logsafe import escape
from dicomd.progress import CHECKING, EXTRACTING, STAGING, BatchProgress

if TYPE_CHECKING:
    from dicomd.stores import Stores

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024
ROOM_CHECK_BYTES = 8 * 1024 * 1024  # free space is checked again after this many extracted bytes
STAGE_THREADS = 4
STALE_SECONDS = 24 * 3600  # a batch folder untouched this long belongs to a crashed process
TEMP_PREFIX = "batch-"
MAX_HEADER_READ = 16 * 1024 * 1024  # a tar header (pax, GNU long name) larger than this is hostile
ZIP = "zip"
TAR = "tar"
FOLDER = "folder"
FILE = "file"
_DRIVE = re.compile(r"^[A-Za-z]:")
_CENTRAL_DIR_SIG = b"PK\x01\x02"


@dataclass(frozen=True)
class Limits:
    """What an archive may hold before it is refused as hostile."""

    max_members: int = 100_000
    max_uncompressed_bytes: int = 16 * 2**30
    max_member_bytes: int = 4 * 2**30

    @classmethod
    def from_config(cls, config: Config) -> "Limits":
        lim = config.archive_limits
        return cls(lim.max_members, lim.max_uncompressed_bytes, lim.max_member_bytes)


@dataclass(frozen=True)
class BatchResult:
    """What one batch did. ``bad`` holds (member name, reason) of every member not staged."""

    sessions: tuple[SessionRow, ...]
    staged: int
    duplicates: int
    bad: tuple[tuple[str, str], ...]
    quarantined: int
    skipped: tuple[tuple[str, str], ...] = ()  # (member name, why) of stray files left out

    def skipped_text(self, shown: int = 10) -> str:
        """`skipped 2 non-DICOM files: README.txt, MANIFEST.json` (empty when none)."""
        if not self.skipped:
            return ""
        names = ", ".join(name for name, _why in self.skipped[:shown])
        more = f" and {len(self.skipped) - shown} more" if len(self.skipped) > shown else ""
        return f"skipped {len(self.skipped)} non-DICOM file(s): {names}{more}"


@dataclass(frozen=True)
class Member:
    """One file of a batch: its name inside the batch and where its bytes are now."""

    name: str
    path: Path
    temporary: bool  # True when the file is ours (extracted) and may be consumed

    @property
    def size(self) -> int:
        return self.path.stat().st_size


Progress = Callable[[int, int], None]


# ---------------------------------------------------------------------------------- public


def detect(path: Path) -> str:
    """"folder", "zip", "tar" or "file" from the leading bytes (never the name)."""
    if path.is_dir():
        return FOLDER
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return ZIP
    if head[:2] == b"\x1f\x8b" or head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        return TAR
    if len(head) >= 262 and head[257:262] == b"ustar":
        return TAR
    return FILE


def stage_batch(
    stores: "Stores",
    path: Path,
    source: Source,
    *,
    ignore_unparsable: bool = False,
    limits: Limits | None = None,
    progress: Progress | None = None,
    consume: bool = False,
    keep_skipped: bool = False,
    tracker: BatchProgress | None = None,
) -> BatchResult:
    """Stage everything in ``path`` as one all-or-nothing batch (see the module docstring).

    ``limits`` default to the configuration's ``[archive_limits]``. ``progress(done, total)`` is called with member counts as members are staged. With ``consume``
    the caller gives up a single-file ``path`` (an upload): it is moved into the store or the
    quarantine. A folder's files are always copied (a roll-back must not lose originals) and left
    where they are; archives are extracted, so ``path`` itself is left in place. With
    ``keep_skipped`` (the drop folder, which removes what it read) skipped files are kept in the
    quarantine with their reason instead of being left out silently. ``tracker`` is kept up to date
    with the counts (files found, skipped, refused, staged, duplicates) as the batch goes.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidInput(f"{path.name} does not exist")
    storage.check_free(stores.layout.root, stores.config.min_free_bytes)
    clean_stale(stores.layout.tmp)
    tracker = tracker or BatchProgress()
    with _temp_folder(stores) as temp:
        tracker.set_phase(EXTRACTING)
        members = []
        for member in expand(path, temp, limits or Limits.from_config(stores.config), consume=consume,
                             min_free=stores.config.min_free_bytes):
            members.append(member)
            tracker.add(files=1)
        if not members:
            raise InvalidInput(f"{path.name}: no files to import")
        members, skipped = split_strays(members)
        tracker.set(skipped=len(skipped))
        if not members and not keep_skipped:
            raise InvalidInput(f"{path.name}: no DICOM files to import ({_skipped_reasons(skipped)})")
        tracker.set_phase(CHECKING)
        good, bad = check_members(members)
        tracker.set(refused=len(bad), to_stage=len(good))
        if bad and not ignore_unparsable:
            raise InvalidInput(_describe_bad(path.name, bad))
        tracker.set_phase(STAGING)
        staged, rejected = _stage_all(stores, good, source, progress, tracker)
        bad += rejected
        kept = [(m, f"skipped: {why}") for m, why in skipped] if keep_skipped else []
        for member, reason in bad + kept:
            quarantine(
                stores.layout, stores.catalog, member.path, source,
                f"{member.name}: {reason}", move=member.temporary,
            )
    result = _result(stores, staged, bad)
    if skipped:
        logger.info("batch: %s", f"skipped {len(skipped)} non-DICOM file(s)")
        logger.debug("batch: %s", ", ".join(m.name for m, _why in skipped))
    return dataclasses.replace(result, skipped=tuple((m.name, why) for m, why in skipped),
                               quarantined=result.quarantined + len(kept))


def expand(path: Path, temp: Path, limits: Limits, *, consume: bool = False, min_free: int = 0) -> Iterator[Member]:
    """The members of ``path``: extracted into ``temp`` for archives, found in place otherwise.
    Extraction keeps ``min_free`` bytes free on the disk of ``temp`` (StorageFull otherwise)."""
    kind = detect(path)
    if kind == FOLDER:
        yield from _walk(path)
    elif kind == ZIP:
        yield from _extract_zip(path, temp, _Budget(limits, temp, min_free))
    elif kind == TAR:
        yield from _extract_tar(path, temp, _Budget(limits, temp, min_free))
    else:
        yield Member(path.name, path, consume)


SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", "icon\r", ".ds_store"})
_LEADING_GROUPS = (0x0002, 0x0008)


def stray_reason(member: Member) -> str | None:
    """Why a batch member is a stray file to skip (None for a DICOM candidate)."""
    name = member.name.replace("\\", "/").rsplit("/", 1)[-1]
    if name.lower() in SYSTEM_FILES or name.startswith("._"):
        return "a system file"
    if name.upper() == "DICOMDIR":
        return "a DICOMDIR (a media index, not an image)"
    try:
        with open(member.path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return None  # unreadable: check_members reports it
    if head[128:132] == b"DICM":
        return None
    return None if _plausible_dataset(head) else "not a DICOM file"


def _plausible_dataset(head: bytes) -> bool:
    """A bare dataset (no preamble) starts with a group 0002 or 0008 element, implicit or explicit VR."""
    if len(head) < 8:
        return False
    group, element = struct.unpack("<HH", head[:4])
    if group not in _LEADING_GROUPS or element > 0x1FFF:
        return False
    vr = head[4:6]
    if vr.isalpha() and vr.isupper():
        return True
    (length,) = struct.unpack("<I", head[4:8])
    return length < 2**24 or length == 0xFFFFFFFF


def split_strays(members: list[Member]) -> tuple[list[Member], list[tuple[Member, str]]]:
    kept: list[Member] = []
    strays: list[tuple[Member, str]] = []
    for member in members:
        reason = stray_reason(member)
        if reason is None:
            kept.append(member)
        else:
            strays.append((member, reason))
    return kept, strays


def _skipped_reasons(skipped: list[tuple[Member, str]]) -> str:
    return "; ".join(f"{m.name}: {why}" for m, why in skipped[:10]) or "nothing in it"


def check_members(members: list[Member]) -> tuple[list[tuple[Member, HeaderInfo]], list[tuple[Member, str]]]:
    """Read every member's header; split into (parseable, header) and (unparseable, reason)."""
    good: list[tuple[Member, HeaderInfo]] = []
    bad: list[tuple[Member, str]] = []
    for member in members:
        try:
            good.append((member, read_header(member.path)))
        except InvalidInput as exc:
            bad.append((member, str(exc)))
        except OSError as exc:
            bad.append((member, f"cannot read: {exc.strerror or exc}"))
    return good, bad


def member_name_ok(name: str) -> str | None:
    """The normalised relative name of an archive member, or None when it is to be skipped
    (hidden files, macOS resource forks). Raises HostileArchive for names escaping the target."""
    if "\x00" in name:
        raise HostileArchive(f"member name with a NUL byte: {name!r}")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or _DRIVE.match(norm):
        raise HostileArchive(f"member with an absolute path: {name!r}")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise HostileArchive(f"member path escapes the archive: {name!r}")
    if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
        return None
    return "/".join(parts)


# ---------------------------------------------------------------------------------- expansion


class _Budget:
    """Counts members and bytes actually written; refuses what goes over the limits, and stops
    (StorageFull) before the disk of ``folder`` goes below the ``min_free`` floor: each member is
    checked against its declared size before it is written, and the floor again every few MiB."""

    def __init__(self, limits: Limits, folder: Path | None = None, min_free: int = 0) -> None:
        self.limits = limits
        self.folder = folder
        self.min_free = min_free
        self.members = 0
        self.bytes = 0

    def check_room(self, needed: int = 0) -> None:
        if self.folder is not None:
            storage.check_free(self.folder, self.min_free, needed)

    def count_member(self, name: str) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise HostileArchive(f"more than {self.limits.max_members} members (at {name!r})")

    def check_claim(self, name: str, claimed: int) -> None:
        if claimed > self.limits.max_member_bytes:
            raise HostileArchive(f"member {name!r} claims {claimed} bytes, over {self.limits.max_member_bytes}")
        self.check_room(claimed)

    def copy(self, src: IO[bytes], dst: Path, name: str) -> None:
        written = 0
        next_check = ROOM_CHECK_BYTES
        try:
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(CHUNK):
                    written += len(chunk)
                    self.bytes += len(chunk)
                    if written > self.limits.max_member_bytes:
                        raise HostileArchive(
                            f"member {name!r} expands past {self.limits.max_member_bytes} bytes"
                        )
                    if self.bytes > self.limits.max_uncompressed_bytes:
                        raise HostileArchive(
                            f"archive expands past {self.limits.max_uncompressed_bytes} bytes (at {name!r})"
                        )
                    if written >= next_check:
                        next_check += ROOM_CHECK_BYTES
                        self.check_room()
                    out.write(chunk)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(f"disk full while extracting {name!r}") from exc
            raise StorageFailure(f"cannot extract {name!r}: {exc.strerror or exc}") from exc


def _temp_name(temp: Path, index: int, name: str) -> Path:
    return temp / f"{index:06d}-{safe_name(name.rsplit('/', 1)[-1], 'member')}"


def _extract_zip(path: Path, temp: Path, budget: _Budget) -> Iterator[Member]:
    with open(path, "rb") as fh:
        bound = _zip_entry_bound(fh)
    if bound > budget.limits.max_members:
        raise HostileArchive(f"zip has up to {bound} entries, more than {budget.limits.max_members}")
    try:
        with zipfile.ZipFile(path) as zf:
            for index, info in enumerate(zf.infolist()):
                budget.count_member(info.filename)
                name = member_name_ok(info.filename)
                mode = info.external_attr >> 16
                kind = stat.S_IFMT(mode)
                if kind == stat.S_IFLNK:
                    raise HostileArchive(f"member {info.filename!r} is a symbolic link")
                if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                    raise HostileArchive(f"member {info.filename!r} is not a regular file")
                if info.is_dir() or kind == stat.S_IFDIR or name is None:
                    continue
                if info.flag_bits & 0x1:
                    raise InvalidInput(f"member {info.filename!r} is encrypted")
                budget.check_claim(info.filename, info.file_size)
                dst = _temp_name(temp, index, name)
                with zf.open(info) as src:
                    budget.copy(src, dst, info.filename)
                yield Member(name, dst, True)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError,
            zlib.error, lzma.LZMAError) as exc:  # corrupt compressed data surfaces as zlib/lzma errors
        raise InvalidInput(f"{path.name}: not a readable zip archive: {exc}") from None


def _zip_entry_bound(fh: IO[bytes]) -> int:
    """An upper bound on the entries zipfile would load, counted without loading them: the
    central-directory signatures between the start of the central directory and its end record."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    tail_len = min(size, 65536 + 22)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return 0  # zipfile will refuse it as not a zip
    end = size - tail_len + at
    (cd_size,) = struct.unpack("<I", tail[at + 12 : at + 16])
    locator = tail.rfind(b"PK\x06\x07", 0, at)
    if locator >= 0 and at - locator >= 20:
        (z64_at,) = struct.unpack("<Q", tail[locator + 8 : locator + 16])
        if z64_at < size:
            fh.seek(z64_at)
            record = fh.read(56)
            if record[:4] == b"PK\x06\x06" and len(record) == 56:
                (cd_size,) = struct.unpack("<Q", record[40:48])
                end = z64_at
    start = max(0, end - cd_size)
    fh.seek(start)
    count, carry, remaining = 0, b"", end - start
    while remaining > 0:
        chunk = fh.read(min(CHUNK, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        data = carry + chunk
        count += data.count(_CENTRAL_DIR_SIG)
        carry = data[-3:]  # a signature split across chunks is counted once, in the next round
    return count


class _HeaderGuard:
    """A read/seek/tell wrapper for tarfile that refuses giant single reads (hostile pax or
    GNU long-name headers would otherwise be read whole into memory)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > MAX_HEADER_READ:
            raise HostileArchive(f"tar header or read of {size} bytes refused")
        return self.raw.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()


def _open_decompressed(path: Path) -> IO[bytes]:
    import bz2
    import gzip
    import lzma

    with open(path, "rb") as fh:
        head = fh.read(6)
    if head[:2] == b"\x1f\x8b":
        return gzip.open(path, "rb")
    if head[:3] == b"BZh":
        return bz2.open(path, "rb")
    if head[:6] == b"\xfd7zXZ\x00":
        return lzma.open(path, "rb")
    return open(path, "rb")


def _extract_tar(path: Path, temp: Path, budget: _Budget) -> Iterator[Member]:
    raw = _open_decompressed(path)
    try:
        with tarfile.open(fileobj=_HeaderGuard(raw), mode="r:") as tf:  # type: ignore[call-overload]
            index = 0
            while True:
                info = tf.next()
                if info is None:
                    break
                index += 1
                budget.count_member(info.name)
                name = member_name_ok(info.name)
                if info.issym() or info.islnk():
                    raise HostileArchive(f"member {info.name!r} is a link")
                if info.isdir():
                    continue
                if not info.isfile():
                    raise HostileArchive(f"member {info.name!r} is a device, fifo or special file")
                if name is None:
                    continue
                budget.check_claim(info.name, info.size)
                src = tf.extractfile(info)
                if src is None:  # pragma: no cover - isfile() members always have data
                    continue
                dst = _temp_name(temp, index, name)
                with src:
                    budget.copy(src, dst, info.name)
                yield Member(name, dst, True)
                tf.members.clear()  # tarfile remembers every member; we never look back
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error, lzma.LZMAError) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(f"disk full while extracting {path.name}") from exc
        raise InvalidInput(f"{path.name}: not a readable tar archive: {exc}") from None
    finally:
        raw.close()


def _walk(folder: Path) -> Iterator[Member]:
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(root, name)
            if path.is_symlink() or not path.is_file():
                logger.warning("not importing %s: not a regular file (links are not followed)", escape(path))
                continue
            yield Member(str(path.relative_to(folder)), path, False)


# ---------------------------------------------------------------------------------- staging


def _stage_all(
    stores: "Stores",
    good: list[tuple[Member, HeaderInfo]],
    source: Source,
    progress: Progress | None,
    tracker: BatchProgress,
) -> tuple[list[Staged], list[tuple[Member, str]]]:
    """Stage the members with a few threads (fsync and catalog commits overlap and group); on any
    failure, wait for the ones in flight and roll back everything the batch staged."""
    started = time.time()
    staged: list[Staged] = []
    rejected: list[tuple[Member, str]] = []

    checked = {id(member): (header, storage.file_stamp(member.path)) for member, header in good}

    def one(member: Member) -> Staged | str:
        header, stamp = checked[id(member)]
        if not member.temporary and storage.file_stamp(member.path) != stamp:
            header = None  # someone else's file changed since it was checked: read it again
        try:
            return stores.ingest.stage(member.path, source, move=member.temporary, header=header)
        except Rejected as exc:
            return f"rejected: {exc}"
        except FileNotFoundError as exc:
            raise InvalidInput(f"{member.name}: vanished while the batch was staged ({exc.strerror})") from None

    pool = ThreadPoolExecutor(max_workers=STAGE_THREADS, thread_name_prefix="dicomd-batch")
    futures: dict[Future[Staged | str], Member] = {}
    done = 0
    try:
        for wave in _waves(good):  # repeats of one SOP Instance UID are staged in member order
            batch = {pool.submit(one, member): member for member in wave}
            futures.update(batch)
            for future in as_completed(batch):
                outcome = future.result()
                if isinstance(outcome, str):
                    rejected.append((batch[future], outcome))
                    tracker.add(refused=1)
                else:
                    staged.append(outcome)
                    tracker.add(**{"duplicates" if outcome.outcome == "duplicate" else "staged": 1})
                done += 1
                if progress is not None:
                    progress(done, len(good))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        seen = {id(s) for s in staged}
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is None:
                outcome = future.result()
                if isinstance(outcome, Staged) and id(outcome) not in seen:
                    staged.append(outcome)
        _roll_back(stores, staged, started)
        raise
    pool.shutdown(wait=True)
    return staged, rejected


def _waves(good: list[tuple[Member, HeaderInfo]]) -> list[list[Member]]:
    """Members split so that no wave holds one SOP Instance UID twice (usually a single wave)."""
    waves: list[list[Member]] = []
    seen: dict[str, int] = {}
    for member, header in good:
        n = seen.get(header.sop_instance_uid, 0)
        seen[header.sop_instance_uid] = n + 1
        if n == len(waves):
            waves.append([])
        waves[n].append(member)
    return waves


def _roll_back(stores: "Stores", staged: list[Staged], started: float) -> None:
    """Remove what this batch added: new instance rows and files, and sessions it created that
    are left empty. Replaced instances keep their new bytes (the old ones are gone)."""
    catalog, layout = stores.catalog, stores.layout
    sessions: dict[int, SessionRow] = {}
    for item in staged:
        sessions[item.session.id] = item.session
        if item.outcome != "added":
            if item.outcome == "replaced":
                logger.warning("roll back: %s was replaced by this batch and keeps the new bytes", item.path.name)
            continue
        rel = layout.relative(item.path)
        ids = [r.id for r in catalog.instance_by_uid(item.sop_instance_uid)
               if r.session_id == item.session.id and r.path == rel]
        try:
            catalog.remove_instance_rows(ids)
            item.path.unlink(missing_ok=True)
            storage.remove_empty_dirs(item.path.parent, layout.prearchive)
        except Exception:  # noqa: BLE001 - keep rolling back the rest; recovery reconciles later
            logger.exception("roll back: could not remove %s", item.path.name)
    for session_id, row in sessions.items():
        try:
            current = catalog.session(session_id)
            if current.instances == 0 and current.created_at >= started:
                stores.ingest.forget_session(session_id)
                catalog.delete_session_rows(session_id, "batch import failed; rolled back", "import")
                storage.remove_empty_dirs(layout.session_dir(row.relative_dir), layout.prearchive)
            else:
                catalog.refresh_counts(session_id)
        except Exception:  # noqa: BLE001
            logger.exception("roll back: could not clean session %d", session_id)
    logger.warning("batch failed: rolled back %d staged instance(s)", len(staged))


def _result(stores: "Stores", staged: list[Staged], bad: list[tuple[Member, str]]) -> BatchResult:
    ids = list(dict.fromkeys(s.session.id for s in staged))
    sessions = tuple(stores.catalog.session(i) for i in ids)
    duplicates = sum(1 for s in staged if s.outcome == "duplicate")
    return BatchResult(
        sessions=sessions,
        staged=len(staged) - duplicates,
        duplicates=duplicates,
        bad=tuple((m.name, reason) for m, reason in bad),
        quarantined=len(bad),
    )


def _describe_bad(batch: str, bad: list[tuple[Member, str]], shown: int = 20) -> str:
    lines = [f"{m.name}: {reason}" for m, reason in bad[:shown]]
    more = f"; and {len(bad) - shown} more" if len(bad) > shown else ""
    return f"{batch}: {len(bad)} unparseable member(s), nothing staged: " + "; ".join(lines) + more


# ---------------------------------------------------------------------------------- temp folder


def clean_stale(tmp: Path, older_than: float = STALE_SECONDS) -> None:
    """Remove batch folders a crashed process left in ``tmp`` (untouched for ``older_than`` s)."""
    limit = time.time() - older_than
    try:
        candidates = [p for p in tmp.iterdir() if p.name.startswith(TEMP_PREFIX) and p.is_dir()]
    except OSError:
        return
    for folder in candidates:
        try:
            if folder.stat().st_mtime < limit:
                logger.warning("removing a stale batch folder %s", folder.name)
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


class _temp_folder:
    """A private folder under tmp/ for one batch, removed on exit whatever happened."""

    def __init__(self, stores: "Stores") -> None:
        self.path = stores.layout.temp_dir(TEMP_PREFIX)

    def __enter__(self) -> Path:
        storage.ensure_dir(self.path)
        return self.path

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
