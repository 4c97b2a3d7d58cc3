"""Files for the conformance tests to send: generated MR instances plus pydicom's bundled files in
other transfer syntaxes, each given a UID of its own; and the data set of a stored file."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from dicomd.testing.generator import generate_study


def files_to_send(folder: Path, bundled_names: list[str], *, seed: int, series: int, per_series: int,
                  size: int) -> dict[str, Path]:
    """SOP Instance UID -> file: generated MR (``size`` square, ``series`` x ``per_series``), then
    each of pydicom's ``bundled_names``; everything routed to project demo."""
    folder.mkdir()
    out: dict[str, Path] = {}
    for ds in generate_study(seed, series=series, instances_per_series=per_series, rows=size, cols=size,
                             study_description="demo"):
        path = folder / f"gen{len(out)}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out[str(ds.SOPInstanceUID)] = path
    bundled = Path(pydicom.__file__).parent / "data" / "test_files"
    for name in bundled_names:
        ds = pydicom.dcmread(bundled / name)
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyDescription = "demo"
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        out[str(ds.SOPInstanceUID)] = path
    return out


def data_set(path: Path) -> bytes:
    """The bytes after a file's preamble and File Meta Information."""
    raw = path.read_bytes()
    return raw[132 + 12 + int.from_bytes(raw[140:144], "little"):]
