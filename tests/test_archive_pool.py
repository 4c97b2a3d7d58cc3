"""Archive jobs spread over worker processes (`[archive] workers`): the same archived bytes as
the job's own process writes, a worker that dies fails the job cleanly (the next job works), and
the CLI's archive path uses the pool too."""

from __future__ import annotations

import io
import json
import multiprocessing
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner

from dicomd.anonymize.parallel import MIN_PARALLEL_INSTANCES, chunks_of
from dicomd.anonymize.pseudonyms import PseudonymStore
from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.cli import main
from dicomd.config import load
from dicomd.crashpoints import CRASHPOINT_ENV
from dicomd.errors import HeldForReview, StorageFailure
from dicomd.ingest import Source
from dicomd.lifecycle import JobState
from dicomd.stores import Stores
from dicomd.testing.generator import generate_study, write_study
from tests.conftest import write_config
from tests.pixels.images import make_instance, write

PROJECTS = """
[projects.anon]
auto_archive = 0

[projects.anon.anonymize]
enabled = true
profile = "basic"
options = ["retain_long_modified_dates"]
"""
KEY = {"project": "anon", "key": "a7" * 32, "created": "2026-12-02T00:00:00+00:00", "derivation": 2}
SERIES, PER_SERIES = 2, 10  # 20 instances: enough for the pool
assert SERIES * PER_SERIES >= MIN_PARALLEL_INSTANCES


def open_stores(tmp: Path, workers: int) -> Stores:
    tmp.mkdir(parents=True, exist_ok=True)
    config = load(write_config(tmp, f"[archive]\nworkers = {workers}\n", projects=PROJECTS))
    stores = Stores.open(config)
    PseudonymStore(stores.layout.pseudonyms).import_keys([KEY])  # the same pseudonyms in every store
    return stores


def stage(stores: Stores, tmp: Path, seed: int = 5) -> int:
    study = generate_study(seed, series=SERIES, instances_per_series=PER_SERIES, study_description="anon")
    for f in write_study(study, tmp / f"in-{seed}"):
        stores.ingest.stage(f, Source(kind="TEST", fixed_project="anon"), move=True)
    session = stores.catalog.sessions(PREARCHIVE)[0]
    return stores.prearchive.build(session.id).id


def archived_files(stores: Stores) -> dict[str, bytes]:
    root = stores.layout.archive
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.dcm"))}


