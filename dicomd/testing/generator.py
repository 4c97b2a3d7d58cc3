"""Deterministic generator of realistic DICOM studies, shared by tests and benchmarks.

Everything is derived from an integer seed: the same seed gives the same patient, the same UIDs
and the same pixels. With ``phi=True`` identifying values are planted in the places real scanners
put them (patient module, physicians, institution, descriptions, comments, request sequences, a
private block); :func:`phi_values` and :func:`study_phi_values` return those strings so tests can
check that none survive anonymization.

Example::

    from dicomd.testing.generator import generate_study, write_study, phi_values
    datasets = generate_study(seed=7, series=2, instances_per_series=3)
    paths = write_study(datasets, tmp_path / "study")
"""

from __future__ import annotations

import copy
import io
import logging
import math
import random
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import BinaryIO, Iterable

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
)

logger = logging.getLogger(__name__)

IMPLEMENTATION_CLASS_UID = UID("2.25.276497402513453622330932916186442519611")
IMPLEMENTATION_VERSION = "DICOMD_GEN_1"
PRIVATE_GROUP = 0x0011
PRIVATE_CREATOR = "DICOMD GENERATOR"

_GIVEN = ("Alice", "Bruno", "Chiara", "Dmitri", "Eleni", "Farid", "Greta", "Hiroshi", "Ines",
          "Jonas", "Kemal", "Lucia", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa")
_FAMILY = ("Abernathy", "Bergstrom", "Castellano", "Dubois", "Eriksen", "Fontaine", "Galloway",
           "Hargreaves", "Ivanova", "Jablonski", "Kowalczyk", "Lindqvist", "Moreau", "Novak",
           "Okonkwo", "Pettersen", "Quinlan", "Rasmussen")
_PHYSICIANS = ("Whitfield^Harriet^^Dr", "Oyelaran^Tobias^^Dr", "Marchetti^Sofia^^Dr")
_INSTITUTIONS = (("Saint Brigid General Hospital", "14 Harbour Road, Kilmore"),
                 ("Northvale University Clinic", "220 Alder Street, Northvale"),
                 ("Riverside Imaging Centre", "9 Quay Lane, Ashbridge"))
_OPERATORS = ("Lindgren^Petra", "Adeyemi^Kola", "Vasquez^Marta")


@dataclass(frozen=True)
class PatientSpec:
    """The identity of a synthetic patient (all values are PHI)."""

    name: str  # DICOM PN, Family^Given
    patient_id: str
    birth_date: str  # YYYYMMDD
    sex: str  # M, F or O


@dataclass(frozen=True)
class _Modality:
    sop_class: UID
    bits_stored: int
    rescale_intercept: float
    default_size: int


_MODALITIES = {
    "MR": _Modality(MRImageStorage, 12, 0.0, 256),
    "CT": _Modality(CTImageStorage, 12, -1024.0, 512),
}


@dataclass(frozen=True)
class MultiframeInfo:
    """What :func:`large_multiframe` wrote."""

    path: Path
    frames: int
    rows: int
    cols: int
    size: int  # bytes on disk
    sop_instance_uid: str
    study_instance_uid: str


def make_patient(seed: int) -> PatientSpec:
    """A deterministic patient for ``seed``; different seeds give different IDs."""
    rnd = random.Random(f"patient-{seed}")
    birth = date(1930, 1, 1) + timedelta(days=rnd.randrange(0, 80 * 365))
    return PatientSpec(
        name=f"{rnd.choice(_FAMILY)}^{rnd.choice(_GIVEN)}",
        patient_id=f"PID{seed:06d}{rnd.randrange(100, 1000)}",
        birth_date=birth.strftime("%Y%m%d"),
        sex=rnd.choice("MF"),
    )


def _pick(options: tuple, patient: PatientSpec) -> object:
    return options[sum(map(ord, patient.patient_id)) % len(options)]


def other_patient_id(patient: PatientSpec) -> str:
    return f"MRN-{patient.patient_id[::-1]}"


def phi_values(patient: PatientSpec) -> set[str]:
    """The identifying strings that ``generate_study(phi=True)`` plants for this patient.

    Only distinctive strings (safe to grep for in output), not short codes like the sex."""
    family, given = patient.name.split("^")
    institution, address = _pick(_INSTITUTIONS, patient)  # type: ignore[misc]
    return {
        patient.name, family, given, patient.patient_id, patient.birth_date,
        other_patient_id(patient), str(_pick(_PHYSICIANS, patient)).split("^")[0],
        institution, address, str(_pick(_OPERATORS, patient)).split("^")[0],
        _phone(patient), patient_address(patient),
    }


def study_phi_values(datasets: Iterable[Dataset]) -> set[str]:
    """:func:`phi_values` of the study's patient plus its per-study identifiers (accession)."""
    out: set[str] = set()
    for ds in datasets:
        patient = PatientSpec(str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.PatientSex)
        out |= phi_values(patient)
        if ds.get("AccessionNumber"):
            out.add(ds.AccessionNumber)
    return out


def patient_address(patient: PatientSpec) -> str:
    return f"{sum(map(ord, patient.patient_id)) % 190 + 3} Larkspur Close, {patient.name[:3]}ford"


def _phone(patient: PatientSpec) -> str:
    digits = str(sum(ord(c) * (i + 7) for i, c in enumerate(patient.patient_id)) * 7919)
    return f"+44 20 {digits[:4]} {digits[4:8].ljust(4, '0')}"


_UID_NAMESPACE = uuid.UUID("5c1f0a8e-3d1b-4b53-9a57-6f1e2a9d0c42")


def _uid(*parts: object) -> UID:
    """A deterministic UUID-derived UID (2.25.x) from the given parts."""
    return UID(f"2.25.{uuid.uuid5(_UID_NAMESPACE, '/'.join(map(str, parts))).int}")


def _phantom(rows: int, cols: int, modality: str) -> np.ndarray:
    """A smooth ellipse phantom (uint16) that instances add noise to."""
    y, x = np.ogrid[-1.0:1.0:rows * 1j, -1.0:1.0:cols * 1j]
    body = (x / 0.85) ** 2 + (y / 0.7) ** 2 <= 1.0
    core = ((x - 0.2) / 0.25) ** 2 + (y / 0.3) ** 2 <= 1.0
    base = 1024 if modality == "CT" else 0
    img = np.full((rows, cols), base if modality == "CT" else 0, dtype=np.int32)
    img[body] = base + 400 if modality == "CT" else 900
    img[core] = base + 1100 if modality == "CT" else 2100
    return img.astype(np.uint16)


def _pixels(phantom: np.ndarray, rng: np.random.Generator) -> bytes:
    noise = rng.integers(0, 64, size=phantom.shape, dtype=np.uint16)
    return (phantom + noise).astype("<u2").tobytes()


def _file_meta(sop_class: UID, sop_instance: UID) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def _default_study_date(seed: int) -> str:
    return (date(2020, 1, 1) + timedelta(days=seed % 1500)).strftime("%Y%m%d")


def _set_patient(ds: Dataset, patient: PatientSpec, phi: bool, seed: int) -> None:
    if not phi:
        ds.PatientName = f"SUBJ{seed:06d}"
        ds.PatientID = f"SUBJ{seed:06d}"
        ds.PatientBirthDate = ""
        ds.PatientSex = patient.sex
        return
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = "SBGH"
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{max(0, 2024 - int(patient.birth_date[:4])):03d}Y"
    ds.PatientWeight = 70.5
    ds.PatientAddress = patient_address(patient)
    ds.PatientTelephoneNumbers = _phone(patient)
    other = Dataset()
    other.PatientID = other_patient_id(patient)
    other.IssuerOfPatientID = "REGIONAL-MPI"
    ds.OtherPatientIDsSequence = Sequence([other])
    ds.PatientComments = f"Patient {patient.name} prefers phone contact at {_phone(patient)}"


def _study_base(seed: int, patient: PatientSpec, modality: str, study_uid: UID, study_date: str,
                phi: bool, study_comments: str | None, study_description: str | None,
                accession_number: str | None) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    _set_patient(ds, patient, phi, seed)
    ds.StudyInstanceUID = study_uid
    ds.StudyID = f"{seed % 100000}"
    ds.StudyDate = study_date
    ds.StudyTime = f"{8 + seed % 10:02d}{seed % 60:02d}12.250000"
    ds.AccessionNumber = accession_number if accession_number is not None else f"A{seed:08d}"
    ds.Modality = modality
    ds.Manufacturer = "DICOMD Synthetic"
    ds.ManufacturerModelName = "Generator MR 3T" if modality == "MR" else "Generator CT 64"
    ds.StationName = "GEN-STATION-1"
    ds.DeviceSerialNumber = f"SN{seed % 9973:05d}"
    ds.SoftwareVersions = IMPLEMENTATION_VERSION
    if study_description is not None:
        ds.StudyDescription = study_description
    elif phi:
        ds.StudyDescription = f"{modality} BRAIN for {patient.name}"
    else:
        ds.StudyDescription = f"{modality} BRAIN"
    if study_comments is not None:
        ds.StudyComments = study_comments
    if phi:
        _set_phi_context(ds, patient, study_uid, ds.AccessionNumber, seed)
    else:
        ds.ReferringPhysicianName = ""
    return ds


def _set_phi_context(ds: Dataset, patient: PatientSpec, study_uid: UID, accession: str,
                     seed: int) -> None:
    institution, address = _pick(_INSTITUTIONS, patient)  # type: ignore[misc]
    ds.ReferringPhysicianName = str(_pick(_PHYSICIANS, patient))
    ds.PerformingPhysicianName = str(_pick(_PHYSICIANS, patient))
    ds.NameOfPhysiciansReadingStudy = str(_pick(_PHYSICIANS, patient))
    ds.InstitutionName = institution
    ds.InstitutionAddress = address
    ds.InstitutionalDepartmentName = "Radiology"
    ds.OperatorsName = str(_pick(_OPERATORS, patient))
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref.ReferencedSOPInstanceUID = _uid("refstudy", seed, patient.patient_id)
    ds.ReferencedStudySequence = Sequence([ref])
    req = Dataset()
    req.RequestedProcedureID = f"RP{accession}"
    req.ScheduledProcedureStepID = f"SPS{accession}"
    req.AccessionNumber = accession
    req.StudyInstanceUID = study_uid
    req.RequestedProcedureDescription = f"Brain follow-up, {patient.name}"
    ds.RequestAttributesSequence = Sequence([req])
    ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True).add_new(
        0x10, "LO", f"Scheduled for {patient.name} ({patient.patient_id})")
    ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR).add_new(0x11, "LO", f"{seed % 997}")


