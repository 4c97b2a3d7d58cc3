"""The PS3.15 Basic Profile and its options on a PHI-planted study."""

from __future__ import annotations

import copy
import io
from datetime import datetime

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from dicomd.anonymize import ps315_table
from dicomd.anonymize.profile import build_rules, identifying_tokens
from dicomd.errors import ConfigError
from dicomd.testing.generator import instance_bytes

from ..deid.corpus import build
from .conftest import EXTRA_PHI, labels, make_anonymizer, walk_values

ALL_OPTIONS = ("retain_long_modified_dates",)


def _anonymized(store, study, **settings):
    anonymizer = make_anonymizer(store, **settings)
    out = [copy.deepcopy(ds) for ds in study]
    for ds in out:
        anonymizer.apply(ds, labels())
    return anonymizer, out


def _assert_no_phi(datasets, planted):
    for ds in datasets:
        for path, text in walk_values(ds):
            for value in planted:
                assert value.lower() not in text.lower(), f"{value!r} left in {path}: {text!r}"
        raw = instance_bytes(ds)
        for value in planted:
            assert value.encode() not in raw, f"{value!r} left in the encoded file"


@pytest.mark.parametrize("options", [(), ("retain_long_modified_dates",)])
def test_no_planted_value_remains(store, phi_study, options):
    # Given a study with identifying values planted everywhere
    study, planted = phi_study
    # When the Basic Profile (with or without the modified-dates option) runs
    _, out = _anonymized(store, study, options=options)
    # Then none of them is left, in any element at any depth or in the encoded bytes
    _assert_no_phi(out, planted)


def test_clean_descriptors_removes_known_identifiers(store, phi_study):
    # Clean Descriptors keeps free text but strips the identifiers the dataset itself holds (the
    # patient's names and IDs, every person name, addresses...). A name that appears nowhere but in
    # free text (EXTRA_PHI's nurse) cannot be recognised; such a study needs the plain profile.
    study, planted = phi_study
    _, out = _anonymized(store, study, options=("retain_long_modified_dates", "clean_descriptors"))
    _assert_no_phi(out, planted - set(EXTRA_PHI[:2]))


def test_pixel_data_byte_for_byte_and_files_parse(store, phi_study):
    study, _ = phi_study
    _, out = _anonymized(store, study, options=ALL_OPTIONS)
    for before, after in zip(study, out):
        assert after.PixelData == before.PixelData
        reread = pydicom.dcmread(io.BytesIO(instance_bytes(after)))
        assert reread.PixelData == before.PixelData
        assert reread.file_meta.MediaStorageSOPInstanceUID == reread.SOPInstanceUID


def test_references_stay_consistent(store, phi_study):
    study, _ = phi_study
    _, out = _anonymized(store, study)
    sop_uids = {ds.SOPInstanceUID for ds in out}
    series_uids = {ds.SeriesInstanceUID for ds in out}
    study_uids = {ds.StudyInstanceUID for ds in out}
    assert len(sop_uids) == len(out) and len(study_uids) == 1 and len(series_uids) == 2
    assert not sop_uids & {ds.SOPInstanceUID for ds in study}
    for ds in out:
        assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID in sop_uids
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID in sop_uids
        ref = ds.ReferencedSeriesSequence[0]
        assert ref.SeriesInstanceUID == ds.SeriesInstanceUID
        assert ref.StudyInstanceUID == ds.StudyInstanceUID
        # SOP Class UIDs and well-known UIDs are never replaced
        assert ds.SOPClassUID == study[0].SOPClassUID
        assert ds.ReferencedImageSequence[0].ReferencedSOPClassUID == study[0].SOPClassUID
    frames = {ds.SeriesInstanceUID: ds.FrameOfReferenceUID for ds in out}
    assert len(set(frames.values())) == 2


def test_same_uid_maps_the_same_in_separate_runs(store, phi_study):
    study, _ = phi_study
    _, first = _anonymized(store, study)
    _, second = _anonymized(store, study)  # a new Anonymizer: same key from the store
    assert [ds.SOPInstanceUID for ds in first] == [ds.SOPInstanceUID for ds in second]


def test_deidentification_attributes(store, phi_study):
    study, _ = phi_study
    anonymizer, out = _anonymized(store, study, options=("retain_long_modified_dates", "retain_device_id"))
    ds = out[0]
    assert ds.PatientIdentityRemoved == "YES"
    codes = [(item.CodeValue, item.CodingSchemeDesignator) for item in ds.DeidentificationMethodCodeSequence]
    assert codes == [("113100", "DCM"), ("113109", "DCM"), ("113107", "DCM")]
    assert all(len(item.CodeMeaning) <= 64 for item in ds.DeidentificationMethodCodeSequence)
    assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "Basic Application Level Confidentiality Profile" in str(ds.DeidentificationMethod)
    assert anonymizer.fingerprint == "PS3.15-basic+retain_device_id+retain_long_modified_dates"


