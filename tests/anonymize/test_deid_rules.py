"""The de-identification rules one at a time: default-deny, table edition, sequences and SR, safe
private, valid output, file meta, free-text cleaning and archive labels."""

from __future__ import annotations

import copy
import io

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.datadict import DicomDictionary
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomd.anonymize import ps315_table
from dicomd.anonymize.dates import shift_by_days, shift_da_value, shift_dt_value, valid_tm
from dicomd.anonymize.filemeta import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicomd.anonymize.profile import identifying_tokens, scrub
from dicomd.testing.generator import generate_study

from .conftest import labels, make_anonymizer


def _study(patient_seed: int = 1) -> Dataset:
    return generate_study(patient_seed, series=1, instances_per_series=1, rows=8, cols=8)[0]


def _code(value: str, meaning: str) -> Sequence:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
    return Sequence([item])


def _sr() -> Dataset:
    ds = pydicom.dcmread(get_testdata_file("test-SR.dcm"))
    text = Dataset()
    text.RelationshipType, text.ValueType = "CONTAINS", "TEXT"
    text.ConceptNameCodeSequence = _code("121106", "Comment")
    text.TextValue = "Seen by Riesmeier in ROOM 4, lesion stable"
    ds.ContentSequence[1].ContentSequence.append(text)
    return ds


# -- 1. default-deny by VR -----------------------------------------------------------------------


def test_what_the_table_does_not_name_is_denied_by_vr(store):
    ds = _study()
    ds.add(DataElement(0x00142006, "PN", "Fenwick^Ottoline"))  # Evaluator Name
    ds.add(DataElement(0x00140104, "PN", "Prudhomme^Casimir"))  # Secondary Reviewer Name
    ds.RetrieveURL = f"https://pacs.example/wado?studyUID={ds.StudyInstanceUID}"
    issuer = Dataset()
    issuer.LocalNamespaceEntityID = "HOSPITAL-NS"
    ds.IssuerOfAccessionNumberSequence = Sequence([issuer])
    ds.TypeOfPatientID = "TEXT"  # CS outside the coded groups
    ds.add(DataElement(0x00191234, "LO", "x"))  # private without a creator
    ds.add(DataElement(0x00210001, "LO", "not in any dictionary"))  # unknown public tag
    ds.SliceThickness = 1.5  # DS in the acquisition group: kept
    ds.SequenceName = "*tfl3d1"  # allowlisted acquisition text
    make_anonymizer(store, options=("retain_long_modified_dates",)).apply(ds, labels())
    for keyword in ("EvaluatorName", "SecondaryReviewerName", "RetrieveURL", "IssuerOfAccessionNumberSequence",
                    "TypeOfPatientID"):
        assert keyword not in ds, keyword
    assert 0x00210001 not in ds and 0x00191234 not in ds
    assert ds.SliceThickness == 1.5 and ds.SequenceName == "*tfl3d1"
    assert ds.Manufacturer == "DICOMD Synthetic"  # the kind of device: kept (the table removes its identity)


def test_dates_the_table_does_not_name_follow_the_date_option(store):
    unnamed = next(tag for tag, entry in DicomDictionary.items()
                   if entry[0] == "DA" and f"{tag:08x}" not in ps315_table.BASIC and tag >> 16 not in (0x0002,)
                   and "Retired" not in entry[3])
    ds = _study()
    ds.add(DataElement(unnamed, "DA", "20200131"))
    shifted = copy.deepcopy(ds)
    make_anonymizer(store, options=("retain_long_modified_dates",)).apply(shifted, labels())
    assert shifted[unnamed].value not in ("20200131", "") and len(shifted[unnamed].value) == 8
    make_anonymizer(store).apply(ds, labels())
    assert unnamed not in ds


# -- 2. the table's edition ----------------------------------------------------------------------


def test_table_is_the_current_edition_and_says_so(store):
    assert ps315_table.EDITION == "2026c"
    for key in ("00100041", "00102162", "0040a034", "0040b034", "00181010", "00700006", "0040b020"):
        assert key in ps315_table.BASIC, key
    assert ps315_table.OPTIONS["retain_patient_chars"][2]["00102162"] == "K"
    assert ps315_table.OPTIONS["retain_long_modified_dates"][2]["0040a034"] == "C"
    ds = _study()
    make_anonymizer(store).apply(ds, labels())
    assert "2026c" in str(ds.DeidentificationMethod)


# -- 3. sequences, SR content, graphics, overlays ------------------------------------------------


def test_sr_text_is_removed_without_clean_structured_content(store):
    ds = _sr()
    make_anonymizer(store).apply(ds, labels())
    texts = [e.value for e in ds.iterall() if e.keyword == "TextValue"]
    assert texts and all(t == "ANONYMIZED" for t in texts)  # Text Value is type 1 in a TEXT item
    assert not any("Riesmeier" in str(e.value) for e in ds.iterall())


