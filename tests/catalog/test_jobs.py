"""Archive jobs as typed rows: PlanItem and ArchiveJob through plan_archive/job(), and plans
written in the JSON format of earlier releases."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from dicomd.catalog import ArchiveJob, Catalog, NewInstance, PlanItem
from dicomd.config import load
from dicomd.stores import Stores
from dicomd.errors import NotFound
from dicomd.testing.generator import generate_study, write_study
from dicomd.ingest import Source
from dicomd.lifecycle import JobState, Stage, Status
from tests.conftest import write_config

# One plan entry exactly as dicomd.archive wrote it before PlanItem existed (a dict, json.dumps'd).
TODAYS_ITEM = {
    "work": "/data/work/job-1/SCANS/1/DICOM/1.2.3.dcm",
    "final": "archive/demo/P1/S1/SCANS/1/DICOM/1.2.3.dcm",
    "prearchive": "prearchive/demo/20240101_120000000/S1/SCANS/1/DICOM/1.2.3.dcm",
    "received_at": 1700000000.25,
    "source": "DICOM SCANNER@127.0.0.1",
    "scan_id": "1", "sop_instance_uid": "1.2.3", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.4",
    "series_instance_uid": "1.2.3.4", "series_number": "1", "series_description": "T1", "modality": "MR",
    "study_date": "20240101", "study_time": "120000", "transfer_syntax": "1.2.840.10008.1.2.1",
    "size": 1234, "sha256": "ab" * 32,
}


def prearchive_session(catalog: Catalog) -> int:
    return catalog.open_prearchive_session(
        project="demo", subject="P1", label="S1", study_uid="2.25.1", subject_from="", session_from="",
        source="test", auto_archive=None, prevent_anon=False,
    ).id


def test_plan_item_reads_todays_json_and_writes_the_same_keys() -> None:
    item = PlanItem.from_json(json.loads(json.dumps(TODAYS_ITEM)))
    assert item.final == TODAYS_ITEM["final"] and item.size == 1234 and item.received_at == 1700000000.25
    assert item.to_json() == TODAYS_ITEM
    assert list(item.to_json()) == list(TODAYS_ITEM)  # same keys, same order


def test_plan_item_becomes_the_archived_instance_row() -> None:
    archived = PlanItem.from_json(TODAYS_ITEM).archived_instance()
    assert archived == NewInstance(**{**{k: TODAYS_ITEM[k] for k in (f.name for f in dataclasses.fields(NewInstance))
                                         if k != "path"}, "path": TODAYS_ITEM["final"]})


def test_archive_job_round_trips_through_plan_archive(catalog: Catalog) -> None:
    # Given a job taken for a session, and a two-file plan
    session_id = prearchive_session(catalog)
    job_id = catalog.begin_archive(session_id, overwrite="append", actor="t", work_dir="")
    staged = catalog.job(job_id)
    assert staged.state == JobState.STAGING and staged.plan == () and staged.session_id == session_id
    plan = (PlanItem.from_json(TODAYS_ITEM),
            dataclasses.replace(PlanItem.from_json(TODAYS_ITEM), sop_instance_uid="1.2.4", final="archive/x.dcm"))
    # When the plan is recorded
    catalog.plan_archive(job_id, "P1", "S1", plan, study_uid="2.25.9", fingerprint="fp")
    # Then job() gives it back, typed
    job = catalog.job(job_id)
    assert isinstance(job, ArchiveJob)
    assert job.state == JobState.MOVING and job.plan == plan
    assert (job.subject, job.label, job.study_uid, job.fingerprint) == ("P1", "S1", "2.25.9", "fp")
    assert job.overwrite == "append"
    assert not job.replaces_archived
    assert [j.id for j in catalog.archive_jobs([JobState.MOVING])] == [job_id]
    assert catalog.archive_jobs([JobState.STAGING, JobState.DONE]) == []
    # And the column holds the same JSON shape as before
    stored = catalog.reader().execute("SELECT plan FROM archive_jobs WHERE id=?", (job_id,)).fetchone()[0]
    assert json.loads(stored)[0] == TODAYS_ITEM


def test_a_missing_job_is_not_found(catalog: Catalog) -> None:
    with pytest.raises(NotFound):
        catalog.job(12345)


@pytest.mark.both_backends
def test_a_job_planned_before_the_upgrade_rolls_forward(tmp_path: Path) -> None:
    # Given a session staged for archiving whose plan was recorded in the old format (dicts)
    stores = Stores.open(load(write_config(tmp_path)))
    files = write_study(generate_study(7, series=1, instances_per_series=3, study_description="demo"), tmp_path / "in")
    for f in files:
        stores.ingest.stage(f, Source(kind="TEST"), move=True)
    session = stores.prearchive.build(stores.catalog.sessions(Stage.PREARCHIVE)[0].id)
    assert session is not None
    job_id = stores.catalog.begin_archive(session.id, overwrite="none", actor="t", work_dir="")
    plan, subject, label, study_uid, _fp = stores.archiver._stage(
        session, "none", stores.layout.work / f"job-{job_id}", False)
    old_format = json.dumps([{key: getattr(item, key) for key in TODAYS_ITEM} for item in plan])
    stores.catalog.write(lambda conn: conn.execute(
        "UPDATE archive_jobs SET state='moving', subject=?, label=?, plan=?, study_uid=?, fingerprint='' WHERE id=?",
        (subject, label, old_format, study_uid, job_id)))
    # When the daemon restarts (crash after the plan was recorded)
    config = stores.config
    stores.close()
    stores = Stores.open(config)
    try:
        done = stores.archiver.recover()
        # Then the job is finished from that plan
        assert any("finished" in line for line in done)
        archived = stores.catalog.sessions(Stage.ARCHIVE)
        assert len(archived) == 1 and archived[0].instances == 3 and archived[0].status == Status.ARCHIVED
        assert stores.catalog.job(job_id).state == JobState.CLEAN
        assert not stores.catalog.sessions(Stage.PREARCHIVE)
    finally:
        stores.close()
