"""Fuzz target for the zip importer: mutated and truncated archives either stage whole or fail with
InvalidInput (HostileArchive included), and a failure leaves nothing staged."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomd.bulk import stage_batch
from dicomd.catalog import PREARCHIVE
from dicomd.config import load
from dicomd.stores import Stores
from dicomd.errors import InvalidInput
from dicomd.testing.generator import generate_study, write_study
from dicomd.ingest import Source
from dicomd.routing import Explicit
from tests.conftest import write_config


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("zipfuzz")
    stores = Stores.open(load(write_config(tmp)))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in write_study(generate_study(9, series=1, instances_per_series=2, rows=8, cols=8), tmp / "s"):
            archive.write(path, f"study/{path.name}")
    yield stores, buf.getvalue(), tmp
    stores.close()


@given(data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_mutated_zips_stage_whole_or_fail_cleanly(fuzz_env, data) -> None:  # type: ignore[no-untyped-def]
    stores, original, tmp = fuzz_env
    blob = bytearray(original)
    for _ in range(data.draw(st.integers(0, 6))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    blob = blob[:cut] if data.draw(st.booleans()) else blob
    upload = tmp / "upload.zip"
    upload.write_bytes(bytes(blob))
    before = sum(r.instances for r in stores.catalog.sessions(PREARCHIVE))
    source = Source(kind="TEST", explicit=Explicit(project="demo", subject="S", session="FUZZ"))
    try:
        result = stage_batch(stores, upload, source)
    except InvalidInput:
        after = sum(r.instances for r in stores.catalog.sessions(PREARCHIVE))
        assert after == before  # all-or-nothing
        return
    assert result.staged + result.duplicates >= 1
