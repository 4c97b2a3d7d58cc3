"""dicomd.dicomtags: the one tag parser, and the header walker behind `dicomd dump` and dicomdump."""

from __future__ import annotations

import copy
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomd import dicomtags, mappings
from dicomd.errors import InvalidInput
from dicomd.testing.generator import generate_study, write_study
from dicomd.http.routes.dicomdump import dicom_dump

PATIENT_NAME = 0x00100010
REFERENCED_IMAGES = 0x00081140  # ReferencedImageSequence
SOURCE_IMAGES = 0x00082112  # SourceImageSequence


@pytest.mark.parametrize("text", [
    "(0010,0010)", "0010,0010", "00100010", "0x00100010", "0X00100010", "PatientName", " PatientName ",
    "(0010, 0010)", "( 0010 , 0010 )", "0010 0010", "(00100010)", "(0x00100010)", "0x0010,0010", "(0010,0010",
])
def test_every_form_any_face_accepted(text: str) -> None:
    assert dicomtags.parse_tag(text) == PATIENT_NAME


def test_hex_digits_in_either_case() -> None:
    assert dicomtags.parse_tag("7fe00010") == dicomtags.parse_tag("(7FE0,0010)") == dicomtags.parse_tag("PixelData")


@pytest.mark.parametrize("text", ["patientname", "", "  ", "GGGG,EEEE", "0x100010", "+0100010", "001000100",
                                  "0010,00100", "((0010,0010))", "-0010001"])
def test_anything_else_is_a_bad_tag(text: str) -> None:
    with pytest.raises(dicomtags.BadTag, match="is not a DICOM keyword or tag") as caught:
        dicomtags.parse_tag(text)
    assert isinstance(caught.value, InvalidInput)  # 400 over HTTP, exit 1 (or a usage error) in the CLI


def test_callers_keep_their_own_messages(tmp_path: Path) -> None:
    assert mappings.parse_tag("(0018,1000)") == "0x00181000"
    with pytest.raises(InvalidInput, match=r"dicomTag 'nope': expected 0xGGGGEEEE, \(gggg,eeee\) or a DICOM keyword"):
        mappings.parse_tag("nope")
    path = write_study(generate_study(1, series=1, instances_per_series=1), tmp_path)[0]
    with pytest.raises(InvalidInput, match="field 'nope': expected GGGGEEEE or a DICOM keyword"):
        dicom_dump(path, ["nope"])
    assert tagged(dicom_dump(path, ["PatientName", " ", ""])) == {("(0010,0010)", "")}


def tagged(rows: list[dict[str, str]]) -> set[tuple[str, str]]:
    return {(r["tag1"], r["tag2"]) for r in rows}


def nested_file(tmp_path: Path, levels: int) -> Path:
    """A generated instance with a ReferencedImageSequence nested ``levels`` deep (two items a level)."""
    ds = generate_study(2, series=1, instances_per_series=1)[0]
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = "1.2.3.4"
    for depth in range(levels - 1):
        outer = Dataset()
        outer.ReferencedSOPInstanceUID = f"1.2.3.{depth}"
        outer.SourceImageSequence = Sequence([inner, copy.deepcopy(inner)])
        inner = outer
    ds.ReferencedImageSequence = Sequence([inner])
    return write_study([ds], tmp_path / f"nested{levels}")[0]


def test_cli_rows_indent_items_under_their_sequence(tmp_path: Path) -> None:
    ds = pydicom.dcmread(nested_file(tmp_path, 2))
    rows = dicomtags.element_rows(ds)
    start = next(i for i, r in enumerate(rows) if r["tag"] == "(0008,1140)")
    assert rows[start] == {"tag": "(0008,1140)", "vr": "SQ", "keyword": "ReferencedImageSequence",
                           "value": "<1 item(s)>", "depth": 0}
    assert [(r["tag"], r["depth"]) for r in rows[start + 1:start + 5]] == [
        ("item 1", 1), ("(0008,1155)", 2), ("(0008,2112)", 2), ("item 1", 3)]
    assert rows[start + 5] == {"tag": "(0008,1155)", "vr": "UI", "keyword": "ReferencedSOPInstanceUID",
                               "value": "1.2.3.4", "depth": 4}
    assert rows[start + 6]["tag"] == "item 2"


def test_cli_rows_for_chosen_tags_keep_their_order_and_show_absent_ones(tmp_path: Path) -> None:
    ds = pydicom.dcmread(nested_file(tmp_path, 1))
    occupation = 0x00102180
    assert occupation not in ds
    rows = dicomtags.element_rows(ds, [0x00080060, occupation, PATIENT_NAME])
    assert [r["tag"] for r in rows] == ["(0008,0060)", "(0010,2180)", "(0010,0010)"]
    assert rows[0]["value"] == "MR" and rows[2]["value"] == str(ds.PatientName)
    assert rows[1] == {"tag": "(0010,2180)", "vr": "", "keyword": "Occupation", "value": None, "depth": 0}


def test_xnat_rows_name_nested_elements_by_path(tmp_path: Path) -> None:
    ds = pydicom.dcmread(nested_file(tmp_path, 3))
    rows = dicomtags.xnat_rows(ds, {REFERENCED_IMAGES})
    assert [(r["tag1"], r["tag2"]) for r in rows[:4]] == [
        ("(0008,1140)", ""), ("(0008,1140)", "[0](0008,1155)"), ("(0008,1140)", "[0](0008,2112)"),
        ("(0008,1140)", "[0](0008,2112)[0](0008,1155)")]
    assert rows[0]["value"] == "" and rows[0]["desc"] == "Referenced Image Sequence"
    assert ("(0008,1140)", "[0](0008,2112)[1](0008,2112)[0](0008,1155)") in tagged(rows)


def test_xnat_rows_start_with_the_file_meta_and_keep_binary_values_short(tmp_path: Path) -> None:
    ds = pydicom.dcmread(nested_file(tmp_path, 1))
    rows = dicomtags.xnat_rows(ds)
    assert rows[0]["tag1"].startswith("(0002,")
    pixels = next(r for r in rows if r["tag1"] == "(7FE0,0010)")
    assert pixels["value"] == f"<{len(ds.PixelData)} bytes>"


def test_the_dicomdump_service_descends_eight_levels_the_cli_all(tmp_path: Path) -> None:
    ds = pydicom.dcmread(nested_file(tmp_path, 11))
    deepest_xnat = max(r["tag2"].count("[") for r in dicomtags.xnat_rows(ds, {REFERENCED_IMAGES}))
    assert deepest_xnat == dicomtags.XNAT_DEPTH
    deepest_cli = max(r["depth"] for r in dicomtags.element_rows(ds))
    assert deepest_cli == 2 * 11


def test_walk_filters_top_level_elements_only(tmp_path: Path) -> None:
    ds = pydicom.dcmread(nested_file(tmp_path, 2))
    steps = list(dicomtags.walk(ds, only={REFERENCED_IMAGES}))
    assert {int(s.element.tag) for s in steps if s.element is not None and not s.trail} == {REFERENCED_IMAGES}
    assert any(s.element is not None and int(s.element.tag) == SOURCE_IMAGES for s in steps)
    assert all(s.trail[0][0] == REFERENCED_IMAGES for s in steps if s.trail)
