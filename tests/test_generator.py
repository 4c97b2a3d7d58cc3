"""The study generator: deterministic, valid Part-10, PHI where real scanners put it."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
)

from dicomd.testing.generator import (
    PRIVATE_CREATOR,
    PRIVATE_GROUP,
    generate_instance_bytes,
    generate_study,
    instance_bytes,
    large_multiframe,
    make_patient,
    phi_values,
    study_phi_values,
    write_study,
)


def test_same_seed_gives_identical_bytes_and_different_seeds_differ() -> None:
    # Given two studies from the same seed and one from another
    a = [instance_bytes(ds) for ds in generate_study(5, series=2, instances_per_series=2)]
    b = [instance_bytes(ds) for ds in generate_study(5, series=2, instances_per_series=2)]
    c = generate_study(6, series=2, instances_per_series=2)
    # Then the same seed is byte-identical and the other seed has its own patient and UIDs
    assert a == b
    first = pydicom.dcmread(pydicom.filebase.DicomBytesIO(a[0]))
    assert c[0].StudyInstanceUID != first.StudyInstanceUID
    assert make_patient(5) != make_patient(6)
    assert make_patient(5).patient_id != make_patient(6).patient_id


def test_uid_structure_and_numbering() -> None:
    datasets = generate_study(1, series=3, instances_per_series=4)
    assert len(datasets) == 12
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == 12
    by_series: dict[int, list] = {}
    for ds in datasets:
        by_series.setdefault(int(ds.SeriesNumber), []).append(ds)
    assert sorted(by_series) == [1, 2, 3]
    series_uids = {s: {ds.SeriesInstanceUID for ds in group} for s, group in by_series.items()}
    assert all(len(uids) == 1 for uids in series_uids.values())
    assert len(set.union(*series_uids.values())) == 3
    for group in by_series.values():
        assert [int(ds.InstanceNumber) for ds in group] == [1, 2, 3, 4]
        assert len({ds.FrameOfReferenceUID for ds in group}) == 1
    for ds in datasets:
        for uid in (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                    ds.FrameOfReferenceUID):
            assert uid.is_valid, uid


def test_a_patient_can_have_several_studies() -> None:
    patient = make_patient(3)
    one = generate_study(10, patient=patient, series=1, instances_per_series=1)[0]
    two = generate_study(11, patient=patient, series=1, instances_per_series=1)[0]
    assert one.PatientID == two.PatientID == patient.patient_id
    assert one.StudyInstanceUID != two.StudyInstanceUID
    assert one.AccessionNumber != two.AccessionNumber


@pytest.mark.parametrize("modality,size,sop_class,approx", [
    ("MR", 256, MRImageStorage, 131_072),
    ("CT", 512, CTImageStorage, 524_288),
])
def test_written_files_are_valid_part10_of_realistic_size(
        tmp_path: Path, modality: str, size: int, sop_class: str, approx: int) -> None:
    datasets = generate_study(2, modality=modality, rows=size, cols=size, series=1,
                              instances_per_series=2)
    paths = write_study(datasets, tmp_path / "out")
    assert len(paths) == 2 and all(p.parent == tmp_path / "out" for p in paths)
    for path, original in zip(paths, datasets):
        assert approx < path.stat().st_size < approx + 8_000
        with path.open("rb") as fp:
            assert fp.read(132)[128:] == b"DICM"
        ds = pydicom.dcmread(path)
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        assert ds.SOPClassUID == sop_class and ds.Modality == modality
        assert ds.pixel_array.shape == (size, size)
        assert ds.pixel_array.max() < 2 ** ds.BitsStored


def test_phi_is_planted_in_the_usual_places(tmp_path: Path) -> None:
    patient = make_patient(4)
    datasets = generate_study(4, patient=patient, series=1, instances_per_series=1)
    ds = datasets[0]
    raw = write_study(datasets, tmp_path)[0].read_bytes()
    # Every advertised value is really in the file, so tests that grep for them mean something
    expected = study_phi_values(datasets)
    assert phi_values(patient) <= expected and ds.AccessionNumber in expected
    for value in expected:
        assert value.encode() in raw, value
    assert ds.PatientName == patient.name and ds.PatientBirthDate == patient.birth_date
    assert ds.OtherPatientIDsSequence[0].PatientID in expected
    assert patient.name in ds.StudyDescription and patient.name in ds.PatientComments
    assert ds.ReferringPhysicianName and ds.InstitutionName and ds.InstitutionAddress
    assert ds.OperatorsName and ds.SeriesDescription and ds.StudyDate and ds.StudyTime
    assert ds.RequestAttributesSequence[0].StudyInstanceUID == ds.StudyInstanceUID
    assert ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID.is_valid
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    assert patient.name in block[0x10].value


def test_phi_false_plants_nothing_identifying(tmp_path: Path) -> None:
    patient = make_patient(4)
    datasets = generate_study(4, patient=patient, series=2, instances_per_series=1, phi=False)
    for path in write_study(datasets, tmp_path):
        raw = path.read_bytes()
        assert not [v for v in phi_values(patient) if v.encode() in raw]


def test_routing_fields_can_be_set() -> None:
    ds = generate_study(1, series=1, instances_per_series=1, study_date="20240229",
                        study_comments="Project: demo Subject: s1 Session: e1",
                        study_description="demo", accession_number="ACC42")[0]
    assert ds.StudyDate == "20240229" and ds.StudyComments.startswith("Project: demo")
    assert ds.StudyDescription == "demo" and ds.AccessionNumber == "ACC42"
    assert ds.RequestAttributesSequence[0].AccessionNumber == "ACC42"


def test_datasets_are_independent() -> None:
    datasets = generate_study(1, series=1, instances_per_series=2)
    datasets[0].PatientName = "Changed^Only"
    datasets[0].OtherPatientIDsSequence[0].PatientID = "X"
    assert datasets[1].PatientName != "Changed^Only"
    assert datasets[1].OtherPatientIDsSequence[0].PatientID != "X"


def test_unknown_modality_is_refused() -> None:
    with pytest.raises(ValueError, match="modality"):
        generate_study(modality="US")


def test_generate_instance_bytes_defaults_to_realistic_mr() -> None:
    blobs = generate_instance_bytes(9, count=3)
    assert len(blobs) == 3
    parsed = [pydicom.dcmread(pydicom.filebase.DicomBytesIO(b)) for b in blobs]
    assert {(ds.Rows, ds.Columns) for ds in parsed} == {(256, 256)}
    assert len({ds.SOPInstanceUID for ds in parsed}) == 3


def test_large_multiframe_streams_a_valid_file(tmp_path: Path) -> None:
    # A small target keeps the test fast; the benchmark uses >= 1 GB with the same code path
    info = large_multiframe(tmp_path / "big.dcm", 3_000_000, rows=128, cols=128)
    assert info.size >= 3_000_000 and info.frames == -(-3_000_000 // (128 * 128 * 2))
    ds = pydicom.dcmread(info.path)
    assert ds.SOPClassUID == MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert int(ds.NumberOfFrames) == info.frames
    assert len(ds.PixelData) == info.frames * 128 * 128 * 2
    assert ds.pixel_array.shape == (info.frames, 128, 128)
    assert ds.SOPInstanceUID == info.sop_instance_uid
