"""Snapshots of sessions as the faces serve them: a session's contact sheet, one scan's image, a grid
of one scan's slices (XNAT's `snapshot/grid/4X4`) and XNAT's per-scan SNAPSHOTS resource files.

Who may see a picture is who may read the session: the project is permission-checked before the
session is looked up (dicomd.operations.readable_session). Rendering is dicomd.snapshot's; this
module picks what to render, checks sizes and names, and encodes PNG (or GIF, for XNAT's names).

Example::

    png = session_sheet(stores, user, SessionRef.prearchive("demo", "20240619_091425123", "S1"), size=256)
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dicomd import operations
from dicomd.auth import READ
from dicomd.errors import Ambiguous, InvalidInput, NotFound
from dicomd.layout import SessionRef
from dicomd.lifecycle import Stage

if TYPE_CHECKING:
    from PIL import Image

    from dicomd.catalog import SessionRow
    from dicomd.operations import Actor
    from dicomd.stores import Stores

MIN_SIZE, MAX_SIZE = 64, 1024
SNAPSHOT_SIZE = 512  # XNAT's full snapshot (`..._qc.png`)
THUMBNAIL_SIZE = 128  # XNAT's thumbnail (`..._qc_t.png`)
MAX_GRID = 8
_GRID = re.compile(r"^(\d{1,2})[xX](\d{1,2})$")
_FORMATS = {"png": ("PNG", "image/png"), "gif": ("GIF", "image/gif")}


@dataclass(frozen=True)
class Picture:
    """Encoded image bytes and their media type."""

    data: bytes
    media_type: str


def check_size(size: int) -> int:
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidInput(f"size must be between {MIN_SIZE} and {MAX_SIZE} pixels")
    return size


def parse_grid(text: str) -> tuple[int, int]:
    """`4X4` (columns X rows, as XNAT writes it) -> (4, 4); each 1 to MAX_GRID."""
    found = _GRID.match(text.strip())
    if not found:
        raise InvalidInput(f"grid {text!r} is not COLUMNSxROWS, e.g. 4X4")
    columns, rows = int(found.group(1)), int(found.group(2))
    if not (1 <= columns <= MAX_GRID and 1 <= rows <= MAX_GRID):
        raise InvalidInput(f"a grid has 1 to {MAX_GRID} columns and rows")
    return columns, rows


def encode(image: "Image.Image", fmt: str = "png") -> Picture:
    kind, media = _FORMATS[fmt]
    buf = io.BytesIO()
    image.save(buf, format=kind)
    return Picture(buf.getvalue(), media)


# ---------------------------------------------------------------- pictures


def session_sheet(stores: "Stores", actor: "Actor", ref: SessionRef, *, size: int = 256) -> Picture:
    """The contact sheet of a session: one tile per scan (its middle image), titled with the session;
    on a prearchive session the rectangles archiving will blank and the OCR boxes are drawn."""
    from dicomd.snapshot import marks_of, session_sheet as render  # numpy and Pillow only when a picture is asked for

    session = operations.readable_session(stores, actor, ref)
    marks = marks_of(stores.hooks.inspect_pixels.marks(session)) if ref.stage == Stage.PREARCHIVE else {}
    sheet, _tiles = render(stores.catalog, stores.layout, session.id, title=session.url, size=check_size(size),
                           marks=marks)
    return encode(sheet)


def scan_picture(stores: "Stores", actor: "Actor", ref: SessionRef, scan: str, *, size: int = 256,
                 grid: str = "", fmt: str = "png") -> Picture:
    """One scan's middle image, or with ``grid`` (`4X4`) a montage of its slices."""
    from dicomd.snapshot import scan_montage, scan_tile

    session = operations.readable_session(stores, actor, ref)
    size = check_size(size)
    if grid:
        columns, rows = parse_grid(grid)
        image = scan_montage(stores.catalog, stores.layout, session.id, scan, columns=columns, rows=rows,
                             size=size)
    else:
        image = scan_tile(stores.catalog, stores.layout, session.id, scan, size).image
    return encode(image, fmt)


# ---------------------------------------------------------------- XNAT's SNAPSHOTS resource


def snapshot_names(session: "SessionRow", scan: str) -> dict[str, tuple[str, int]]:
    """The files of a scan's SNAPSHOTS resource: name -> (content, size in pixels)."""
    stem = f"{session.label}_{scan}"
    return {f"{stem}_qc.png": ("ORIGINAL", SNAPSHOT_SIZE), f"{stem}_qc_t.png": ("THUMBNAIL", THUMBNAIL_SIZE)}


def snapshot_files(stores: "Stores", actor: "Actor", ref: SessionRef, scan: str, base: str) -> list[dict[str, str]]:
    """XNAT's file rows of `.../scans/N/resources/SNAPSHOTS/files` (``base``: the scan's uri)."""
    session = operations.readable_session(stores, actor, ref)
    if not stores.catalog.instances(session.id, scan):
        raise NotFound(f"no scan {scan!r} in {session.url}")
    return [{"Name": name, "Size": "", "URI": f"{base}/resources/SNAPSHOTS/files/{name}", "collection": "SNAPSHOTS",
             "file_tags": "", "file_format": "PNG", "file_content": content, "cat_ID": scan}
            for name, (content, _size) in snapshot_names(session, scan).items()]


def snapshot_file(stores: "Stores", actor: "Actor", ref: SessionRef, scan: str, name: str) -> Picture:
    """One SNAPSHOTS file: `{label}_{scan}_qc.png` (512 px) or `..._qc_t.png` (128 px); the same
    names ending `.gif` (XNAT's own) are served as GIF."""
    session = operations.readable_session(stores, actor, ref)
    stem, _, ext = name.rpartition(".")
    known = snapshot_names(session, scan)
    if ext.lower() not in _FORMATS or f"{stem}.png" not in known:
        raise NotFound(f"no snapshot {name!r} for scan {scan!r} (files: {', '.join(known)})")
    _content, size = known[f"{stem}.png"]
    return scan_picture(stores, actor, ref, scan, size=size, fmt=ext.lower())


def find_experiment(stores: "Stores", actor: "Actor", label: str) -> SessionRef:
    """The archived session XNAT's `/experiments/{id}` names (dicomd's experiment ID is its label),
    among the projects the actor may read; Ambiguous when two projects have it."""
    readable = [p for p in stores.config.project_ids() if actor.can(READ, p)]
    found = [s for s in stores.catalog.sessions(Stage.ARCHIVE, projects=readable) if s.label == label] if readable else []
    if not found:
        raise NotFound(f"no archived session {label!r} in a project you may read")
    if len(found) > 1:
        raise Ambiguous(f"{label!r} names sessions in projects {', '.join(sorted(s.project for s in found))}; "
                        "use /xapi/projects/P/experiments/E/...")
    return SessionRef.of(found[0])
