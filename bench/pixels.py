"""Section 7: Clean Pixel Data, frames per second of redaction (dicomd.pixels.redact) in process.

Ultrasound cines, 640x480 RGB, native (Explicit VR Little Endian) and JPEG baseline (YBR_FULL_422,
encoded by Pillow), and 1024x1024 16-bit MONOCHROME2 XA frames, native. Each run reads the file,
decodes every frame, blanks two rectangles, re-encodes (RLE for the JPEG source) and writes the
result to memory; the figure is frames / median seconds."""

from __future__ import annotations

import io
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian, JPEGBaseline8Bit, UltrasoundMultiFrameImageStorage, XRayAngiographicImageStorage,
    generate_uid,
)

from dicomd.config import PixelMatchConfig, PixelRuleConfig
from dicomd.pixels.redact import redact

RULE = PixelRuleConfig("bench", PixelMatchConfig(Modality="*"), ((0, 0, 640, 60), (440, 400, 200, 80)))


@dataclass(frozen=True)
class PixelRow:
    source: str
    frames: int
    frame_size: str
    median_s: float
    frames_per_s: float
    output_syntax: str


def _dataset(rows: int, cols: int, frames: int, *, colour: bool, jpeg: bool) -> Dataset:
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:rows, 0:cols]
    base = ((xx + yy) % 256).astype(np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage if colour else XRayAngiographicImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.Modality = "US" if colour else "XA"
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, frames
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PixelRepresentation = 0
    if colour:
        ds.PlanarConfiguration = 0
        arrays = [np.stack([base, np.roll(base, f, 1), rng.integers(0, 40, (rows, cols), dtype=np.uint8)], -1)
                  for f in range(frames)]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    else:
        arrays = [(base.astype(np.uint16) * 16 + f) for f in range(frames)]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    if jpeg:
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PhotometricInterpretation = "YBR_FULL_422"
        frames_bytes = []
        for arr in arrays:
            buf = io.BytesIO()
            Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=90, subsampling=1)
            frames_bytes.append(buf.getvalue())
        ds.PixelData = encapsulate(frames_bytes)
        ds["PixelData"].VR = "OB"
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PhotometricInterpretation = "RGB" if colour else "MONOCHROME2"
        ds.PixelData = np.stack(arrays).tobytes()
        ds["PixelData"].VR = "OB" if colour else "OW"
    return ds


def _time(path: Path) -> tuple[float, str]:
    started = time.perf_counter()
    ds = pydicom.dcmread(path)
    done = redact(ds, RULE)
    ds.save_as(io.BytesIO(), enforce_file_format=False)
    return time.perf_counter() - started, done.transfer_syntax


def run_pixels(work: Path, runs: int, frames: int) -> list[PixelRow]:
    work.mkdir(parents=True, exist_ok=True)
    cases = [("US RGB native", 480, 640, True, False), ("US JPEG baseline YBR_FULL_422", 480, 640, True, True),
             ("XA 16-bit native", 1024, 1024, False, False)]
    rows: list[PixelRow] = []
    for name, height, width, colour, jpeg in cases:
        path = work / f"{name.replace(' ', '_')}.dcm"
        _dataset(height, width, frames, colour=colour, jpeg=jpeg).save_as(path, enforce_file_format=True)
        timings = [_time(path) for _ in range(runs)]
        median = statistics.median(t for t, _syntax in timings)
        rows.append(PixelRow(name, frames, f"{width}x{height}", round(median, 3), round(frames / median, 1),
                             timings[0][1]))
    return rows


def pixels_table(rows: list[PixelRow]) -> list[str]:
    out = [f"{'source':32} {'frames':>6} {'size':>10} {'median s':>9} {'frames/s':>9}  written as"]
    for r in rows:
        out.append(f"{r.source:32} {r.frames:>6} {r.frame_size:>10} {r.median_s:>9.3f} {r.frames_per_s:>9.1f}"
                   f"  {pydicom.uid.UID(r.output_syntax).name}")
    return out
