"""Where everything lives under the data directory, and how sessions are named: the only module
that builds store paths and session names (folders, urls)."""

from __future__ import annotations

import functools
import hashlib
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

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
        if self._real_root not in path.parents:
            raise ValueError(f"path {relative!r} leaves the data directory")
        return path

    def resolve_all(self, relatives: Sequence[str]) -> list[Path]:
        """`resolve` for many catalog paths (a session's instances): each folder is resolved once,
        and a file is resolved on its own only when it is a symbolic link."""
        folders: dict[Path, Path] = {}
        out: list[Path] = []
        for relative in relatives:
            path = self.root / relative
            if path.name in ("", ".", "..") or path.is_symlink():
                out.append(self.resolve(relative))
                continue
            folder = folders.get(path.parent)
            if folder is None:
                folder = folders[path.parent] = path.parent.resolve()
            if folder != self._real_root and self._real_root not in folder.parents:
                raise ValueError(f"path {relative!r} leaves the data directory")
            out.append(folder / path.name)
        return out

    @functools.cached_property
    def _real_root(self) -> Path:
        """The data directory with its symbolic links resolved (it does not move while dicomd runs)."""
        return self.root.resolve()

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

    @classmethod
    def instance_relpath(cls, scan_id: str, sop_instance_uid: str) -> str:
        """Where an instance lies inside its session folder: `SCANS/{scan}/DICOM/{name}`."""
        return f"SCANS/{scan_id}/DICOM/{cls.instance_name(sop_instance_uid)}"

    def session_dir(self, relative_dir: str) -> Path:
        return self.root / relative_dir

    def instance_path(self, relative_dir: str, scan_id: str, sop_instance_uid: str) -> Path:
        return self.root / relative_dir / self.instance_relpath(scan_id, sop_instance_uid)

    def temp_dir(self, prefix: str) -> Path:
        """A fresh name under tmp/ (not created) for one upload or extraction."""
        return self.tmp / f"{prefix}{uuid.uuid4().hex}"

    def quarantine_item(self, source: str) -> Path:
        stamp = time.strftime("%Y%m%d")
        return self.quarantine / stamp / f"{int(time.time() * 1000)}_{safe_name(source)}_{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- session names

# The stage names are also the names of the stores' top folders (the catalog's PREARCHIVE, ARCHIVE).
_PREARCHIVE, _ARCHIVE = "prearchive", "archive"


class Named(Protocol):
    """Anything that names a session (a catalog row, say)."""

    @property
    def stage(self) -> str: ...

    @property
    def project(self) -> str: ...

    @property
    def label(self) -> str: ...

    @property
    def timestamp(self) -> str: ...

    @property
    def subject(self) -> str: ...


