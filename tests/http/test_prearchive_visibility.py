"""In a de-identified project the prearchive holds identified data: owners and members see it,
collaborators (who read the archive) get 403 on listings, zip downloads, dicomdump and sessions."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
from fastapi.testclient import TestClient

from dicomd.auth import Auth
from dicomd.catalog import ARCHIVE
from dicomd.config import load
from dicomd.http.app import create_app
from dicomd.ingest import Source
from dicomd.routing import Explicit
from dicomd.stores import Stores
from dicomd.testing.generator import generate_study, write_study
from tests.conftest import write_config
from tests.http.conftest import PASSWORD

PROJECTS = """
[projects.study]
[projects.study.anonymize]
enabled = true

[projects.open]
"""


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[tuple[Stores, dict[str, TestClient], dict[str, str]]]:
    stores = Stores.open(load(write_config(tmp_path, projects=PROJECTS)))
    auth = Auth(stores.catalog)
    for name in ("owner", "member", "collab"):
        auth.add_user(name, PASSWORD)
        for project in ("study", "open"):
            auth.set_role(name, project, {"collab": "collaborator"}.get(name, name))
    uris = {}
    for seed, project in ((71, "study"), (72, "open")):
        files = write_study(generate_study(seed, series=1, instances_per_series=1), tmp_path / project)
        staged = stores.ingest.stage(files[0], Source("CLI", explicit=Explicit(project=project)))
        uris[project] = "/data" + staged.session.url
    app = create_app(stores.config, stores)
    made = {}
    for name in ("owner", "member", "collab"):
        client = TestClient(app)
        client.auth = (name, PASSWORD)
        made[name] = client
    yield stores, made, uris
    stores.close()


def test_collaborators_do_not_see_the_identified_prearchive(clients) -> None:  # type: ignore[no-untyped-def]
    stores, users, uris = clients
    collab = users["collab"]
    uri = uris["study"]
    for path in ("/data/prearchive/projects/study?format=json", f"{uri}?format=json", f"{uri}?format=zip",
                 f"/data/services/dicomdump?src={uri}&format=json", f"{uri}/scans?format=json"):
        assert collab.get(path).status_code == 403, path
    listed = collab.get("/data/prearchive?format=json").json()["ResultSet"]["Result"]
    assert [row["project"] for row in listed] == ["open"]
    # members and owners see it, and collaborators still read a project without de-identification
    for name in ("member", "owner"):
        assert users[name].get(f"{uri}?format=json").status_code == 200
        assert users[name].get(f"/data/services/dicomdump?src={uri}&format=json").status_code == 200
    assert collab.get(f"{uris['open']}?format=json").status_code == 200
    # and once archived (de-identified), collaborators read it in the archive
    assert users["owner"].post("/data/services/archive", params={"src": uri}).status_code == 200
    archived = stores.catalog.sessions(ARCHIVE, projects=["study"])[0]
    reply = collab.get(f"/data/projects/study/experiments?format=json")
    assert reply.status_code == 200 and archived.label in reply.text