def test_without_date_option_dates_are_emptied(store, phi_study):
    study, _ = phi_study
    _, out = _anonymized(store, study)
    ds = out[0]
    assert not ds.StudyDate and not ds.PatientBirthDate
    assert "AcquisitionDate" not in ds
    assert ds.LongitudinalTemporalInformationModified == "REMOVED"


def test_modified_dates_keep_intervals(store, phi_study):
    study, _ = phi_study
    _, out = _anonymized(store, study, options=("retain_long_modified_dates",))
    before = datetime.strptime(study[0].StudyDate, "%Y%m%d")
    after = datetime.strptime(out[0].StudyDate, "%Y%m%d")
    shift = (after - before).days
    assert -730 <= shift <= -62
    nested = out[0].ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert nested.SeriesDate == out[0].StudyDate  # dates inside sequences move by the same amount
    assert out[0].AcquisitionDateTime.startswith(out[0].StudyDate)
    assert out[0].StudyTime == study[0].StudyTime  # times are kept, only the day moves


def test_full_dates_option_keeps_dates(store, phi_study):
    study, _ = phi_study
    _, out = _anonymized(store, study, options=("retain_long_full_dates",))
    assert out[0].StudyDate == study[0].StudyDate
    assert out[0].LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_both_date_options_are_refused(store):
    with pytest.raises(ConfigError, match="choose one"):
        make_anonymizer(store, options=("retain_long_full_dates", "retain_long_modified_dates"))


def test_retain_uids(store, phi_study):
    study, _ = phi_study
    _, out = _anonymized(store, study, options=("retain_uids",))
    assert [ds.SOPInstanceUID for ds in out] == [ds.SOPInstanceUID for ds in study]
    assert out[0].StudyInstanceUID == study[0].StudyInstanceUID


def test_retain_device_and_institution_and_patient_characteristics(store, phi_study):
    study, _ = phi_study
    options = ("retain_device_id", "retain_institution_id", "retain_patient_chars")
    _, out = _anonymized(store, study, options=options)
    ds, orig = out[0], study[0]
    assert ds.DeviceSerialNumber == orig.DeviceSerialNumber
    assert ds.StationName == orig.StationName
    assert ds.InstitutionName == orig.InstitutionName
    assert ds.PatientSex == orig.PatientSex and ds.PatientAge == orig.PatientAge
    _, plain = _anonymized(store, study)
    assert "DeviceSerialNumber" not in plain[0] and "InstitutionName" not in plain[0]
    assert not plain[0].PatientSex


def test_clean_descriptors_keeps_text_without_identifiers(store, phi_study):
    study, _ = phi_study
    _, out = _anonymized(store, study, options=("clean_descriptors",))
    ds, orig = out[0], study[0]
    family = str(orig.PatientName).split("^")[0]
    assert "SeriesDescription" in ds and ds.SeriesDescription
    assert family not in ds.SeriesDescription
    assert ds.StudyDescription.startswith(orig.Modality)
    _, plain = _anonymized(store, study)
    assert "SeriesDescription" not in plain[0] and "StudyDescription" not in plain[0]


def test_private_tags_removed_unless_allowlisted(store, phi_study):
    study, _ = phi_study
    _, plain = _anonymized(store, study)
    for path, _text in walk_values(plain[0]):
        group = int(path[1:5], 16) if path.startswith("(") else 0
        assert group % 2 == 0 or group in (0x0001,), path
    assert not any(elem.tag.is_private for elem in plain[0].iterall())
    allow = ("(0033,{ACME UIDS}02)", "(0029,{ACME NESTED}01)")
    _, kept = _anonymized(store, study, private_allowlist=allow)
    block = kept[0].private_block(0x0033, "ACME UIDS")
    assert kept[0][block.get_tag(0x02)].value == 3.5
    assert block.get_tag(0x03) not in kept[0]  # not allowlisted: gone
    assert block.get_tag(0x01) not in kept[0]


def test_allowlist_entry_must_be_private_creator_form(store):
    with pytest.raises(ConfigError, match="private_allowlist"):
        make_anonymizer(store, private_allowlist=("(0019,100C)",))


def test_retain_safe_private_keeps_only_the_standards_safe_attributes(store, phi_study):
    # Retain Safe Private keeps exactly PS3.15 Table E.3.10-1 (here SIEMENS MR HEADER B_value),
    # not every number of every vendor
    study, _ = phi_study
    ds = copy.deepcopy(study[0])
    siemens = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    siemens.add_new(0x0C, "IS", 1000)  # B_value: in the table
    siemens.add_new(0x08, "CS", "IMAGE NUM 4")  # not in the table
    make_anonymizer(store, options=("retain_safe_private",)).apply(ds, labels())
    kept = ds.private_block(0x0019, "SIEMENS MR HEADER")
    assert ds[kept.get_tag(0x0C)].value == 1000
    assert kept.get_tag(0x08) not in ds
    assert not any(elem.tag.group == 0x0033 for elem in ds)  # ACME's numbers are not in the table