@dataclass(frozen=True)
class SessionRef:
    """One session's name: project/timestamp/label in the prearchive, project/subject/label in the
    archive. Builds its folder, url and short name; parses urls and what an operator types."""

    stage: str  # "prearchive" or "archive"
    project: str
    label: str
    timestamp: str = ""  # prearchive only
    subject: str = ""  # archive only ("" when a url leaves it out)

    @classmethod
    def prearchive(cls, project: str, timestamp: str, label: str) -> SessionRef:
        return cls(_PREARCHIVE, project, label, timestamp=timestamp)

    @classmethod
    def archive(cls, project: str, subject: str, label: str) -> SessionRef:
        return cls(_ARCHIVE, project, label, subject=subject)

    @classmethod
    def of(cls, session: Named) -> SessionRef:
        if session.stage == _PREARCHIVE:
            return cls.prearchive(session.project, session.timestamp, session.label)
        return cls.archive(session.project, session.subject, session.label)

    # ------------------------------------------------------------ building

    @property
    def url(self) -> str:
        """`/prearchive/projects/P/T/S` or `/archive/projects/P/subjects/S/experiments/E`."""
        if self.stage == _PREARCHIVE:
            return f"/prearchive/projects/{self.project}/{self.timestamp}/{self.label}"
        return f"/archive/projects/{self.project}/subjects/{self.subject}/experiments/{self.label}"

    @property
    def uri(self) -> str:
        """The url as XNAT's REST API has it (under `/data`)."""
        return "/data" + self.url

    @property
    def browse_uri(self) -> str:
        """XNAT's own path of an archived session: `/data/projects/P/subjects/S/experiments/E`."""
        return f"/data/projects/{self.project}/subjects/{self.subject}/experiments/{self.label}"

    @property
    def relative_dir(self) -> str:
        """The session folder under the data dir: `prearchive/P/T/S` or `archive/P/S/E`."""
        if self.stage == _PREARCHIVE:
            return f"{_PREARCHIVE}/{self.project}/{self.timestamp}/{self.label}"
        return f"{_ARCHIVE}/{self.project}/{self.subject}/{self.label}"

    @property
    def name(self) -> str:
        """The short form an operator types: `P/T/S` in the prearchive, `P/LABEL` in the archive."""
        if self.stage == _PREARCHIVE:
            return f"{self.project}/{self.timestamp}/{self.label}"
        return f"{self.project}/{self.label}"

    # ------------------------------------------------------------ parsing

    @classmethod
    def from_dir(cls, relative: str) -> SessionRef:
        """The session whose folder holds ``relative`` (a session folder or any path inside one)."""
        parts = Path(relative).parts
        if len(parts) >= 4 and parts[0] == _PREARCHIVE:
            return cls.prearchive(parts[1], parts[2], parts[3])
        if len(parts) >= 4 and parts[0] == _ARCHIVE:
            return cls.archive(parts[1], parts[2], parts[3])
        raise ValueError(f"{relative!r} is not inside a session folder")

    @classmethod
    def from_url(cls, parts: Sequence[str]) -> tuple[SessionRef, list[str]] | None:
        """The session a url's segments name (without `/data`), and the segments below it.

        `prearchive/projects/P/T/S/...`, `[archive/]projects/P[/subjects/S]/experiments/E/...`;
        None for anything else."""
        parts = list(parts)
        if parts[:2] == [_PREARCHIVE, "projects"] and len(parts) >= 5:
            return cls.prearchive(parts[2], parts[3], parts[4]), parts[5:]
        if parts[:1] == [_ARCHIVE]:
            parts = parts[1:]
        if parts[:1] == ["projects"] and len(parts) >= 4:
            project, rest = parts[1], parts[2:]
            subject = ""
            if rest[:1] == ["subjects"] and len(rest) >= 2:
                subject, rest = rest[1], rest[2:]
            if rest[:1] == ["experiments"] and len(rest) >= 2:
                return cls.archive(project, subject, rest[1]), rest[2:]
        return None

    @staticmethod
    def name_parts(text: str, stage: str) -> list[str]:
        """What an operator typed, split at `/`: outer slashes, a `data/` or `REST/` prefix and the
        stage's url prefix (`prearchive/projects/`, `archive/projects/`) removed."""
        text = text.strip().strip("/")
        for prefix in ("data/", "REST/"):
            if text.startswith(prefix):
                text = text[len(prefix):]
        parts = text.split("/")
        return parts[2:] if parts[:2] == [stage, "projects"] else parts

    @classmethod
    def from_name(cls, text: str, stage: str) -> SessionRef | None:
        """A session of ``stage`` as an operator names it: its url (with or without `/data` and the
        stage's `.../projects/`), or the short form: `P/T/S` in the prearchive, `P/LABEL` in the
        archive. None when ``text`` is neither (it may still be a bare label)."""
        parts = cls.name_parts(text, stage)
        if stage == _PREARCHIVE:
            return cls.prearchive(*parts) if len(parts) == 3 else None
        found = cls.from_url(["projects", *parts])
        if found is not None:
            ref, rest = found
            return None if rest else ref
        return cls.archive(parts[0], "", parts[1]) if len(parts) == 2 else None
