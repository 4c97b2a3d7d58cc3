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
from typing import Iterator, Sequence
from urllib.parse import unquote

from dicomd.catalog import Catalog, InstanceRow, SessionRow
from dicomd.errors import Forbidden, InvalidInput, NotFound
from dicomd.layout import Layout, SessionRef

_SEGMENT = re.compile(r"^[A-Za-z0-9_.@+-]+$")


@dataclass(frozen=True)
class Target(SessionRef):
    """A session, and optionally one scan, resource or file in it."""

    scan: str = ""
    resource: str = ""
    file: str = ""

    @property
    def session(self) -> SessionRef:
        return SessionRef(self.stage, self.project, self.label, timestamp=self.timestamp, subject=self.subject)

    @property
    def uri(self) -> str:
        """What the target names, under `/data` (the session's uri plus scans/resources/files)."""
        base = self.session.uri
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
    found = SessionRef.from_url(segments(text))
    if found is None:
        raise InvalidInput(f"{text!r} does not name a prearchive or archive session")
    ref, rest = found
    return Target(ref.stage, ref.project, ref.label, ref.timestamp, ref.subject, **_below(rest, text))


def parse_sources(srcs: Sequence[str]) -> Iterator[Target]:
    """The `src` parameters of a prearchive service (at least one), parsed as they are read: the
    operation checks its other parameters first, and then reads them all before any lookup."""
    if not srcs:
        raise InvalidInput("src is required")
    for src in srcs:
        yield parse(src)


def _below(rest: list[str], text: str) -> dict[str, str]:
    """`scans/N[/resources/R[/files/F]]` below a session -> Target's scan, resource, file."""
    values: dict[str, str] = {}
    pairs = {"scans": "scan", "resources": "resource", "files": "file"}
    expected = ["scans", "resources", "files"]
    while rest:
        if len(rest) < 2 or not expected or rest[0] != expected[0]:
            raise InvalidInput(f"{text!r}: unexpected {'/'.join(rest)!r}")
        values[pairs[rest[0]]] = rest[1]
        expected.pop(0)
        rest = rest[2:]
    return values


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
