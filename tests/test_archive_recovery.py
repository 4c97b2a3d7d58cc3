"""Archive jobs interrupted at each recorded state are rolled back or finished on restart."""

from __future__ import annotations

import os

import pytest

from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.config import load
from dicomd.stores import Stores
from dicomd.testing.generator import generate_study, write_study
from dicomd.ingest import Source
from tests.conftest import write_config


@pytest.fixture
def stores(tmp_path):
    s = Stores.open(load(write_config(tmp_path)))
    yield s
    s.close()


def stage_study(stores, tmp_path, seed=1):
    files = write_study(generate_study(seed, series=2, instances_per_series=2, study_description="demo"),
                        tmp_path / f"in{seed}")
    for f in files:
        stores.ingest.stage(f, Source(kind="TEST"), move=True)
    session = stores.catalog.sessions(PREARCHIVE)[0]
    return stores.prearchive.build(session.id)


def reopen(stores):
    config = stores.config
    stores.close()
    return Stores.open(config)


@pytest.mark.both_backends
def test_crash_while_staging_rolls_back(stores, tmp_path):
    session = stage_study(stores, tmp_path)
    job = stores.catalog.begin_archive(session.id, overwrite="none", actor="t", work_dir="")
    work = stores.layout.work / f"job-{job}"
    work.mkdir(parents=True)
    (work / "partial.dcm").write_bytes(b"half")
    # -- crash here; restart --
    stores = reopen(stores)
    done = stores.archiver.recover()
    assert any("rolled back" in line for line in done)
    row = stores.catalog.session(session.id)
    # back to RECEIVING: the watcher rebuilds it and auto-archive (if any) resumes
    assert row.status == "RECEIVING" and row.instances == 4
    assert not work.exists()
    assert stores.archiver.archive(session.id).instances == 4
    stores.close()


@pytest.mark.both_backends
def test_crash_while_moving_rolls_forward(stores, tmp_path):
    session = stage_study(stores, tmp_path)
    archiver = stores.archiver
    job = stores.catalog.begin_archive(session.id, overwrite="none", actor="t", work_dir="")
    work = stores.layout.work / f"job-{job}"
    plan, subject, label, study_uid, _fp = archiver._stage(stores.catalog.session(session.id), "none", work, False)
    stores.catalog.plan_archive(job, subject, label, plan, study_uid=study_uid, fingerprint="test-fingerprint")
    # move half of the files, then crash
    first = plan[0]
    final = stores.layout.root / first.final
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(first.work, final)
    stores = reopen(stores)
    done = stores.archiver.recover()
    assert any("finished" in line for line in done)
    assert not stores.catalog.sessions(PREARCHIVE)
    archived = stores.catalog.sessions(ARCHIVE)
    assert len(archived) == 1 and archived[0].instances == 4
    assert archived[0].study_instance_uid == study_uid and archived[0].anonymization == "test-fingerprint"
    for inst in stores.catalog.instances(archived[0].id):
        assert (stores.layout.root / inst.path).exists()
    assert not any(stores.layout.prearchive.rglob("*.dcm"))
    assert stores.catalog.job(job).plan == ()  # purged once clean: the paths named identified prearchive files
    stores.close()


def test_two_archivers_one_wins(stores, tmp_path):
    from dicomd.errors import InvalidState

    session = stage_study(stores, tmp_path)
    stores.catalog.begin_archive(session.id, overwrite="none", actor="a", work_dir="")
    with pytest.raises(InvalidState):
        stores.catalog.begin_archive(session.id, overwrite="none", actor="b", work_dir="")


def test_rebuild_adopts_and_drops(stores, tmp_path):
    session = stage_study(stores, tmp_path)
    instances = stores.catalog.instances(session.id)
    (stores.layout.root / instances[0].path).unlink()
    extra = write_study(generate_study(1, series=3, instances_per_series=1, study_description="demo"), tmp_path / "x")[-1]
    target = stores.layout.root / session.relative_dir / "SCANS" / "3" / "DICOM" / "extra.dcm"
    target.parent.mkdir(parents=True)
    target.write_bytes(extra.read_bytes())
    findings = stores.prearchive.reconcile_session(stores.catalog.session(session.id), dry_run=True)
    assert len(findings) == 2 and stores.catalog.session(session.id).instances == 4
    row = stores.prearchive.rebuild(session.id)
    assert row.status == "READY" and row.instances == 4 and row.scans == 3


def test_session_folder_without_rows_is_adopted(stores, tmp_path):
    """After a power cut the last (non-fsync'd) ingest commits may be gone; the files are not."""
    session = stage_study(stores, tmp_path)
    stores.catalog.delete_session_rows(session.id, "simulate lost commits")
    assert not stores.catalog.sessions(PREARCHIVE)
    stores = reopen(stores)
    done = stores.prearchive.recover()
    assert any("adopted" in line for line in done)
    rows = stores.catalog.sessions(PREARCHIVE)
    assert len(rows) == 1 and rows[0].instances == 4 and rows[0].status == "RECEIVING"
    assert rows[0].relative_dir == session.relative_dir
    stores.close()