def _set_series(ds: Dataset, spec: _Modality, series_uid: UID, number: int, frame_uid: UID,
                patient: PatientSpec, phi: bool, study_date: str, study_time: str) -> None:
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.SeriesDate = study_date
    ds.SeriesTime = study_time
    names = ("T1 MPRAGE", "T2 FLAIR", "DWI", "SWI", "T1 POST") if ds.Modality == "MR" else (
        "HEAD 5mm", "HEAD 1mm BONE", "ANGIO", "PERFUSION", "TOPOGRAM")
    label = names[(number - 1) % len(names)]
    ds.SeriesDescription = f"{label} {patient.name.split('^')[0]}" if phi else label
    ds.ProtocolName = label
    ds.BodyPartExamined = "HEAD"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SOPClassUID = spec.sop_class
    if ds.Modality == "MR":
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = "SP"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "3D"
        ds.RepetitionTime = 2300.0
        ds.EchoTime = 2.98
        ds.MagneticFieldStrength = 3.0
        ds.ImagingFrequency = 123.25
    else:
        ds.KVP = 120.0
        ds.ConvolutionKernel = "H31s"
        ds.XRayTubeCurrent = 250
        ds.RescaleIntercept = spec.rescale_intercept
        ds.RescaleSlope = 1.0
        ds.RescaleType = "HU"


