"""The daemon end to end: real SCP on loopback, real catalog file, pynetdicom SCUs."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pydicom
import pytest

from dicomd.catalog import ARCHIVE, PREARCHIVE, Catalog
from dicomd.testing.generator import generate_study, make_patient
from tests.conftest import send, wait_for, write_config

pytestmark = pytest.mark.both_engines


def prearchive_rows(daemon, status=None):
    return daemon.stores.catalog.sessions(PREARCHIVE, status=status)


def assert_catalog_matches_disk(daemon) -> None:
    """Every instance row has its file with the recorded size and hash; every file has a row."""
    stores = daemon.stores
    rows = {}
    for stage in (PREARCHIVE, ARCHIVE):
        for session in stores.catalog.sessions(stage):
            for inst in stores.catalog.instances(session.id):
                rows[inst.path] = inst
    files = {  # os.walk: folders a finishing archive job removes meanwhile are simply skipped
        str((Path(folder) / name).relative_to(stores.layout.root))
        for top in (stores.layout.prearchive, stores.layout.archive)
        for folder, _dirs, names in os.walk(top)
        for name in names
        if name.endswith(".dcm")
    }
    assert files == set(rows)
    for rel, inst in rows.items():
        data = (stores.layout.root / rel).read_bytes()
        assert len(data) == inst.size
        assert hashlib.sha256(data).hexdigest() == inst.sha256


def test_three_series_over_two_associations_make_one_session(daemon):
    study = generate_study(7, series=3, instances_per_series=4, study_description="demo")
    halves = [study[0::2], study[1::2]]
    results: list[list[int]] = [[], []]

    def sender(i: int) -> None:
        results[i] = send(daemon.dicom_port(), halves[i], ae_title=f"SCANNER{i}")

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results[0] + results[1] == [0] * 12

    ready = wait_for(lambda: prearchive_rows(daemon, "READY"))
    assert len(prearchive_rows(daemon)) == 1
    session = ready[0]
    assert (session.project, session.scans, session.instances) == ("demo", 3, 12)
    assert session.modalities == "MR"
    scans = daemon.stores.catalog.scans(session.id)
    assert [s["instances"] for s in scans] == [4, 4, 4]
    assert [s["scan_id"] for s in scans] == ["1", "2", "3"]
    history = [h["status"] for h in daemon.stores.catalog.history(session.id)]
    assert history[0] == "RECEIVING" and history[-2:] == ["BUILDING", "READY"]
    folder = daemon.stores.layout.root / session.relative_dir
    assert sorted(p.name for p in (folder / "SCANS").iterdir()) == ["1", "2", "3"]
    assert_catalog_matches_disk(daemon)


def test_files_are_stored_as_received(daemon):
    study = generate_study(3, series=1, instances_per_series=2, study_description="demo")
    send(daemon.dicom_port(), study)
    wait_for(lambda: prearchive_rows(daemon, "READY"))
    inst = daemon.stores.catalog.instances(prearchive_rows(daemon)[0].id)[0]
    stored = pydicom.dcmread(daemon.stores.layout.root / inst.path)
    original = next(ds for ds in study if ds.SOPInstanceUID == inst.sop_instance_uid)
    assert stored.PixelData == original.PixelData
    assert stored.PatientName == original.PatientName
    assert stored.file_meta.TransferSyntaxUID == inst.transfer_syntax


def test_resend_is_idempotent(daemon):
    study = generate_study(11, series=2, instances_per_series=3, study_description="demo")
    assert send(daemon.dicom_port(), study) == [0] * 6
    wait_for(lambda: prearchive_rows(daemon, "READY"))
    assert send(daemon.dicom_port(), study) == [0] * 6
    wait_for(lambda: prearchive_rows(daemon, "READY"))
    rows = prearchive_rows(daemon)
    assert len(rows) == 1 and rows[0].instances == 6
    assert_catalog_matches_disk(daemon)


def test_auto_archive_moves_session_to_archive(daemon):
    study = generate_study(5, series=2, instances_per_series=2, study_description="auto")
    send(daemon.dicom_port(), study)
    archived = wait_for(lambda: daemon.stores.catalog.sessions(ARCHIVE))
    assert archived[0].instances == 4 and archived[0].scans == 2
    # the catalog commit comes first, the prearchive files go in the clean-up right after it
    wait_for(lambda: not prearchive_rows(daemon) and not any(daemon.stores.layout.prearchive.rglob("*.dcm")))
    folder = daemon.stores.layout.root / archived[0].relative_dir
    assert len(list(folder.rglob("*.dcm"))) == 4
    assert_catalog_matches_disk(daemon)
    # a re-send of the same study after archiving: identical data is merged, never duplicated
    send(daemon.dicom_port(), study)
    wait_for(lambda: not prearchive_rows(daemon) and daemon.stores.catalog.sessions(ARCHIVE)[0].instances == 4)
    wait_for(lambda: not any(n.endswith(".dcm") for _d, _s, names in os.walk(daemon.stores.layout.prearchive)
                             for n in names))
    assert len(daemon.stores.catalog.sessions(ARCHIVE)) == 1
    assert_catalog_matches_disk(daemon)


def test_late_instance_for_archived_study_is_appended_not_split(daemon):
    study = generate_study(21, series=2, instances_per_series=2, study_description="auto")
    send(daemon.dicom_port(), study[:3])
    wait_for(lambda: daemon.stores.catalog.sessions(ARCHIVE))
    send(daemon.dicom_port(), study[3:])
    wait_for(lambda: not prearchive_rows(daemon) and daemon.stores.catalog.sessions(ARCHIVE)[0].instances == 4)
    assert len(daemon.stores.catalog.sessions(ARCHIVE)) == 1


def test_late_data_for_review_project_is_a_visible_conflict(daemon):
    study = generate_study(22, series=1, instances_per_series=3, study_description="demo")
    send(daemon.dicom_port(), study[:2])
    session = wait_for(lambda: prearchive_rows(daemon, "READY"))[0]
    daemon.stores.archiver.archive(session.id, actor="test")
    send(daemon.dicom_port(), study[2:])
    conflict = wait_for(lambda: prearchive_rows(daemon, "CONFLICT"))[0]
    assert "late data" in conflict.reason
    result = daemon.stores.archiver.archive(conflict.id, overwrite="append", actor="test")
    assert result.instances == 1
    assert daemon.stores.catalog.sessions(ARCHIVE)[0].instances == 3


def test_archive_conflict_when_session_exists(make_daemon, tmp_path):
    # XNAT's plain Patient ID label: a second study of the patient lands on the first one's label
    config = write_config(tmp_path)
    config.write_text('session_label = "patient_id"\n' + config.read_text())
    daemon = make_daemon(config)
    patient = make_patient(3)
    first = generate_study(30, patient=patient, series=1, instances_per_series=2, study_description="demo")
    second = generate_study(31, patient=patient, series=1, instances_per_series=2, study_description="demo")
    send(daemon.dicom_port(), first)
    s1 = wait_for(lambda: prearchive_rows(daemon, "READY"))[0]
    daemon.stores.archiver.archive(s1.id)
    send(daemon.dicom_port(), second)
    s2 = wait_for(lambda: prearchive_rows(daemon, "READY"))[0]
    from dicomd.errors import Conflict

    with pytest.raises(Conflict):
        daemon.stores.archiver.archive(s2.id)
    assert daemon.stores.catalog.session(s2.id).status == "CONFLICT"
    with pytest.raises(Conflict, match="UID changed"):
        daemon.stores.archiver.archive(s2.id, overwrite="append")
    result = daemon.stores.archiver.archive(s2.id, overwrite="delete")
    assert result.instances == 2
    assert daemon.stores.catalog.sessions(ARCHIVE)[0].instances == 2
    assert_catalog_matches_disk(daemon)


def test_unknown_ae_is_refused(make_daemon, tmp_path):
    daemon = make_daemon(write_config(tmp_path, receiver='allowed = ["GOODSCU", "OTHER@127.0.0.0/8"]'))
    study = generate_study(2, series=1, instances_per_series=1)
    with pytest.raises(ConnectionRefusedError):
        send(daemon.dicom_port(), study, ae_title="EVIL")
    assert send(daemon.dicom_port(), study, ae_title="GOODSCU") == [0]
    assert send(daemon.dicom_port(), study, ae_title="OTHER") == [0]


def test_undecodable_instance_gets_c000_and_quarantine(daemon):
    study = generate_study(4, series=1, instances_per_series=2)
    del study[0].StudyInstanceUID
    statuses = send(daemon.dicom_port(), study)
    assert statuses == [0xC000, 0]
    entries = daemon.stores.catalog.quarantine()
    assert len(entries) == 1 and "Study Instance UID" in entries[0].reason
    held = daemon.stores.layout.root / entries[0].path
    assert held.exists() and (held.parent / "reason.txt").read_text().strip()


def test_routing_fallbacks_reach_unassigned_and_labels(daemon):
    study = generate_study(8, series=1, instances_per_series=1, study_description="no such project")
    send(daemon.dicom_port(), study)
    row = wait_for(lambda: prearchive_rows(daemon, "READY"))[0]
    assert row.project == "Unassigned"
    assert row.label == str(study[0].PatientID).replace(" ", "_") or row.session_from == "patient_id"
    from dicomd.errors import InvalidState

    with pytest.raises(InvalidState):
        daemon.stores.archiver.archive(row.id)
    moved = daemon.stores.prearchive.move(row.id, "demo", actor="test")
    assert moved.project == "demo" and moved.status == "READY"
    daemon.stores.archiver.archive(moved.id)
    assert_catalog_matches_disk(daemon)


def test_comment_assignments_route(daemon):
    study = generate_study(9, series=1, instances_per_series=2, study_comments="Project: DEMO Subject: S01 Session: V1")
    send(daemon.dicom_port(), study)
    row = wait_for(lambda: prearchive_rows(daemon, "READY"))[0]
    assert (row.project, row.subject, row.label) == ("demo", "S01", "V1")
    assert row.url.startswith("/prearchive/projects/demo/") and row.url.endswith("/V1")


def test_every_pydicom_test_file_is_staged_or_quarantined(daemon):
    from dicomd.errors import InvalidInput
    from dicomd.ingest import Source, quarantine

    stores = daemon.stores
    staged = refused = 0
    bundled = Path(pydicom.__file__).parent / "data" / "test_files"  # local files only, no downloads
    for path in sorted(bundled.rglob("*")):
        if not path.is_file() or path.suffix in (".py", ".json", ".gz", ".bz2", ".txt"):
            continue
        copy = stores.layout.tmp / f"t_{path.name}"
        copy.write_bytes(path.read_bytes())
        try:
            stores.ingest.stage(copy, Source(kind="TEST"), move=True)
            staged += 1
        except InvalidInput as exc:
            quarantine(stores.layout, stores.catalog, copy, Source(kind="TEST"), str(exc), move=True)
            refused += 1
    assert staged > 20 and refused > 0
    assert len(stores.catalog.quarantine()) == refused
    for entry in stores.catalog.quarantine():
        assert entry.reason
    wait_for(lambda: not prearchive_rows(daemon, "RECEIVING"), timeout=60)
    for session in prearchive_rows(daemon, "READY"):
        if session.project != "Unassigned":
            stores.archiver.archive(session.id, overwrite="append")
    assert_catalog_matches_disk(daemon)
    # the daemon still serves
    assert send(daemon.dicom_port(), generate_study(99, series=1, instances_per_series=1)) == [0]


def test_catalog_is_owner_only_and_readable_while_running(daemon):
    root = daemon.stores.layout.root
    assert (root.stat().st_mode & 0o777) == 0o700
    assert (daemon.stores.layout.catalog.stat().st_mode & 0o777) == 0o600
    send(daemon.dicom_port(), generate_study(12, series=1, instances_per_series=1, study_description="demo"))
    other = Catalog(daemon.stores.layout.catalog)  # a second connection, as the CLI would open
    try:
        wait_for(lambda: other.sessions(PREARCHIVE))
    finally:
        other.close()


def test_receiving_session_counts_scans_before_build(make_daemon, tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("session_idle_seconds = 0.5", "session_idle_seconds = 3600"))
    daemon = make_daemon(path)
    send(daemon.dicom_port(), generate_study(13, series=3, instances_per_series=2, study_description="demo"))
    row = prearchive_rows(daemon)[0]
    assert (row.status, row.scans, row.instances) == ("RECEIVING", 3, 6)
