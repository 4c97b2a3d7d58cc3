"""/xapi/processors: what runs for each project, in order; owners reorder the archive steps and switch
the mappings step; nobody turns de-identification off over the API; the archive step follows the order."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pydicom
import pytest
from fastapi.testclient import TestClient

from dicomd.auth import Auth
from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.config import load
from dicomd.http.app import create_app
from dicomd.mappings import MappingStore
from dicomd.stores import Stores
from tests.conftest import write_config
from tests.http.conftest import Site, add_users, stage

PROJECTS = """
[projects.demo]

[projects.anon]
[projects.anon.anonymize]
enabled = true
profile = "basic"
script = "anon.das"
"""
SCRIPT = 'version "6.3"\n(0008,1030) := "SCRIPTED"\n'


@pytest.fixture
def anon_site(tmp_path: Path) -> Iterator[Site]:
    (tmp_path / "anon.das").write_text(SCRIPT)
    config = load(write_config(tmp_path, projects=PROJECTS))
    stores = Stores.open(config)
    add_users(stores)
    auth = Auth(stores.catalog)
    for name, role in (("owner", "owner"), ("member", "member"), ("collab", "collaborator")):
        auth.set_role(name, "anon", role)
    with TestClient(create_app(config, stores)) as client:
        yield Site(stores, client, tmp_path)
    stores.close()


def ids(rows: list[dict]) -> list[str]:
    return [r["id"] for r in rows]


def archived_description(site: Site, seed: int) -> tuple[str | None, str]:
    stage(site, "anon", seed=seed, session=f"V{seed}")
    (session,) = site.stores.catalog.sessions(PREARCHIVE)
    site.stores.archiver.archive(session.id, overwrite="none")
    archived = sorted(site.stores.catalog.sessions(ARCHIVE), key=lambda s: s.id)[-1]
    first = site.stores.catalog.instances(archived.id)[0]
    ds = pydicom.dcmread(site.stores.layout.resolve(first.path))
    return ds.get("StudyDescription"), archived.anonymization


def test_what_runs_is_shown_in_order_to_readers(anon_site: Site) -> None:
    rows = anon_site.as_user("collab").get("/xapi/processors/projects/anon").json()
    assert ids(rows) == ["site_script", "mappings", "profile", "script"]
    assert [r["priority"] for r in rows] == [1, 2, 3, 4]
    by = {r["id"]: r for r in rows}
    assert by["profile"]["enabled"] and by["script"]["enabled"] and not by["profile"]["switchable"]
    assert by["profile"]["parameters"] == {"profile": "basic", "options": []}
    assert by["script"]["parameters"] == {"script": "anon.das"} and by["script"]["location"] == "archive"
    assert not by["site_script"]["enabled"] and not by["mappings"]["enabled"], "no site script, no mapping"
    assert anon_site.as_user("outsider").get("/xapi/processors/projects/anon").status_code == 403
    demo = {r["id"]: r for r in anon_site.as_user("admin").get("/xapi/processors/projects/demo").json()}
    assert not demo["profile"]["enabled"] and not demo["script"]["enabled"]


def test_nobody_turns_de_identification_off_over_the_api(anon_site: Site) -> None:
    for name in ("owner", "admin"):
        refused = anon_site.as_user(name).put("/xapi/processors/projects/anon",
                                              json=[{"id": "profile", "enabled": False}])
        assert refused.status_code == 403 and "only the config" in refused.text, refused.text
        refused = anon_site.as_user(name).put("/xapi/processors/projects/anon",
                                              json=[{"id": "script", "enabled": False}])
        assert refused.status_code == 403
    turned_on = anon_site.as_user("admin").put("/xapi/processors/projects/demo", json=[{"id": "profile", "enabled": True}])
    assert turned_on.status_code == 400 and "config" in turned_on.text
    for name in ("member", "collab", "outsider"):
        assert anon_site.as_user(name).put("/xapi/processors/projects/anon", json=["script", "profile"]
                                           ).status_code == 403, name
    moved = anon_site.as_user("owner").put("/xapi/processors/projects/anon", json=["profile", "script", "mappings"])
    assert moved.status_code == 400 and "location" in moved.text
    assert anon_site.as_user("owner").put("/xapi/processors/projects/anon", json=["nope"]).status_code == 400


def test_the_archive_step_runs_the_steps_in_the_order_shown(anon_site: Site) -> None:
    # Given the default order, the script runs after the profile: its Study Description stays
    description, fingerprint = archived_description(anon_site, seed=1)
    assert description == "SCRIPTED" and "order:" not in fingerprint
    # When the owner puts the script first
    owner = anon_site.as_user("owner")
    changed = owner.put("/xapi/processors/projects/anon", json=[{"id": "script"}, {"id": "profile"}])
    assert changed.status_code == 200, changed.text
    assert ids(changed.json())[2:] == ["script", "profile"] and changed.json()[2]["setBy"] == "project"
    assert ids(owner.get("/xapi/processors/projects/anon").json())[2:] == ["script", "profile"]
    # Then the profile runs last and de-identifies what the script wrote, and the archive row says so
    description, fingerprint = archived_description(anon_site, seed=2)
    assert description in (None, "") and fingerprint.endswith("order:script,profile")
    # and a reset brings back the site's order
    assert ids(owner.delete("/xapi/processors/projects/anon").json())[2:] == ["profile", "script"]
    assert archived_description(anon_site, seed=3)[0] == "SCRIPTED"


def test_site_defaults_and_the_mappings_step(anon_site: Site) -> None:
    MappingStore(anon_site.stores.catalog).upsert({"scope": "site", "fieldName": "model", "fieldType": "string",
                                                   "dicomTag": "0x00080060"})
    admin, owner = anon_site.as_user("admin"), anon_site.as_user("owner")
    assert owner.get("/xapi/processors/site/list").status_code == 403
    assert owner.put("/xapi/processors/site/id/mappings", json={"enabled": False}).status_code == 403
    assert [r["id"] for r in owner.get("/xapi/processors/site/enabled/summary").json()] == [
        "mappings", "profile", "script"], "no site script in this config"
    off = admin.put("/xapi/processors/site/id/mappings", json={"enabled": False})
    assert off.status_code == 200 and off.json()["enabled"] is False
    assert admin.put("/xapi/processors/site/id/profile", json={"enabled": False}).status_code == 400
    demo = {r["id"]: r for r in admin.get("/xapi/processors/projects/demo").json()}
    assert demo["mappings"]["enabled"] is False and demo["mappings"]["setBy"] == "site"
    # the build step extracts nothing while the step is off ...
    stage(anon_site, "demo", seed=4, session="M1")
    (session,) = anon_site.stores.catalog.sessions(PREARCHIVE)
    anon_site.stores.prearchive.build(session.id)
    assert anon_site.stores.catalog.session(session.id).custom_fields() == {}
    # ... and again once the project turns it back on
    auth = Auth(anon_site.stores.catalog)
    auth.set_role("owner", "demo", "owner")
    on = anon_site.as_user("owner").put("/xapi/processors/projects/demo", json=[{"id": "mappings", "enabled": True}])
    assert on.status_code == 200 and {r["id"]: r for r in on.json()}["mappings"]["enabled"] is True
    anon_site.stores.prearchive.rebuild(session.id)
    assert anon_site.stores.catalog.session(session.id).custom_fields() == {"model": "MR"}


def test_the_preview_follows_the_order_too(anon_site: Site) -> None:
    from dicomd.operations import LocalOperator, preview_anonymization

    assert anon_site.as_user("owner").put("/xapi/processors/projects/anon", json=["script", "profile"]
                                          ).status_code == 200
    stage(anon_site, "anon", seed=5, session="P1")
    (session,) = anon_site.stores.catalog.sessions(PREARCHIVE)
    report = preview_anonymization(anon_site.stores, LocalOperator(), session)
    assert report["fingerprint"].endswith("order:script,profile")
    changes = {c["keyword"]: c for c in report["scans"][0]["changes"]}
    assert changes["StudyDescription"]["after"] in (None, ""), "the profile, last, removes what the script wrote"