def test_clean_structured_content_keeps_the_tree_and_cleans_its_text(store):
    ds = _sr()
    make_anonymizer(store, options=("clean_structured_content",)).apply(ds, labels())
    texts = [str(e.value) for e in ds.iterall() if e.keyword == "TextValue"]
    assert "Seen by in ROOM 4, lesion stable" in texts  # the observer's name is a token of the dataset
    names = [str(e.value) for e in ds.iterall() if e.VR == "PN" and e.value]
    assert names and not any("Riesmeier" in n for n in names)


def _presentation_state() -> Dataset:
    ds = _study()
    ds.ReferringPhysicianName = "Whitfield^Harriet"
    text = Dataset()
    text.UnformattedTextValue = "Marked by Dr Whitfield"
    text.AnchorPoint = [10.0, 10.0]
    graphic = Dataset()
    graphic.GraphicType = "POLYLINE"
    graphic.GraphicData = [1.0, 2.0, 3.0, 4.0]
    graphic.NumberOfGraphicPoints = 2
    annotation = Dataset()
    annotation.GraphicLayer = "LAYER1"
    annotation.TextObjectSequence = Sequence([text])
    annotation.GraphicObjectSequence = Sequence([graphic])
    ds.GraphicAnnotationSequence = Sequence([annotation])
    return ds


@pytest.mark.parametrize("options,expected", [((), "ANONYMIZED"), (("clean_graphics",), "Marked by Dr")])
def test_graphic_annotations_keep_geometry_and_lose_their_text(store, options, expected):
    ds = _presentation_state()
    make_anonymizer(store, options=options).apply(ds, labels())
    annotation = ds.GraphicAnnotationSequence[0]
    assert annotation.GraphicObjectSequence[0].GraphicData == [1.0, 2.0, 3.0, 4.0]
    assert annotation.TextObjectSequence[0].UnformattedTextValue == expected


def test_overlays_go_whole_and_overlay_bits_in_pixel_data_are_cleared(store):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    pixels = ds.pixel_array.astype(np.uint16)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = (pixels & 0x0FFF | 0x8000).astype("<u2").tobytes()  # an overlay plane in bit 15
    ds.add_new(0x60000010, "US", ds.Rows)
    ds.add_new(0x60000011, "US", ds.Columns)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000102, "US", 15)  # Overlay Bit Position
    ds.add_new(0x60000022, "LO", "Annotated by Whitfield")  # Overlay Description
    make_anonymizer(store).apply(ds, labels())
    assert not any(0x6000 <= e.tag.group <= 0x601E for e in ds)
    out = np.frombuffer(ds.PixelData, dtype="<u2")
    assert not (out & 0x8000).any()
    assert (out == (pixels.ravel() & 0x0FFF)).all()  # the image bits are untouched


# -- 4. safe private attributes and private dates ------------------------------------------------


def test_private_dates_are_never_kept_unshifted(store):
    ds = _study()
    block = ds.private_block(0x0041, "ACME DATES", create=True)
    block.add_new(0x01, "DA", "20200131")
    allow = ("(0041,{ACME DATES}01)",)
    shifted = copy.deepcopy(ds)
    make_anonymizer(store, options=("retain_long_modified_dates",), private_allowlist=allow).apply(shifted, labels())
    kept = shifted.private_block(0x0041, "ACME DATES")
    assert shifted[kept.get_tag(0x01)].value not in ("20200131", "")
    make_anonymizer(store, private_allowlist=allow).apply(ds, labels())
    assert not any(e.tag.group == 0x0041 and e.VR == "DA" for e in ds)


def test_a_retained_date_is_shifted_under_modified_dates(store):
    # Retain Device Identity keeps Date of Last Calibration; Modified Dates must still shift it
    ds = _study()
    ds.DateOfLastCalibration = "20191230"
    make_anonymizer(store, options=("retain_device_id", "retain_long_modified_dates")).apply(ds, labels())
    assert ds.DateOfLastCalibration != "20191230" and len(ds.DateOfLastCalibration) == 8
    assert ds.DeviceSerialNumber  # the device itself is retained


# -- 5. valid output and dates in every form ---------------------------------------------------


def test_type_1_and_2_attributes_stay_valid(store):
    ds = _sr()
    make_anonymizer(store).apply(ds, labels())
    assert ds.ContentDate == "19000101" and ds.ContentTime == "000000"  # type 1 in SR Document General
    assert "StudyDate" in ds and not ds.StudyDate  # type 2: emptied, not removed
    assert ds.PatientSex == ""


