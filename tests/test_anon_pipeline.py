"""De-identification through the real pipeline: C-STORE -> prearchive -> archive."""

from __future__ import annotations

import json
import sqlite3

import pydicom
import pytest

from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.testing.generator import generate_study, make_patient, study_phi_values
from dicomd.mappings import MappingStore
from tests.conftest import send, wait_for, write_config

PROJECTS = """
[projects.study]
auto_archive = 4
overwrite = "append"

[projects.study.anonymize]
enabled = true
profile = "basic"
options = ["retain_long_modified_dates"]
"""


@pytest.fixture
def anon_daemon(make_daemon, tmp_path):
    return make_daemon(write_config(tmp_path, projects=PROJECTS))


def archived_sessions(daemon):
    return daemon.stores.catalog.sessions(ARCHIVE)


def test_archived_data_has_no_planted_phi(anon_daemon):
    daemon = anon_daemon
    patient = make_patient(41)
    study = generate_study(41, patient=patient, series=2, instances_per_series=3, study_description="study")
    planted = study_phi_values(study)
    originals = {ds.SOPInstanceUID: ds for ds in study}
    assert send(daemon.dicom_port(), study) == [0] * 6
    session = wait_for(lambda: archived_sessions(daemon))[0]
    wait_for(lambda: not daemon.stores.catalog.sessions(PREARCHIVE))
    files = list((daemon.stores.layout.root / session.relative_dir).rglob("*.dcm"))
    assert len(files) == 6
    study_uids = set()
    for path in files:
        raw = path.read_bytes()
        for value in planted:
            assert value.encode() not in raw, f"planted value {value!r} survived in {path.name}"
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert "DeidentificationMethodCodeSequence" in ds
        assert ds.SOPInstanceUID not in originals
        study_uids.add(ds.StudyInstanceUID)
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert len(study_uids) == 1 and study[0].StudyInstanceUID not in study_uids
    # pixel data byte-for-byte
    pixels = sorted(pydicom.dcmread(p).PixelData for p in files)
    assert pixels == sorted(ds.PixelData for ds in study)
    # nothing identifying in the catalog rows of archived data, nor in the archive paths
    conn = sqlite3.connect(daemon.stores.layout.catalog)
    dump = "\n".join(conn.iterdump())
    archived_rows = conn.execute(
        "SELECT * FROM sessions WHERE stage='archive'").fetchall() + conn.execute(
        "SELECT i.* FROM instances i JOIN sessions s ON s.id = i.session_id WHERE s.stage='archive'").fetchall()
    conn.close()
    text = json.dumps(archived_rows, default=str)
    for value in planted:
        assert value not in text
        assert value not in session.relative_dir
    assert "PS3.15-basic" in session.anonymization
    assert study[0].StudyInstanceUID not in text and dump  # the identified study UID is gone from archive rows
    # the identified prearchive copy is gone
    assert not any(daemon.stores.layout.prearchive.rglob("*.dcm"))


def test_same_patient_two_studies_same_pseudonym(anon_daemon):
    daemon = anon_daemon
    patient = make_patient(77)
    first = generate_study(771, patient=patient, series=1, instances_per_series=1, study_description="study",
                           study_date="20240101", study_comments="Session: V1")
    second = generate_study(772, patient=patient, series=1, instances_per_series=1, study_description="study",
                            study_date="20240108", study_comments="Session: V2")
    send(daemon.dicom_port(), first)
    wait_for(lambda: len(archived_sessions(daemon)) == 1)
    send(daemon.dicom_port(), second)
    rows = wait_for(lambda: len(archived_sessions(daemon)) == 2 and archived_sessions(daemon))
    assert rows[0].subject == rows[1].subject
    assert patient.name.split("^")[0] not in rows[0].subject
    dates = sorted(
        pydicom.dcmread(next((daemon.stores.layout.root / r.relative_dir).rglob("*.dcm"))).StudyDate for r in rows
    )
    import datetime as dt

    d0, d1 = (dt.datetime.strptime(d, "%Y%m%d") for d in dates)
    assert (d1 - d0).days == 7
    assert dates[0] != "20240101"


