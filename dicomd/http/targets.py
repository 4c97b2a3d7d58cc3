"""XNAT URIs naming prearchive or archive data -> sessions, scans and files in the stores.

Accepted (with or without a leading `/data` or `/REST`):
    /prearchive/projects/P/T/S[/scans/N[/resources/R[/files/F]]]
    /archive/projects/P/subjects/S/experiments/E[/scans/N[/resources/R[/files/F]]]
    /projects/P[/subjects/S]/experiments/E[...]
Every segment must be a plain name: no `..`, no separators, no empty parts. Files are found through
the catalog's instance rows, never by joining request text onto a folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from dicomd.catalog import Catalog, InstanceRow, SessionRow
from dicomd.errors import Forbidden, InvalidInput, NotFound
from dicomd.layout import Layout
from dicomd.lifecycle import Stage

_SEGMENT = re.compile(r"^[A-Za-z0-9_.@+-]+$")


@dataclass(frozen=True)
class Target:
    stage: str
    project: str
    label: str = ""
    timestamp: str = ""
    subject: str = ""
    scan: str = ""
    resource: str = ""
    file: str = ""

    @property
    def uri(self) -> str:
        if self.stage == Stage.PREARCHIVE:
            base = f"/data/prearchive/projects/{self.project}/{self.timestamp}/{self.label}"
        else:
            base = f"/data/archive/projects/{self.project}/subjects/{self.subject}/experiments/{self.label}"
        for key, value in (("scans", self.scan), ("resources", self.resource), ("files", self.file)):
            if value:
                base += f"/{key}/{value}"
        return base


def segments(text: str) -> list[str]:
    """Split a URI path into checked segments (query strings and `/data` prefixes removed)."""
    path = unquote(text.split("?", 1)[0]).strip()
    parts = [p for p in path.split("/") if p != ""]
    for part in parts:
        if part in (".", "..") or "\\" in part or "\x00" in part:
            raise Forbidden(f"{text!r}: path traversal is refused")
        if not _SEGMENT.match(part):
            raise InvalidInput(f"{text!r}: {part!r} is not a valid name")
    if parts[:1] in (["data"], ["REST"]):
        parts = parts[1:]
    return parts


def check_names(*names: str) -> None:
    """Refuse any name that is not a plain path segment (used for path parameters)."""
    for name in names:
        if name:
            segments("/x/" + name)


def parse(text: str) -> Target:
    """A URI -> Target; InvalidInput when it does not name prearchive or archive data."""
    parts = segments(text)
    if parts[:2] == ["prearchive", "projects"] and len(parts) >= 5:
        project, timestamp, label, rest = parts[2], parts[3], parts[4], parts[5:]
        return _tail(Target(Stage.PREARCHIVE, project, label=label, timestamp=timestamp), rest, text)
    if parts[:1] == ["archive"]:
        parts = parts[1:]
    if parts[:1] == ["projects"] and len(parts) >= 4:
        project, rest = parts[1], parts[2:]
        subject = ""
        if rest[:1] == ["subjects"] and len(rest) >= 2:
            subject, rest = rest[1], rest[2:]
        if rest[:1] == ["experiments"] and len(rest) >= 2:
            return _tail(Target(Stage.ARCHIVE, project, label=rest[1], subject=subject), rest[2:], text)
    raise InvalidInput(f"{text!r} does not name a prearchive or archive session")


def _tail(target: Target, rest: list[str], text: str) -> Target:
    values: dict[str, str] = {}
    pairs = {"scans": "scan", "resources": "resource", "files": "file"}
    expected = ["scans", "resources", "files"]
    while rest:
        if len(rest) < 2 or not expected or rest[0] != expected[0]:
            raise InvalidInput(f"{text!r}: unexpected {'/'.join(rest)!r}")
        values[pairs[rest[0]]] = rest[1]
        expected.pop(0)
        rest = rest[2:]
    return Target(**{**target.__dict__, **values})


def project_of(text: str) -> str:
    """Just the project a URI names (for permission checks before anything is looked up)."""
    return parse(text).project


def session_for(catalog: Catalog, target: Target) -> SessionRow:
    if target.stage == Stage.PREARCHIVE:
        row = catalog.find_session(Stage.PREARCHIVE, target.project, target.timestamp, target.label)
        where = f"{target.project}/{target.timestamp}/{target.label}"
    else:
        row = catalog.find_session(Stage.ARCHIVE, target.project, "", target.label)
        if row is not None and target.subject and row.subject != target.subject:
            row = None
        where = f"{target.project}/{target.subject or '*'}/{target.label}"
    if row is None:
        raise NotFound(f"no {target.stage} session {where}")
    return row


def instances_for(catalog: Catalog, session: SessionRow, target: Target) -> list[InstanceRow]:
    """The instances a target names (the whole session, one scan, or one file)."""
    if target.resource and target.resource.upper() not in ("DICOM", "SECONDARY"):
        raise NotFound(f"no resource {target.resource!r} (dicomd keeps DICOM only)")
    rows = catalog.instances(session.id, target.scan or None)
    if target.scan and not rows:
        raise NotFound(f"no scan {target.scan!r} in {session.url}")
    if target.file:
        rows = [r for r in rows if Path(r.path).name == target.file]
        if not rows:
            raise NotFound(f"no file {target.file!r} in {session.url}")
    return rows


def file_path(layout: Layout, inst: InstanceRow) -> Path:
    try:
        return layout.resolve(inst.path)
    except ValueError as exc:  # a catalog row pointing outside the stores: never served
        raise Forbidden(str(exc)) from None
