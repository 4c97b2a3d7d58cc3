"""Fixtures for the anonymization tests: a pseudonym store and a PHI-planted study.

The study comes from the project's generator (which already plants names, IDs, addresses, a
private tag and descriptions); `plant_more` adds identifying values where anonymizers usually miss
them: nested sequences at several depths, private blocks (also inside sequences), references
between instances, dates inside sequences and comments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomd.anonymize import Anonymizer, Labels, PseudonymStore
from dicomd.config import AnonymizeConfig
from dicomd.testing.generator import PatientSpec, generate_study, make_patient, study_phi_values

EXTRA_PHI = ("Zbigniew Quattlebaum", "QUATTLEBAUM-NURSE", "Ward 7B Zbyszek", "HOSPNO-99812734")


def plant_more(study: list[Dataset]) -> set[str]:
    """Add identifying values in hard-to-reach places; returns the extra strings planted."""
    name = str(study[0].PatientName)
    pid = str(study[0].PatientID)
    by_series: dict[str, list[Dataset]] = {}
    for ds in study:
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    for series in by_series.values():
        first = series[0]
        for ds in series:
            ref = Dataset()
            ref.ReferencedSOPClassUID = first.SOPClassUID
            ref.ReferencedSOPInstanceUID = first.SOPInstanceUID
            ds.ReferencedImageSequence = Sequence([ref])
            src = Dataset()
            src.ReferencedSOPClassUID = first.SOPClassUID
            src.ReferencedSOPInstanceUID = first.SOPInstanceUID
            ds.SourceImageSequence = Sequence([src])
            # a sequence the profile does not list: must still be walked
            inner = Dataset()
            inner.PatientName = name
            inner.PatientID = pid
            inner.SeriesDate = ds.StudyDate
            inner.ImageComments = f"nurse {EXTRA_PHI[1]} noted {EXTRA_PHI[0]}"
            deeper = Dataset()
            deeper.PersonName = name
            deeper.OtherPatientIDs = EXTRA_PHI[3]
            deeper.private_block(0x0029, "ACME NESTED", create=True).add_new(0x01, "LO", EXTRA_PHI[2])
            inner.ReferencedSeriesSequence = Sequence([deeper])
            outer = Dataset()
            outer.SeriesInstanceUID = ds.SeriesInstanceUID
            outer.StudyInstanceUID = ds.StudyInstanceUID
            outer.ReferencedInstanceSequence = Sequence([inner])
            ds.ReferencedSeriesSequence = Sequence([outer])
            ds.OtherPatientIDs = EXTRA_PHI[3]
            ds.ImageComments = f"{name} seen by {EXTRA_PHI[0]}"
            ds.AdditionalPatientHistory = f"history of {pid}"
            ds.ReferringPhysicianTelephoneNumbers = "+44 20 7946 0000"
            block = ds.private_block(0x0033, "ACME UIDS", create=True)
            block.add_new(0x01, "UI", ds.StudyInstanceUID)
            block.add_new(0x02, "FD", 3.5)
            block.add_new(0x03, "LO", f"{pid}/{name}")
    return set(EXTRA_PHI) | {"+44 20 7946 0000"}


def phi_strings(study: list[Dataset]) -> set[str]:
    return study_phi_values(study)


def walk_values(ds: Dataset) -> Iterator[tuple[str, str]]:
    """(path, text) of every element at every depth (file meta included)."""
    meta = getattr(ds, "file_meta", None)
    for source in ([meta] if meta is not None else []) + [ds]:
        yield from _walk(source, "")


def _walk(ds: Dataset, prefix: str) -> Iterator[tuple[str, str]]:
    for elem in ds:
        path = f"{prefix}{elem.tag}"
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or ()):
                yield from _walk(item, f"{path}[{i}]/")
        elif elem.tag != 0x7FE00010:
            yield path, _elem_text(elem)


def _elem_text(elem: DataElement) -> str:
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return str(value)


@pytest.fixture
def store(tmp_path: Path) -> PseudonymStore:
    return PseudonymStore(tmp_path / "keys" / "pseudonyms.sqlite")


@pytest.fixture
def patient() -> PatientSpec:
    return make_patient(4242)


@pytest.fixture
def phi_study(patient: PatientSpec) -> tuple[list[Dataset], set[str]]:
    study = generate_study(7, patient=patient, series=2, instances_per_series=3, rows=16, cols=16)
    planted = phi_strings(study) | plant_more(study)
    return study, planted


def make_anonymizer(store: PseudonymStore, project: str = "demo", **settings: object) -> Anonymizer:
    settings.setdefault("enabled", True)
    return Anonymizer(project, AnonymizeConfig(**settings), store)  # type: ignore[arg-type]


def labels(project: str = "demo", subject: str = "subj", session: str = "sess",
           subject_from: str = "explicit", session_from: str = "explicit") -> Labels:
    return Labels(project, subject, session, subject_from, session_from)