def test_mapped_fields_are_extracted_and_queryable(anon_daemon, tmp_path):
    from click.testing import CliRunner

    from dicomd.cli import main

    daemon = anon_daemon
    store = MappingStore(daemon.stores.catalog)
    store.upsert({"scope": "project", "scopeObjectId": "study", "fieldName": "modality", "fieldType": "string",
                  "dicomTag": "0x00080060"})
    store.upsert({"scope": "site", "fieldName": "series", "fieldType": "integer", "dicomTag": "(0020,0011)",
                  "level": "scan"})
    store.upsert({"scope": "site", "fieldName": "bogus", "fieldType": "date", "dicomTag": "0x00080060"})
    send(daemon.dicom_port(), generate_study(88, series=2, instances_per_series=1, study_description="study"))
    session = wait_for(lambda: archived_sessions(daemon))[0]
    assert session.custom_fields() == {"modality": "MR", "bogus": None}
    scans = daemon.stores.catalog.scans(session.id)
    assert sorted(json.loads(s["custom"])["series"] for s in scans) == [1, 2]
    warnings = daemon.stores.catalog.events(kinds=["mapping_warning"])
    assert warnings and warnings[0]["detail"]["field"] == "bogus"
    config = str(tmp_path / "dicomd.toml")
    out = CliRunner().invoke(main, ["archive", "list", "--config", config, "--where", "modality=MR", "--json"])
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.output)) == 1
    out = CliRunner().invoke(main, ["archive", "list", "--config", config, "--where", "modality=CT", "--json"])
    assert json.loads(out.output) == []


def test_burned_in_session_is_held_for_review(anon_daemon):
    daemon = anon_daemon
    study = generate_study(55, series=1, instances_per_series=2, study_description="study")
    for ds in study:
        ds.BurnedInAnnotation = "YES"
    send(daemon.dicom_port(), study)
    row = wait_for(lambda: daemon.stores.catalog.sessions(PREARCHIVE, status="REVIEW"))[0]
    assert "BurnedInAnnotation" in row.reason
    assert not archived_sessions(daemon)
    result = daemon.stores.archiver.archive(row.id, force_review=True)
    assert result.instances == 2


def test_site_script_runs_at_ingest(make_daemon, tmp_path):
    script = tmp_path / "site.das"
    script.write_text('version "6.1"\nproject != "Unassigned" ? (0008,1030) := project\n'
                      '(0010,0010) := subject\n(0010,0020) := session\n')
    daemon = make_daemon(write_config(tmp_path, f'[anonymize]\nsite_script = "{script}"\n', projects=PROJECTS.replace(
        "auto_archive = 4", "auto_archive = 0")))
    study = generate_study(66, series=1, instances_per_series=1,
                           study_comments="Project: study Subject: SUBJ1 Session: SESS1")
    send(daemon.dicom_port(), study)
    row = wait_for(lambda: daemon.stores.catalog.sessions(PREARCHIVE, status="READY"))[0]
    inst = daemon.stores.catalog.instances(row.id)[0]
    ds = pydicom.dcmread(daemon.stores.layout.root / inst.path)
    assert (str(ds.PatientName), ds.PatientID, ds.StudyDescription) == ("SUBJ1", "SESS1", "study")


def test_after_archive_no_catalog_table_holds_the_originals(anon_daemon):
    """sessions, scans, instances, archive jobs and their plans, history, events: no original UID,
    no planted identifier, no sender AE title or address; keys/ stays the only crosswalk."""
    daemon = anon_daemon
    study = generate_study(43, series=2, instances_per_series=2, study_description="study")
    planted = study_phi_values(study)
    originals = {ds.SOPInstanceUID for ds in study} | {ds.SeriesInstanceUID for ds in study}
    originals |= {study[0].StudyInstanceUID}
    assert send(daemon.dicom_port(), study, ae_title="CTSCANNER7") == [0] * 4
    wait_for(lambda: archived_sessions(daemon) and not daemon.stores.catalog.sessions(PREARCHIVE))
    wait_for(lambda: not daemon.stores.catalog.archive_jobs(["staging", "moving", "done"]))
    conn = sqlite3.connect(daemon.stores.layout.catalog)
    dump = "\n".join(line for line in conn.iterdump() if "INSERT INTO" in line)
    conn.close()
    for value in planted | originals | {"CTSCANNER7", "127.0.0.1"}:
        assert value not in dump, f"{value!r} is still in the catalog"
