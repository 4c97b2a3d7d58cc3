"""Clean Pixel Data keeps the archive job crash-safe: the rewrite happens in the staging step, so a
kill while staging leaves the prearchive files as they were, and a kill after the plan rolls
forward with the redacted files and the rules' names on the archive row."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.config import load
from dicomd.ingest import Source
from dicomd.stores import Stores
from dicomd.testing.generator import generate_study
from tests.conftest import write_config
from tests.pixels.images import HEADER, make_instance, write
from tests.pixels.test_archive_pixels import NO_OCR, PROJECTS, rule


def archive_killed_at(config, url: str, point: str) -> int:
    env = {**os.environ, "DICOMD_CRASHPOINT": point}
    done = subprocess.run([sys.executable, "-m", "dicomd", "prearchive", "archive", url, "--config", str(config)],
                          env=env, capture_output=True, timeout=120)
    return done.returncode


@pytest.mark.slow
def test_a_kill_while_staging_rolls_back_and_a_kill_after_the_plan_rolls_forward_redacted(tmp_path):
    config = write_config(tmp_path, NO_OCR + rule(), projects=PROJECTS.replace("auto_archive = 4", "auto_archive = 0"))
    stores = Stores.open(load(config))
    base = generate_study(9, series=1, instances_per_series=1, study_comments="Project: us")[0]
    for n in (1, 2):
        path = write(make_instance("US", seed=9, base=base, number=n), tmp_path / "in" / f"{n}.dcm")
        stores.ingest.stage(path, Source(kind="TEST"), move=True)
    session = stores.prearchive.build(stores.catalog.sessions(PREARCHIVE)[0].id)
    staged = {i.path: (stores.layout.root / i.path).read_bytes() for i in stores.catalog.instances(session.id)}
    stores.close()
    # a kill while staging (after the first redacted file is written): rolled back, the prearchive untouched
    assert archive_killed_at(config, session.url, "archive.staging") == -9
    stores = Stores.open(load(config))
    try:
        assert any("rolled back" in line for line in stores.archiver.recover())
        assert {p: (stores.layout.root / p).read_bytes() for p in staged} == staged
        assert not list(stores.layout.work.iterdir())
        stores.prearchive.build(session.id)
    finally:
        stores.close()
    # a kill after the plan is recorded: rolled forward, with the redacted files and the rule named
    assert archive_killed_at(config, session.url, "archive.planned") == -9
    stores = Stores.open(load(config))
    try:
        assert any("finished" in line for line in stores.archiver.recover())
        (archived,) = stores.catalog.sessions(ARCHIVE)
        assert archived.anonymization.endswith(";clean-pixels:acme-sono5")
        files = sorted((stores.layout.root / archived.relative_dir).rglob("*.dcm"))
        assert len(files) == 2 and not stores.catalog.sessions(PREARCHIVE)
        x, y, w, h = HEADER
        for path in files:
            ds = pydicom.dcmread(path)
            assert ds.BurnedInAnnotation == "NO" and not np.asarray(ds.pixel_array)[y:y + h, x:x + w].any()
    finally:
        stores.close()