def test_profile_none_runs_nothing(store, phi_study):
    study, _ = phi_study
    anonymizer, out = _anonymized(store, study, profile="none")
    assert out[0].PatientName == study[0].PatientName
    assert anonymizer.fingerprint == "no-profile"


def test_table_comes_from_the_standard():
    # the generated table: hundreds of Basic Profile rows, every option with its CID 7050 code
    assert len(ps315_table.BASIC) > 500
    assert ps315_table.BASIC["00100010"] == "Z"  # Patient's Name
    assert ps315_table.BASIC["0020000d"] == "U"  # Study Instance UID
    codes = {name: spec[0] for name, spec in ps315_table.OPTIONS.items()}
    assert codes["retain_long_modified_dates"] == "113107"
    assert codes["retain_long_full_dates"] == "113106"
    assert codes["retain_uids"] == "113110"
    assert codes["retain_safe_private"] == "113111"
    rules = build_rules(("retain_uids",))
    assert rules.action(0x0020000D) == "K"
    assert rules.action(0x60024000) == "X"  # repeating group 60xx Overlay Comments


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm"])
def test_pydicom_test_files(store, name):
    path = get_testdata_file(name)
    original = pydicom.dcmread(path)
    ds = pydicom.dcmread(path)
    make_anonymizer(store, options=("retain_long_modified_dates",)).apply(ds, labels())
    assert ds.get("PixelData") == original.get("PixelData")
    assert ds.PatientName != original.PatientName or not str(original.PatientName)
    buf = io.BytesIO()
    ds.save_as(buf)
    reread = pydicom.dcmread(io.BytesIO(buf.getvalue()))
    assert reread.PatientIdentityRemoved == "YES"
    for value in (str(original.get("PatientName", "")), str(original.get("PatientID", ""))):
        if len(value) >= 4:
            assert value.encode() not in buf.getvalue()


def test_tokens_leave_private_elements_that_hold_none_undecoded(tmp_path):
    """The profile gathers its tokens without decoding a private element whose VR as read is
    neither PN, SQ nor UN (it cannot hold a token; the walk removes or decodes it): the same
    tokens as decoding everything, on every vendor's private blocks of the corpus."""
    left_raw = 0
    for path, _ in build(tmp_path):
        everything, lean = pydicom.dcmread(path), pydicom.dcmread(path)
        assert set(identifying_tokens(lean, decode_private=False)) == set(identifying_tokens(everything)), path.name
        left_raw += sum(1 for tag in lean.keys() if tag.is_private and lean.get_item(tag).is_raw)
        assert not any(tag.is_private and everything.get_item(tag).is_raw for tag in everything.keys())
    assert left_raw > 20


def test_burned_in(store):
    anonymizer = make_anonymizer(store)
    ds = Dataset()
    ds.Modality = "MR"
    assert anonymizer.burned_in_reason(ds) is None
    ds.BurnedInAnnotation = "YES"
    assert anonymizer.burned_in_reason(ds) == "BurnedInAnnotation=YES"
    ds.BurnedInAnnotation = "NO"
    ds.Modality = "US"
    assert "modality US" in anonymizer.burned_in_reason(ds)
    ds.Modality = "OT"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    assert anonymizer.burned_in_reason(ds)
    assert make_anonymizer(store, allow_burned_in=True).burned_in_reason(ds) is None


def test_script_only_is_recorded(store, tmp_path, phi_study):
    study, _ = phi_study
    script = tmp_path / "only.das"
    script.write_text('version "6.1"\n(0010,0010) := subject\n')
    anonymizer, out = _anonymized(store, study, profile="none", script=str(script))
    assert out[0].PatientName == "subj"
    assert out[0].DeidentificationMethod == f"DicomEdit script sha256:{anonymizer.script_hash[:40]}"
    assert "PatientIdentityRemoved" not in out[0]  # a script alone is not a profile: no claim made


def test_private_sop_class_uids_are_kept(store, phi_study):
    study, _ = phi_study
    ds = copy.deepcopy(study[0])
    ds.SOPClassUID = "1.3.12.2.1107.5.9.1"  # a vendor's private SOP Class
    ds.ReferencedImageSequence[0].ReferencedSOPClassUID = "1.3.12.2.1107.5.9.1"
    make_anonymizer(store).apply(ds, labels())
    assert ds.SOPClassUID == "1.3.12.2.1107.5.9.1"
    assert ds.ReferencedImageSequence[0].ReferencedSOPClassUID == "1.3.12.2.1107.5.9.1"


def test_new_uids_are_uuid_derived(store, phi_study):
    study, _ = phi_study
    _, out = _anonymized(store, study)
    for uid in (out[0].SOPInstanceUID, out[0].StudyInstanceUID, out[0].FrameOfReferenceUID):
        assert uid.startswith("2.25.") and len(uid) <= 64 and uid.is_valid