@pytest.mark.parametrize("count", [1, MIN_PARALLEL_INSTANCES, 50, 51, 1000, 10_000])
def test_chunks_keep_the_order_and_differ_by_one_instance_at_most(count):
    items = [(Path(f"{n}.dcm"), n) for n in range(count)]
    chunks = chunks_of(items, 2)  # type: ignore[arg-type]
    assert [inst for chunk in chunks for _, inst in chunk] == list(range(count))
    sizes = [len(chunk) for chunk in chunks]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True) and max(sizes) <= 64
    assert len(chunks) == min(count, max(8, -(-count // 64)))


def test_start_returns_once_every_worker_answers(tmp_path):
    stores = open_stores(tmp_path, 2)
    try:
        pool = stores.hooks.anonymizers.pool
        pool.start()
        workers = {p.pid for p in multiprocessing.active_children() if p.name.startswith("SpawnProcess")}
        assert len(pool.answered) == 2 and pool.answered <= workers  # not one ready worker answering twice
    finally:
        stores.close()


def test_workers_write_the_same_bytes_as_the_jobs_own_process(tmp_path):
    results = {}
    for workers in (1, 2):
        stores = open_stores(tmp_path / f"w{workers}", workers)
        try:
            session = stage(stores, tmp_path / f"w{workers}")
            assert stores.archiver.archive(session).instances == SERIES * PER_SERIES
            assert stores.hooks.anonymizers.pool.started == (workers > 1)
            results[workers] = archived_files(stores)
        finally:
            stores.close()
    assert len(results[1]) == SERIES * PER_SERIES
    assert results[1] == results[2]  # same paths (pseudonymized labels, new UIDs) and same bytes


def test_a_worker_killed_mid_job_fails_the_job_and_the_next_job_works(tmp_path, monkeypatch):
    stores = open_stores(tmp_path, 2)
    try:
        session = stage(stores, tmp_path)
        originals = sorted(p.name for p in stores.layout.prearchive.rglob("*.dcm"))
        monkeypatch.setenv(CRASHPOINT_ENV, "archive.worker")  # the pool's workers start with it: SIGKILL
        with pytest.raises(StorageFailure, match="worker process ended"):
            stores.archiver.archive(session)
        monkeypatch.delenv(CRASHPOINT_ENV)
        row = stores.catalog.session(session)
        assert row.status == "ERROR" and "worker" in row.reason
        assert sorted(p.name for p in stores.layout.prearchive.rglob("*.dcm")) == originals
        assert not list(stores.layout.work.iterdir())  # the work folder went with the rollback
        assert not stores.catalog.archive_jobs([JobState.STAGING, JobState.MOVING])
        assert stores.archiver.recover() == []  # nothing half-done for a restart to find
        assert not stores.catalog.sessions(ARCHIVE)
        # the broken pool was dropped: the next job starts a new one and archives everything
        assert stores.archiver.archive(session).instances == SERIES * PER_SERIES
        assert len(archived_files(stores)) == SERIES * PER_SERIES
        assert not stores.catalog.sessions(PREARCHIVE)
    finally:
        stores.close()


def test_the_cli_archive_command_uses_the_pool(tmp_path):
    stores = open_stores(tmp_path, 2)
    try:
        session = stores.catalog.session(stage(stores, tmp_path))
    finally:
        stores.close()
    config = tmp_path / "dicomd.toml"
    result = CliRunner().invoke(main, ["prearchive", "archive", session.label, "--config", str(config), "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["instances"] == SERIES * PER_SERIES
    stores = Stores.open(load(config))
    try:
        assert len(archived_files(stores)) == SERIES * PER_SERIES
    finally:
        stores.close()


US_RULE = """
[ocr]
enabled = false

[[pixel_rules]]
name = "acme-sono5"
rectangles = [[0, 0, 320, 40]]
[pixel_rules.match]
Manufacturer = "ACME*"
"""
US_INSTANCES = MIN_PARALLEL_INSTANCES + 2


def stage_ultrasound(stores: Stores, tmp: Path) -> int:
    base = generate_study(9, series=1, instances_per_series=1, study_description="anon")[0]
    for n in range(US_INSTANCES):
        write(make_instance("US", seed=9, base=base, number=n + 1), tmp / "us" / f"{n}.dcm")
        stores.ingest.stage(tmp / "us" / f"{n}.dcm", Source(kind="TEST", fixed_project="anon"), move=True)
    return stores.prearchive.build(stores.catalog.sessions(PREARCHIVE)[0].id).id


def test_the_pool_runs_the_pixel_rules_and_holds_what_no_rule_cleans(tmp_path):
    # Given an ultrasound session large enough for the pool, with text burned into its pixels
    results = {}
    for workers in (1, 2):
        tmp = tmp_path / f"w{workers}"
        tmp.mkdir()
        config = load(write_config(tmp, f"[archive]\nworkers = {workers}\n" + US_RULE, projects=PROJECTS))
        stores = Stores.open(config)
        try:
            PseudonymStore(stores.layout.pseudonyms).import_keys([KEY])
            session = stage_ultrasound(stores, tmp)
            # When it is archived with the rule configured
            assert stores.archiver.archive(session).instances == US_INSTANCES
            assert stores.hooks.anonymizers.pool.started == (workers > 1)
            # Then every instance was cleaned by the rule, whichever process wrote it
            (event,) = stores.catalog.events(kinds=["pixels"])
            assert event["detail"]["redacted"] == {"acme-sono5": US_INSTANCES}
            assert "clean-pixels:acme-sono5" in stores.catalog.sessions(ARCHIVE)[0].anonymization
            results[workers] = archived_files(stores)
        finally:
            stores.close()
    assert results[1] == results[2]
    for data in results[2].values():
        ds = pydicom.dcmread(io.BytesIO(data))
        assert not ds.pixel_array[0:40, :].any() and ds.pixel_array[40:, :].any()
    # And without a rule, the pool's workers report the burned-in reason: the session is held
    tmp = tmp_path / "norule"
    tmp.mkdir()
    stores = Stores.open(load(write_config(tmp, "[archive]\nworkers = 2\n[ocr]\nenabled = false\n",
                                           projects=PROJECTS)))
    try:
        session = stage_ultrasound(stores, tmp)
        with pytest.raises(HeldForReview, match="modality US"):
            stores.archiver.archive(session)
        assert stores.hooks.anonymizers.pool.started
        assert stores.catalog.session(session).status == "REVIEW" and not stores.catalog.sessions(ARCHIVE)
    finally:
        stores.close()