def _set_image(ds: Dataset, spec: _Modality, rows: int, cols: int) -> None:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = spec.bits_stored
    ds.HighBit = spec.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelSpacing = [round(230.0 / rows, 4), round(230.0 / cols, 4)]
    ds.SliceThickness = 1.0
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.WindowCenter = 40 if ds.Modality == "CT" else 1100
    ds.WindowWidth = 80 if ds.Modality == "CT" else 2200


def generate_study(seed: int = 0, *, patient: PatientSpec | None = None, series: int = 3,
                   instances_per_series: int = 4, modality: str = "MR", rows: int = 64,
                   cols: int = 64, study_date: str | None = None, phi: bool = True,
                   study_comments: str | None = None, study_description: str | None = None,
                   accession_number: str | None = None) -> list[Dataset]:
    """A study of ``series`` x ``instances_per_series`` single-frame images with file meta.

    ``modality`` is "MR" or "CT". Use rows=cols=256 for realistic MR (~130 KB per instance) and
    512 for CT (~520 KB). Datasets are returned series by series, in instance order."""
    if modality not in _MODALITIES:
        raise ValueError(f"modality must be one of {sorted(_MODALITIES)}, not {modality!r}")
    spec = _MODALITIES[modality]
    patient = patient or make_patient(seed)
    key = (seed, patient.patient_id, modality)
    study_uid = _uid("study", *key)
    base = _study_base(seed, patient, modality, study_uid, study_date or _default_study_date(seed),
                       phi, study_comments, study_description, accession_number)
    phantom = _phantom(rows, cols, modality)
    rng = np.random.default_rng([seed, series, instances_per_series, rows, cols])
    out: list[Dataset] = []
    for s in range(1, series + 1):
        series_uid = _uid("series", *key, s)
        frame_uid = _uid("frame", *key, s)
        for i in range(1, instances_per_series + 1):
            ds = copy.deepcopy(base)
            _set_series(ds, spec, series_uid, s, frame_uid, patient, phi, base.StudyDate,
                        base.StudyTime)
            _set_instance(ds, spec, _uid("instance", *key, s, i), i, rows, cols)
            ds.PixelData = _pixels(phantom, rng)
            ds["PixelData"].VR = "OW"
            out.append(ds)
    return out


