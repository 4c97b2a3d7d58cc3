"""/xapi/dicom_mappings, the permission matrix, the error edge and the `dicomd user` CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from dicomd.cli import main
from dicomd.errors import Ambiguous, Conflict, DicomdError, Forbidden, InvalidInput, InvalidState, NotFound, StorageFull
from dicomd.http.app import status_for
from dicomd.mappings import MappingStore
from tests.conftest import write_config
from tests.http.conftest import Site, stage


def test_mappings_crud_in_xnat_shape(site: Site) -> None:
    admin = site.as_user("admin")
    created = admin.put("/xapi/dicom_mappings/update", json={
        "scope": "site", "fieldName": "scannerModel", "fieldType": "string", "dicomTag": "0x00081090",
        "schemaElement": "xnat:imageSessionData"})
    assert created.status_code == 200, created.text
    body = created.json()
    assert {"id", "scope", "scopeObjectId", "fieldName", "fieldType", "dicomTag", "schemaElement"} <= set(body)
    assert body["dicomTag"] == "0x00081090" and body["level"] == "session"
    # a project mapping by its owner, tag given as (gggg,eeee), at scan level
    owner = site.as_user("owner")
    scan_field = owner.put("/xapi/dicom_mappings/update", json={
        "scope": "project", "scopeObjectId": "demo", "fieldName": "echoTime", "fieldType": "float",
        "dicomTag": "(0018,0081)", "level": "scan"}).json()
    assert scan_field["dicomTag"] == "0x00180081" and scan_field["schemaElement"] == "xnat:imageScanData"
    # update by id keeps the id
    updated = admin.put("/xapi/dicom_mappings/update", json={**body, "fieldType": "string", "dicomTag": "00081090"})
    assert updated.json()["id"] == body["id"]
    listed = site.as_user("collab").get("/xapi/dicom_mappings").json()
    assert sorted(m["fieldName"] for m in listed) == ["echoTime", "scannerModel"]
    assert [m["fieldName"] for m in site.as_user("outsider").get("/xapi/dicom_mappings").json()] == ["scannerModel"]
    # the build step reads them from the catalog
    stored = MappingStore(site.stores.catalog).list("demo")
    assert {(m.field_name, m.tag, m.level) for m in stored} == {("scannerModel", 0x00081090, "session"),
                                                                ("echoTime", 0x00180081, "scan")}
    # bad tag / type / name are refused when added
    for bad in ({"fieldName": "x", "dicomTag": "zz"}, {"fieldName": "x", "dicomTag": "0x0010", "fieldType": "int"},
                {"fieldName": "1x", "dicomTag": "0x00100010"}, {"fieldName": "x", "fieldType": "integer"}):
        assert admin.put("/xapi/dicom_mappings/update", json=bad).status_code == 400, bad
    unknown = {"scope": "project", "scopeObjectId": "nosuch", "fieldName": "x", "dicomTag": "0x00100020"}
    assert admin.put("/xapi/dicom_mappings/update", json=unknown).status_code == 400
    # permissions: site scope is admin-only; a member may not edit project mappings
    assert owner.put("/xapi/dicom_mappings/update", json={"fieldName": "a", "dicomTag": "0x00100020"}).status_code == 403
    assert site.as_user("member").delete(f"/xapi/dicom_mappings/{scan_field['id']}").status_code == 403
    assert owner.delete(f"/xapi/dicom_mappings/{scan_field['id']}").status_code == 200
    assert admin.delete(f"/xapi/dicom_mappings/{scan_field['id']}").status_code == 404


ACTIONS = ("list", "read", "dump", "upload", "rebuild", "archive", "move", "delete")
EXPECTED = {  # user -> actions allowed on a session in project demo
    "admin": set(ACTIONS),
    "owner": {"list", "read", "dump", "upload", "rebuild", "archive", "delete"},  # move needs a role in the target
    "member": {"list", "read", "dump", "upload", "rebuild"},
    "collab": {"list", "read", "dump"},
    "outsider": set(),
}


@pytest.mark.parametrize("user", sorted(EXPECTED))
def test_permission_matrix(site: Site, user: str) -> None:
    client = site.as_user(user)
    allowed: set[str] = set()
    for action in ACTIONS:
        uri = stage(site, "demo", seed=20 + ACTIONS.index(action), session=f"{action}")
        src = uri[len("/data"):]
        if action == "list":
            response = client.get("/data/prearchive/projects/demo?format=json")
        elif action == "read":
            response = client.get(uri + "/scans?format=json")
        elif action == "dump":
            response = client.get(f"/data/services/dicomdump?src={src}")
        elif action == "upload":
            response = client.post("/data/services/import?project=demo&import-handler=gradual-DICOM",
                                   content=next((site.tmp / "s20-demo-list").iterdir()).read_bytes())
        elif action == "rebuild":
            response = client.post(f"/data/services/prearchive/rebuild?src={src}")
        elif action == "archive":
            response = client.post(f"/data/services/archive?src={src}")
        elif action == "move":
            response = client.post("/data/services/prearchive/move", data={"src": src, "newProject": "other"})
        else:
            response = client.post("/data/services/prearchive/delete", data={"src": src})
        assert response.status_code in (200, 403), (action, response.status_code, response.text)
        if response.status_code == 200:
            allowed.add(action)
    assert allowed == EXPECTED[user]


def test_errors_map_to_statuses_in_one_place() -> None:
    assert [status_for(e("x")) for e in (NotFound, Forbidden, InvalidInput, Ambiguous, Conflict, InvalidState,
                                          StorageFull, DicomdError)] == [404, 403, 400, 400, 409, 409, 507, 500]


def test_user_cli(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    runner = CliRunner()
    added = runner.invoke(main, ["user", "add", "alice", "--project", "demo", "--role", "member",
                                 "--password-stdin", "--config", str(config)], input="alice-password\n")
    assert added.exit_code == 0, added.output
    assert runner.invoke(main, ["user", "add", "root", "--admin", "--password-stdin", "--config", str(config)],
                         input="root-password\n").exit_code == 0
    duplicate = runner.invoke(main, ["user", "add", "alice", "--password-stdin", "--config", str(config)],
                              input="alice-password\n")
    assert duplicate.exit_code == 1 and "already exists" in duplicate.output
    assert runner.invoke(main, ["user", "add", "bob", "--project", "nosuch", "--role", "owner", "--password-stdin",
                                "--config", str(config)], input="bob-password\n").exit_code == 1
    assert runner.invoke(main, ["user", "add", "bob", "--password-stdin", "--config", str(config)],
                         input="short\n").exit_code == 1
    assert runner.invoke(main, ["user", "role", "alice", "--project", "auto", "--role", "owner",
                                "--config", str(config)]).exit_code == 0
    listed = runner.invoke(main, ["user", "list", "--json", "--config", str(config)])
    assert listed.exit_code == 0
    assert '"alice"' in listed.output and '"auto": "owner"' in listed.output and '"demo": "member"' in listed.output
    assert runner.invoke(main, ["user", "remove", "alice", "--config", str(config)]).exit_code == 0
    assert "alice" not in runner.invoke(main, ["user", "list", "--config", str(config)]).output
    assert runner.invoke(main, ["user", "remove", "alice", "--config", str(config)]).exit_code == 1
    catalog = (tmp_path / "data" / "catalog.sqlite").read_bytes()
    assert b"root-password" not in catalog and b"alice-password" not in catalog


def test_mapped_fields_reach_the_archive_listings(site: Site) -> None:
    from tests.http.conftest import study_files, zip_bytes

    admin = site.as_user("admin")
    admin.put("/xapi/dicom_mappings/update", json={"fieldName": "modalityField", "dicomTag": "Modality"})
    admin.put("/xapi/dicom_mappings/update", json={"scope": "project", "scopeObjectId": "DEMO", "fieldName": "seriesNo",
                                                  "fieldType": "integer", "dicomTag": "0x00200011", "level": "scan"})
    body = zip_bytes(study_files(site.tmp, seed=40))
    response = site.as_user("owner").post("/data/services/import?dest=/archive/projects/demo/subjects/S/experiments/E",
                                          content=body)
    assert response.status_code == 200, response.text
    client = site.as_user("collab")
    (row,) = client.get("/data/projects/demo/experiments?format=json").json()["ResultSet"]["Result"]
    assert row["modalityField"] == "MR"
    assert client.get("/data/projects/demo/experiments?format=json&modalityField=CT").json()["ResultSet"]["Result"] == []
    scans = client.get("/data/projects/demo/experiments/E/scans?format=json").json()["ResultSet"]["Result"]
    assert [s["seriesNo"] for s in scans] == [1, 2]
