"""Contact sheets: one representative image per series (middle slice or frame, windowed) as a PNG.

An operator looks at the sheet for burned-in text before archiving; with `marks`, each tile shows
the rectangles a redaction rule will blank (magenta) and the boxes where the OCR check found text
(yellow), in the image's pixel coordinates scaled onto the tile. Compressed transfer syntaxes
are decoded by pydicom's plugins (pylibjpeg, -libjpeg, -openjpeg, -rle). A series that cannot be
rendered gets a labelled placeholder tile; rendering never raises for bad pixel data.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut, pixel_array

from dicomd.catalog import Catalog
from dicomd.errors import NotFound
from dicomd.layout import Layout
from dicomd.views import ScanSummary, scan_summaries

logger = logging.getLogger(__name__)

TILE = 256
LABEL_HEIGHT = 34
MAX_COLUMNS = 4
BACKGROUND = (24, 24, 24)
PLACEHOLDER = (70, 40, 40)
ORDER_TAGS = [0x00200013, 0x00200032]  # InstanceNumber, ImagePositionPatient
BLANKED_COLOUR = (255, 0, 255)  # what a redaction rule will blank
TEXT_COLOUR = (255, 230, 0)  # where the OCR check found text


@dataclass(frozen=True)
class Marks:
    """Boxes (x, y, width, height in the image's pixels) drawn over a tile."""

    blanked: tuple[tuple[int, int, int, int], ...] = ()
    text: tuple[tuple[int, int, int, int], ...] = ()


def marks_of(pairs: Mapping[str, tuple[Sequence[Sequence[int]], Sequence[Sequence[int]]]]) -> dict[str, Marks]:
    """Marks by scan id from (rectangles to blank, OCR boxes) pairs (AnonymizationHooks' PixelInspector.marks)."""
    return {scan: Marks(tuple(tuple(b) for b in blanked), tuple(tuple(b) for b in text))  # type: ignore[misc]
            for scan, (blanked, text) in pairs.items()}


@dataclass(frozen=True)
class SeriesPick:
    """The instance chosen to represent one series, and the words under its tile."""

    scan_id: str
    label: str
    path: Path | None


@dataclass(frozen=True)
class Tile:
    label: str
    image: Image.Image
    rendered: bool
    problem: str = ""


def pick_series(catalog: Catalog, layout: Layout, session_id: int) -> list[SeriesPick]:
    """One instance per scan: the middle one in instance-number order (works before a build too)."""
    picks: list[SeriesPick] = []
    for scan in scan_summaries(catalog.instances(session_id)):
        label = _label(scan.scan_id, scan.first.modality, scan.first.series_description, scan.instances)
        picks.append(SeriesPick(scan.scan_id, label, _middle([layout.resolve(i.path) for i in scan.members])))
    return picks


def _label(scan_id: str, modality: str, description: str, count: int) -> str:
    words = f"{scan_id} {modality} {description}".strip()
    return f"{words} ({count})"


def _middle(paths: Sequence[Path]) -> Path:
    if len(paths) <= 2:
        return paths[0]
    return _in_order(paths)[len(paths) // 2]


def _in_order(paths: Sequence[Path]) -> list[Path]:
    """Paths in instance-number order (then by name)."""

    def order(path: Path) -> tuple[float, str]:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=ORDER_TAGS, force=True)
            number = float(ds.get("InstanceNumber") or 0)
        except Exception:  # noqa: BLE001 - an unreadable header only loses its place in the order
            number = 0.0
        return number, path.name

    return sorted(paths, key=order)


def _scan(catalog: Catalog, session_id: int, scan_id: str) -> ScanSummary:
    for scan in scan_summaries(catalog.instances(session_id, scan_id)):
        if scan.scan_id == scan_id:
            return scan
    raise NotFound(f"no scan {scan_id!r} in this session")


def scan_tile(catalog: Catalog, layout: Layout, session_id: int, scan_id: str, size: int = TILE,
              marks: Marks | None = None) -> Tile:
    """One scan's representative image (its middle instance), as on the contact sheet; NotFound
    when the session has no such scan."""
    scan = _scan(catalog, session_id, scan_id)
    label = _label(scan.scan_id, scan.first.modality, scan.first.series_description, scan.instances)
    return render_tile(_middle([layout.resolve(i.path) for i in scan.members]), label, size, marks)


def scan_montage(catalog: Catalog, layout: Layout, session_id: int, scan_id: str, *, columns: int, rows: int,
                 size: int = TILE) -> Image.Image:
    """A grid of ``columns`` x ``rows`` images of one scan, evenly spaced through it in instance-number
    order (XNAT's `snapshot/grid/4X4`); a scan with fewer instances shows each once."""
    scan = _scan(catalog, session_id, scan_id)
    paths = _in_order([layout.resolve(i.path) for i in scan.members])
    wanted = min(len(paths), columns * rows)
    picks = [paths[(i * len(paths)) // wanted] for i in range(wanted)]
    tiles = [render_tile(path, f"{scan_id} #{n + 1}", size) for n, path in enumerate(picks)]
    return contact_sheet(tiles, size=size, columns=columns)


def render_tile(path: Path | None, label: str, size: int = TILE, marks: Marks | None = None) -> Tile:
    """The instance's middle frame as a windowed 8-bit tile (with ``marks`` drawn over it), or a
    placeholder saying why not."""
    if path is None:
        return _placeholder(label, "no instances", size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = _to_image(path)
    except Exception as exc:  # noqa: BLE001 - any decoding failure becomes a placeholder
        problem = f"{type(exc).__name__}: {exc}".splitlines()[0][:120]
        logger.info("snapshot: cannot render %s: %s", path.name, problem)
        return _placeholder(label, problem, size)
    scale = min(size / image.width, size / image.height)
    width, height = image.width, image.height
    image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                         Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (size, size), BACKGROUND)
    left, top = (size - image.width) // 2, (size - image.height) // 2
    canvas.paste(image, (left, top))
    if marks is not None:
        draw = ImageDraw.Draw(canvas)
        for boxes, fill in ((marks.blanked, BLANKED_COLOUR), (marks.text, TEXT_COLOUR)):
            for x, y, w, h in boxes:
                draw.rectangle((left + x * scale, top + y * scale, left + (x + w) * scale - 1,
                                top + (y + h) * scale - 1), outline=fill, width=2)
    return Tile(label, canvas, True)


def _to_image(path: Path) -> Image.Image:
    header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    if "Rows" not in header or "Columns" not in header:
        raise ValueError("no image (not a pixel-data object)")
    frames = int(header.get("NumberOfFrames") or 1)
    index = frames // 2
    ds = Dataset()
    arr = pixel_array(str(path), index=index if frames > 1 else None, ds_out=ds)
    return Image.fromarray(_to_uint8(arr, ds, index if frames > 1 else 0))


def _to_uint8(arr: np.ndarray, ds: Dataset, index: int) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(ds.get("SamplesPerPixel") or 1)
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        samples = 3
    if samples == 3:
        if arr.ndim != 3:
            raise ValueError(f"unexpected colour array shape {arr.shape}")
        if arr.dtype != np.uint8:
            top = float(arr.max()) or 1.0
            arr = (arr.astype(np.float64) * (255.0 / top)).clip(0, 255)
        return arr.astype(np.uint8)
    if arr.ndim != 2:
        raise ValueError(f"unexpected monochrome array shape {arr.shape}")
    values = apply_modality_lut(arr, ds).astype(np.float64)
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(values, ds, index=index).astype(np.float64)
        low, high = float(values.min()), float(values.max())
    else:
        low, high = (float(v) for v in np.percentile(values, (1, 99)))
    if high <= low:
        high = low + 1.0
    scaled = ((values - low) * (255.0 / (high - low))).clip(0, 255)
    if photometric == "MONOCHROME1":
        scaled = 255.0 - scaled
    return scaled.astype(np.uint8)


def _placeholder(label: str, problem: str, size: int) -> Tile:
    canvas = Image.new("RGB", (size, size), PLACEHOLDER)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    lines = ["cannot render", *_wrap(problem, max(size // 7, 10))][:8]
    for i, text in enumerate(lines):
        draw.text((8, 8 + 14 * i), text, fill=(235, 220, 220), font=font)
    return Tile(label, canvas, False, problem)


def _wrap(text: str, width: int) -> list[str]:
    return [text[i:i + width] for i in range(0, len(text), width)] or [""]


def contact_sheet(tiles: Sequence[Tile], *, title: str = "", size: int = TILE,
                  columns: int = MAX_COLUMNS) -> Image.Image:
    """Tiles on a grid (at most ``columns`` wide), each with its label underneath, and a title line on top."""
    count = max(len(tiles), 1)
    columns = max(1, min(count, columns))
    rows = math.ceil(count / columns)
    top = 22 if title else 0
    sheet = Image.new("RGB", (columns * size, top + rows * (size + LABEL_HEIGHT)), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    if title:
        draw.text((6, 5), title, fill=(255, 255, 255), font=font)
    if not tiles:
        draw.text((8, top + 8), "(no series)", fill=(255, 255, 255), font=font)
    for i, tile in enumerate(tiles):
        x, y = (i % columns) * size, top + (i // columns) * (size + LABEL_HEIGHT)
        sheet.paste(tile.image, (x, y))
        for n, text in enumerate(_wrap(tile.label, max(size // 7, 10))[:2]):
            draw.text((x + 4, y + size + 3 + 14 * n), text, fill=(230, 230, 230), font=font)
    return sheet


def session_sheet(catalog: Catalog, layout: Layout, session_id: int, *, title: str = "",
                  size: int = TILE, marks: Mapping[str, Marks] | None = None) -> tuple[Image.Image, list[Tile]]:
    """One tile per scan; ``marks`` by scan id (rectangles to blank, OCR boxes) are drawn over them."""
    tiles = [render_tile(p.path, p.label, size, (marks or {}).get(p.scan_id))
             for p in pick_series(catalog, layout, session_id)]
    return contact_sheet(tiles, title=title, size=size), tiles


def files_sheet(paths: Sequence[Path], *, title: str = "", size: int = TILE) -> tuple[Image.Image, list[Tile]]:
    """A sheet of loose files, one tile each (for `dicomd prearchive snapshot` tests and ad-hoc use)."""
    tiles = [render_tile(Path(p), Path(p).name, size) for p in paths]
    return contact_sheet(tiles, title=title, size=size), tiles


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