@pytest.mark.parametrize("value,days,expected", [
    ("20200131", -31, "20191231"),
    ("2020-01-31", -31, "20191231"),  # ISO form: shifted and written legally
    ("2020.01.31", -1, "20200130"),  # ACR-NEMA form
    ("20200101-20200201", -1, "20191231-20200131"),
    ("-20200201", -1, "-20200131"),
    ("20200131x", -1, None),
    ("20201301", -1, None),
])
def test_da_forms(value, days, expected):
    assert shift_da_value(value, days) == expected


@pytest.mark.parametrize("value,expected", [
    ("2020", "2019"), ("202001", "201912"), ("20200101120000+0100", "20191231120000+0100"),
    ("20200101120000.123456-0500", "20191231120000.123456-0500"), ("20200101-20200201", "20191231-20200131"),
    ("2020-2021", "2019-2020"), ("2020.5", None), ("nonsense", None),
])
def test_dt_forms(value, expected):
    assert shift_dt_value(value, -86400) == expected


def test_tm_and_multi_valued_dates(store):
    assert valid_tm("120000.123456") and valid_tm("12:30:00") and not valid_tm("25") and not valid_tm("ab")
    assert shift_by_days("TM", "101010.5", -3) == "101010.5"
    ds = _study()
    ds.add(DataElement(0x00181200, "DA", ["20191230", "2019.12.31"]))
    make_anonymizer(store, options=("retain_device_id", "retain_long_modified_dates")).apply(ds, labels())
    first, second = ds.DateOfLastCalibration
    assert first.isdigit() and second.isdigit() and first != "20191230"
    assert (pydicom.valuerep.DA(second) - pydicom.valuerep.DA(first)).days == 1


def test_an_unparseable_date_is_removed_not_kept(store):
    ds = _study()
    ds.add(DataElement(0x00080021, "DA", "31/01/2020"))  # Series Date in a form nobody should write
    make_anonymizer(store, options=("retain_long_modified_dates",)).apply(ds, labels())
    assert "SeriesDate" not in ds or ds.SeriesDate in ("", "19000101")


# -- 6. file meta ----------------------------------------------------------------------------------


def test_file_meta_is_written_fresh(store):
    ds = _study()
    ds.file_meta.SourceApplicationEntityTitle = "HOSPITAL_CT1"
    ds.file_meta.SendingApplicationEntityTitle = "HOSPITAL_GW"
    ds.file_meta.ReceivingApplicationEntityTitle = "RESEARCH"
    ds.file_meta.add(DataElement(0x00020026, "UR", "dicom://ct1.hospital.example:104"))
    make_anonymizer(store).apply(ds, labels())
    meta = ds.file_meta
    assert {e.tag for e in meta} == {0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012,
                                     0x00020013}
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID and meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    assert b"HOSPITAL" not in buf.getvalue() and b"hospital.example" not in buf.getvalue()


# -- 7. free text --------------------------------------------------------------------------------


def test_scrub_removes_whole_words_only():
    assert scrub("SCANNER 3 by Ann", ("Ann",)) == "SCANNER 3 by"
    assert scrub("Li and Ng scanned LIVER", ("Li", "Ng")) == "and scanned LIVER"
    assert scrub("call +44 20 7946 0321 or (020) 7946-0000 today", ()) == "call or today"
    assert scrub("3.5 mm slice, 120 kV", ()) == "3.5 mm slice, 120 kV"


def test_every_person_name_in_the_dataset_is_a_token(store):
    ds = _study()
    inner = Dataset()
    inner.PersonName = "Okafor^Ann"
    ds.ReferencedStudySequence = Sequence([inner])
    ds.OperatorsName = "Li^Wei"
    tokens = identifying_tokens(ds)
    assert {"Okafor", "Ann", "Li", "Wei", ds.PatientID} <= set(tokens)
    ds.SeriesDescription = "SCANNER check by Ann and Li, ok"
    make_anonymizer(store, options=("clean_descriptors",)).apply(ds, labels())
    assert ds.SeriesDescription == "SCANNER check by and , ok"


# -- 8. archive labels ------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["explicit", "rule", "comment"])
def test_labels_holding_identifiers_are_pseudonymized(store, source):
    ds = _study()
    family = str(ds.PatientName).split("^")[0]
    anonymizer = make_anonymizer(store)
    leaky = labels(subject=f"{family}_01", session=f"{ds.PatientID}_MR", subject_from=source, session_from=source)
    subject, session = anonymizer.archive_labels(ds, leaky)
    assert family not in subject and ds.PatientID not in session
    work = copy.deepcopy(ds)
    anonymizer.apply(work, leaky)
    assert subject == work.PatientID  # pseudonymized like the fallback: the archived Patient ID
    clean = labels(subject="S01", session="S01_V1", subject_from=source, session_from=source)
    assert anonymizer.archive_labels(ds, clean) == ("S01", "S01_V1")
