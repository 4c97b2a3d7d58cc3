"""Contact sheets: a PNG for MR, CT, RGB, JPEG, JPEG 2000 and RLE files; placeholders, never a crash."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from dicomd.snapshot import files_sheet, png_bytes

RENDERABLE = ["MR_small.dcm", "CT_small.dcm", "SC_rgb_small_odd.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm",
              "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle.dcm", "examples_palette.dcm", "examples_ybr_color.dcm",
              "SC_rgb_rle_2frame.dcm", "rtdose.dcm", "JPEGLSNearLossless_16.dcm", "JPGExtended.dcm"]


def _file(name: str) -> Path:
    path = get_testdata_file(name)
    assert path, f"pydicom test file {name} is not bundled"
    return Path(path)


@pytest.mark.parametrize("name", RENDERABLE)
def test_each_kind_renders(name):
    sheet, tiles = files_sheet([_file(name)])
    assert [t.rendered for t in tiles] == [True], tiles[0].problem
    image = Image.open(io.BytesIO(png_bytes(sheet)))
    assert image.format == "PNG" and image.width >= 256
    pixels = image.convert("L").crop((0, 0, 256, 256))
    assert pixels.getextrema()[1] > 60  # something was drawn, not an empty tile


def test_undecodable_pixel_data_gets_a_labelled_placeholder():
    # pydicom's JPEG-lossy.dcm has a malformed scan header that no installed decoder accepts
    sheet, tiles = files_sheet([_file("JPEG-lossy.dcm")])
    assert not tiles[0].rendered and tiles[0].problem and sheet.size == (256, 256 + 34)


def test_non_image_gets_a_labelled_placeholder():
    sheet, tiles = files_sheet([_file("rtplan.dcm"), _file("MR_small.dcm")])
    assert [t.rendered for t in tiles] == [False, True]
    assert "no image" in tiles[0].problem
    assert sheet.width == 2 * 256


def test_cli_snapshot_of_a_staged_session_with_compressed_series(store, tmp_path):
    """MR, CT, RGB, JPEG, JPEG 2000 and RLE files made into one study (pixel data untouched), staged."""
    import pydicom

    names = ["MR_small.dcm", "CT_small.dcm", "SC_rgb_small_odd.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm",
             "MR_small_RLE.dcm", "rtplan.dcm"]
    paths = []
    for number, name in enumerate(names, start=1):
        ds = pydicom.dcmread(_file(name))
        ds.StudyInstanceUID, ds.SeriesNumber, ds.StudyDescription = "1.2.3.4.5", number, "DEMO"
        ds.SeriesInstanceUID, ds.SOPInstanceUID = f"1.2.3.4.5.{number}", f"1.2.3.4.5.{number}.1"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID, ds.PatientName = "SHEET", "Sheet^Test"
        paths.append(tmp_path / name)
        ds.save_as(paths[-1], enforce_file_format=True)
    sessions = {s.id: s for s in store.ingest_files(paths)}
    assert len(sessions) == 1
    row = next(iter(sessions.values()))
    out = tmp_path / "sheet.png"
    result = store.cli("prearchive", "snapshot", row.label, "-o", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["file"] == str(out)
    assert [s["rendered"] for s in report["series"]] == [True] * 6 + [False]  # the RT Plan has no image
    assert Image.open(out).format == "PNG" and Image.open(out).size == (4 * 256, 22 + 2 * (256 + 34))
    assert out.stat().st_mode & 0o077 == 0  # may show burned-in patient data: owner only
    text = store.cli("prearchive", "snapshot", row.label, "-o", str(out)).stdout
    assert "7 series, 1 placeholder(s)" in text and "no image" in text


def test_cli_snapshot_of_a_generated_study_has_one_tile_per_series(store, tmp_path):
    row = store.ingest_study(21, series=3, instances=5, modality="CT")
    out = tmp_path / "ct.png"
    result = store.cli("prearchive", "snapshot", row.label, "-o", str(out), "--size", "128")
    assert result.exit_code == 0 and "3 series, 0 placeholder(s)" in result.stdout
    assert Image.open(out).size == (3 * 128, 22 + 128 + 34)


def test_cli_snapshot_to_an_unwritable_place_is_a_one_line_error(store, tmp_path):
    row = store.ingest_study(22, series=1, instances=1)
    result = store.cli("prearchive", "snapshot", row.label, "-o", str(tmp_path / "no" / "such" / "dir.png"))
    assert result.exit_code == 1 and result.stderr.startswith("Error: cannot write") and "Traceback" not in result.stderr
