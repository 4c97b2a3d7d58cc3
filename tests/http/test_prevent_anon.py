"""`prevent_anon` skips only the site script at ingest: it never switches off the project's profile."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pydicom
import pytest
from fastapi.testclient import TestClient

from dicomd.auth import Auth
from dicomd.catalog import ARCHIVE
from dicomd.config import load
from dicomd.testing.generator import generate_study, study_phi_values, write_study
from dicomd.http.app import create_app
from dicomd.stores import Stores
from tests.conftest import write_config
from tests.http.conftest import PASSWORD, zip_bytes

PROJECTS = """
[projects.study]
[projects.study.anonymize]
enabled = true
profile = "basic"
options = ["retain_long_modified_dates"]
"""


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    script = tmp_path / "site.das"
    script.write_text('version "6.3"\n(0008,1030) := "site script ran"\n')
    stores = Stores.open(load(write_config(tmp_path, f'[anonymize]\nsite_script = "{script}"\n', projects=PROJECTS)))
    auth = Auth(stores.catalog)
    for name, role in (("member", "member"), ("owner", "owner")):
        auth.add_user(name, PASSWORD)
        auth.set_role(name, "study", role)
    yield stores
    stores.close()


def test_member_upload_with_prevent_anon_is_still_deidentified_at_archive(stores: Stores, tmp_path: Path) -> None:
    # Given a member who uploads identified data with prevent_anon=true
    study = generate_study(61, series=1, instances_per_series=2)
    planted = study_phi_values(study)
    body = zip_bytes(write_study(study, tmp_path / "study"))
    with TestClient(create_app(stores.config, stores)) as client:
        client.auth = ("member", PASSWORD)
        reply = client.post("/data/services/import", params={"project": "study", "prevent_anon": "true"},
                            content=body, headers={"Content-Type": "application/zip"})
        assert reply.status_code == 200, reply.text
        client.auth = ("owner", PASSWORD)
        # When the owner archives it
        src = reply.text.strip().splitlines()[0]
        assert client.post("/data/services/archive", params={"src": src}).status_code == 200
    # Then the site script was skipped (as asked) but the project's profile ran
    session = stores.catalog.sessions(ARCHIVE)[0]
    files = list((stores.layout.root / session.relative_dir).rglob("*.dcm"))
    assert len(files) == 2
    for path in files:
        raw = path.read_bytes()
        for value in planted:
            assert value.encode() not in raw, f"{value!r} survived prevent_anon"
        ds = pydicom.dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.get("StudyDescription", "") != "site script ran"
