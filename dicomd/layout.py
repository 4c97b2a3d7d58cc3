"""Where everything lives under the data directory. The only module that builds store paths."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def safe_name(value: str, fallback: str = "unknown") -> str:
    """A file or folder name from an untrusted value: no separators, no dot-dot, not empty."""
    cleaned = _UNSAFE.sub("_", value.strip())[:128].strip(".")
    return cleaned or fallback


def uid_name(value: str, fallback: str = "unknown") -> str:
    """A file or folder name for a UID, different for every different value.

    A valid UID (digits and dots, at most 64 characters) is its own name. Anything else gets a
    cleaned prefix plus the first 16 hex digits of the SHA-256 of the exact value, so ``1.2.3.``
    and ``1.2.3``, ``1.2/3`` and ``1.2_3``, or two long UIDs with one start never share a name (a
    hashed name holds a ``_``, so it never equals a valid UID or a number either).
    """
    return value if _plain_uid(value) else _hashed_name(value, fallback)


def _plain_uid(value: str) -> bool:
    return len(value) <= 64 and _UID.match(value) is not None


def _hashed_name(value: str, fallback: str) -> str:
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{safe_name(value, fallback)[:64]}_{digest}"


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def catalog(self) -> Path:
        return self.root / "catalog.sqlite"

    @property
    def prearchive(self) -> Path:
        return self.root / "prearchive"

    @property
    def archive(self) -> Path:
        return self.root / "archive"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def work(self) -> Path:
        """Archive jobs build here before renaming into the archive (same file system)."""
        return self.root / "work"

    @property
    def locks(self) -> Path:
        """Lock files shared by the processes of one daemon (empty files, never data)."""
        return self.root / "locks"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def pseudonyms(self) -> Path:
        """The per-project keys and the original -> pseudonym map (owner-only, never in the catalog)."""
        return self.keys / "pseudonyms.sqlite"

    def folders(self) -> tuple[Path, ...]:
        return (self.root, self.prearchive, self.archive, self.quarantine, self.tmp, self.work, self.keys)

    def resolve(self, relative: str) -> Path:
        """An absolute path for a catalog path; refuses anything that would leave the data dir."""
        path = (self.root / relative).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"path {relative!r} leaves the data directory")
        return path

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root))

    @staticmethod
    def instance_name(sop_instance_uid: str) -> str:
        return uid_name(sop_instance_uid) + ".dcm"

    @staticmethod
    def scan_id(series_number: str, series_uid: str) -> str:
        number = series_number.strip()
        if number and re.fullmatch(r"-?\d+", number):
            return str(int(number))
        uid = series_uid or number
        # a UID without a dot would look like a series number: it is hashed like any odd value
        return uid if "." in uid and _plain_uid(uid) else _hashed_name(uid, "1")

    def session_dir(self, relative_dir: str) -> Path:
        return self.root / relative_dir

    def instance_path(self, relative_dir: str, scan_id: str, sop_instance_uid: str) -> Path:
        return self.root / relative_dir / "SCANS" / scan_id / "DICOM" / self.instance_name(sop_instance_uid)

    def quarantine_item(self, source: str) -> Path:
        stamp = time.strftime("%Y%m%d")
        return self.quarantine / stamp / f"{int(time.time() * 1000)}_{safe_name(source)}_{uuid.uuid4().hex[:8]}"