def _set_instance(ds: Dataset, spec: _Modality, sop_uid: UID, number: int, rows: int,
                  cols: int) -> None:
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M" if ds.Modality == "MR" else "AXIAL"]
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = ds.StudyDate
    ds.ContentDate = ds.StudyDate
    seconds = 30 + number
    ds.AcquisitionTime = f"{ds.StudyTime[:2]}{ds.StudyTime[2:4]}{seconds % 60:02d}.500000"
    ds.ContentTime = ds.AcquisitionTime
    ds.AcquisitionDateTime = f"{ds.StudyDate}{ds.AcquisitionTime}"
    ds.InstanceCreationDate = ds.StudyDate
    ds.InstanceCreationTime = ds.AcquisitionTime
    z = -80.0 + number * 1.0
    ds.ImagePositionPatient = [-115.0, -115.0, z]
    ds.SliceLocation = z
    _set_image(ds, spec, rows, cols)
    ds.file_meta = _file_meta(spec.sop_class, sop_uid)


def _encode(ds: Dataset, fp: BinaryIO) -> None:
    dcmwrite(fp, ds, enforce_file_format=True)


def instance_bytes(ds: Dataset) -> bytes:
    """One dataset as Part-10 bytes (preamble, file meta, explicit VR little endian)."""
    buf = io.BytesIO()
    _encode(ds, buf)
    return buf.getvalue()


def generate_instance_bytes(seed: int = 0, *, count: int = 1, modality: str = "MR",
                            rows: int | None = None, cols: int | None = None,
                            phi: bool = True) -> list[bytes]:
    """``count`` Part-10 instances of one study as bytes (for benchmarks); realistic size by default.

    The instances are spread over series of at most 200 instances each."""
    size = _MODALITIES[modality].default_size
    per_series = min(count, 200)
    datasets = generate_study(seed, series=math.ceil(count / per_series),
                              instances_per_series=per_series, modality=modality,
                              rows=rows or size, cols=cols or size, phi=phi)
    return [instance_bytes(ds) for ds in datasets[:count]]


def file_name(ds: Dataset) -> str:
    """The file name :func:`write_study` uses: ``{Modality}.{SOPInstanceUID}.dcm``."""
    return f"{ds.Modality}.{ds.SOPInstanceUID}.dcm"


def write_study(datasets: Iterable[Dataset], folder: Path) -> list[Path]:
    """Write each dataset as a Part-10 file into ``folder`` (created); returns the paths in order."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / file_name(ds)
        with path.open("wb") as fp:
            _encode(ds, fp)
        paths.append(path)
    return paths


def large_multiframe(path: Path, target_bytes: int, *, seed: int = 0,
                     patient: PatientSpec | None = None, rows: int = 512,
                     cols: int = 512) -> MultiframeInfo:
    """Write one multi-frame 16-bit instance of at least ``target_bytes`` to ``path`` by streaming.

    The header is encoded by pydicom; the Pixel Data element is then appended frame by frame, so
    memory use stays at a few frames whatever the size (the limit is DICOM's 4 GiB element)."""
    frame_len = rows * cols * 2
    frames = max(1, math.ceil(target_bytes / frame_len))
    if frames * frame_len >= 0xFFFFFFFF:
        raise ValueError("target_bytes exceeds the 4 GiB limit of one Pixel Data element")
    ds = generate_study(seed, patient=patient, series=1, instances_per_series=1, modality="MR",
                        rows=rows, cols=cols)[0]
    del ds.PixelData
    sop_class = MultiFrameGrayscaleWordSecondaryCaptureImageStorage
    ds.SOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00200013  # Instance Number: frames are untimed
    ds.SeriesDescription = "LARGE MULTIFRAME"
    rng = np.random.default_rng(seed)
    phantom = _phantom(rows, cols, "MR")
    distinct = [_pixels(phantom, rng) for _ in range(4)]
    path = Path(path)
    with path.open("wb") as fp:
        _encode(ds, fp)
        fp.write(b"\xe0\x7f\x10\x00OW\x00\x00" + (frames * frame_len).to_bytes(4, "little"))
        for n in range(frames):
            fp.write(distinct[n % len(distinct)])
    size = path.stat().st_size
    logger.debug("wrote %d-frame instance of %d bytes to %s", frames, size, path)
    return MultiframeInfo(path, frames, rows, cols, size, str(ds.SOPInstanceUID),
                          str(ds.StudyInstanceUID))
