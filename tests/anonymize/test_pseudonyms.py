"""Consistent pseudonyms: keys, the map file, longitudinal studies, labels."""

from __future__ import annotations

import copy
import stat
import threading
from datetime import datetime
from pathlib import Path

from dicomd.anonymize import PseudonymStore, preview
from dicomd.testing.generator import generate_study

from .conftest import labels, make_anonymizer


def _days_between(a: str, b: str) -> int:
    return (datetime.strptime(b, "%Y%m%d") - datetime.strptime(a, "%Y%m%d")).days


def test_store_file_is_owner_only(tmp_path: Path):
    path = tmp_path / "data" / "keys" / "pseudonyms.sqlite"
    store = PseudonymStore(path)
    store.project_key("demo")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_key_is_created_once_and_kept(tmp_path: Path):
    path = tmp_path / "keys" / "p.sqlite"
    key = PseudonymStore(path).project_key("demo")
    assert len(key) == 32
    assert PseudonymStore(path).project_key("demo") == key
    assert PseudonymStore(path).project_key("other") != key


def test_key_creation_is_thread_safe(tmp_path: Path):
    path = tmp_path / "keys" / "p.sqlite"
    keys: list[bytes] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            keys.append(PseudonymStore(path).project_key("demo"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and len(keys) == 8 and len(set(keys)) == 1


def test_same_patient_two_studies_a_week_apart(store, patient):
    # Given the same patient scanned twice, a week apart, in two studies
    first = generate_study(1, patient=patient, series=1, instances_per_series=1, study_date="20240101")
    second = generate_study(2, patient=patient, series=1, instances_per_series=1, study_date="20240108")
    anonymizer = make_anonymizer(store, options=("retain_long_modified_dates",))
    # When each is anonymized (by separately built anonymizers: a restart in between)
    a, b = copy.deepcopy(first[0]), copy.deepcopy(second[0])
    anonymizer.apply(a, labels())
    make_anonymizer(store, options=("retain_long_modified_dates",)).apply(b, labels())
    # Then both carry the same pseudonymous ID and name, and the interval is kept
    assert a.PatientID == b.PatientID != patient.patient_id
    assert a.PatientName == b.PatientName != patient.name
    assert _days_between(a.StudyDate, b.StudyDate) == 7
    assert a.StudyInstanceUID != b.StudyInstanceUID
    # and the map is recorded for an operator
    rows = {(r["kind"], r["original"]): r["pseudonym"] for r in store.lookup("demo")}
    shown = f"{patient.patient_id} [{first[0].IssuerOfPatientID}]"  # the ID with its issuer
    assert rows[("patient_id", shown)] == a.PatientID
    assert rows[("patient_name", patient.name)] == str(a.PatientName)
    assert int(rows[("date_shift_days", shown)]) == _days_between("20240101", a.StudyDate)


def test_other_patient_and_other_project_differ(store, patient):
    study = generate_study(1, patient=patient, series=1, instances_per_series=1)
    other = generate_study(3, series=1, instances_per_series=1)
    a, b, c = copy.deepcopy(study[0]), copy.deepcopy(other[0]), copy.deepcopy(study[0])
    make_anonymizer(store).apply(a, labels())
    make_anonymizer(store).apply(b, labels())
    make_anonymizer(store, project="trial2").apply(c, labels(project="trial2"))
    assert a.PatientID != b.PatientID
    assert a.PatientID != c.PatientID  # each project has its own key


def test_archive_labels(store, patient):
    ds = generate_study(1, patient=patient, series=1, instances_per_series=1)[0]
    anonymizer = make_anonymizer(store)
    explicit = labels(subject="S01", session="S01_MR1")
    assert anonymizer.archive_labels(ds, explicit) == ("S01", "S01_MR1")
    derived = labels(subject="Doe_John", session=patient.patient_id, subject_from="patient_name",
                     session_from="patient_id")
    subject, session = anonymizer.archive_labels(ds, derived)
    assert patient.patient_id not in (subject, session) and "Doe" not in subject
    assert subject.isalnum() and session.isalnum()
    work = copy.deepcopy(ds)
    anonymizer.apply(work, derived)
    assert subject == work.PatientID  # the subject label is the patient's pseudonymous ID
    assert anonymizer.archive_labels(ds, derived) == (subject, session)  # stable


def test_preview_lists_changes_without_touching(store, phi_study):
    study, _ = phi_study
    ds = study[0]
    before = copy.deepcopy(ds)
    changes = preview(ds, make_anonymizer(store), labels())
    assert ds == before
    by_keyword = {c.keyword: c for c in changes if "/" not in c.path}
    assert by_keyword["PatientName"].action == "changed"
    assert by_keyword["PatientName"].before == str(before.PatientName)
    assert by_keyword["InstitutionName"].action == "removed" and by_keyword["InstitutionName"].after is None
    assert by_keyword["PatientIdentityRemoved"].action == "added"
    assert "PixelData" not in by_keyword
    nested = [c for c in changes if c.path.startswith("(0008,1140)[0]/")]
    assert nested and nested[0].action == "changed"


def test_one_anonymizer_shared_by_threads(store, phi_study):
    # Given one project Anonymizer used by several archive jobs at once
    study, _ = phi_study
    anonymizer = make_anonymizer(store, options=("retain_long_modified_dates",))
    expected = []
    for ds in study:
        work = copy.deepcopy(ds)
        anonymizer.apply(work, labels())
        expected.append((work.SOPInstanceUID, work.PatientID, work.StudyDate))
    results: dict[int, tuple[str, str, str]] = {}
    errors: list[BaseException] = []

    def job(index: int) -> None:
        try:
            for i in range(index, len(study), 3):
                work = copy.deepcopy(study[i])
                anonymizer.apply(work, labels())
                results[i] = (work.SOPInstanceUID, work.PatientID, work.StudyDate)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    # Then every thread gets exactly what a single thread gets
    assert not errors
    assert [results[i] for i in range(len(study))] == expected
