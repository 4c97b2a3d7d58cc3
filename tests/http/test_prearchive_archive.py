"""Prearchive listings and actions, archive service, archive listings, downloads, dicomdump."""

from __future__ import annotations

import csv
import io
import zipfile

import pydicom

from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.views import xnat_row
from tests.http.conftest import Site, stage

XNAT_COLUMNS = {"project", "timestamp", "lastmod", "uploaded", "scan_date", "scan_time", "subject", "folderName",
                "name", "tag", "status", "url", "autoarchive", "prevent_anon", "prevent_auto_commit", "SOURCE",
                "VISIT", "PROTOCOL", "TIMEZONE"}


def test_prearchive_listing_json_and_csv(site: Site) -> None:
    uri = stage(site, "demo", seed=1)
    stage(site, "other", seed=2)
    client = site.as_user("collab")
    rows = client.get("/data/prearchive/projects?format=json").json()["ResultSet"]["Result"]
    assert [r["project"] for r in rows] == ["demo"], "only readable projects are listed"
    assert XNAT_COLUMNS <= set(rows[0])
    assert "/data" + rows[0]["url"] == uri
    by_project = client.get("/data/prearchive/projects/demo?format=json").json()["ResultSet"]["Result"]
    assert by_project == rows
    assert client.get("/REST/prearchive/projects/demo?format=json").json()["ResultSet"]["Result"] == rows
    text = client.get("/data/prearchive/projects/demo?format=csv").text
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert parsed[0]["url"] == rows[0]["url"] and parsed[0]["status"] == rows[0]["status"]
    assert client.get("/data/prearchive/projects/other?format=json").status_code == 403
    assert client.get("/data/prearchive/projects/demo,other?format=json").status_code == 403
    admin_rows = site.as_user("admin").get("/data/prearchive?format=json").json()["ResultSet"]["Result"]
    assert sorted(r["project"] for r in admin_rows) == ["demo", "other"]


def test_session_scans_resources_files_and_zip(site: Site) -> None:
    uri = stage(site, "demo", seed=1)
    client = site.as_user("collab")
    (row,) = client.get(uri + "?format=json").json()["ResultSet"]["Result"]
    assert row["url"] == uri[len("/data"):]
    scans = client.get(uri + "/scans?format=json").json()["ResultSet"]["Result"]
    assert [s["ID"] for s in scans] == ["1", "2"] and scans[0]["series_description"]
    resources = client.get(uri + "/scans/1/resources?format=json").json()["ResultSet"]["Result"]
    assert resources[0]["label"] == "DICOM" and int(resources[0]["file_count"]) == 2
    files = client.get(uri + "/scans/1/resources/DICOM/files?format=csv").text
    file_rows = list(csv.DictReader(io.StringIO(files)))
    assert len(file_rows) == 2 and {"Name", "Size", "URI"} <= set(file_rows[0])
    one = client.get(file_rows[0]["URI"])
    assert one.status_code == 200
    assert pydicom.dcmread(io.BytesIO(one.content)).SeriesNumber == 1
    zipped = client.get(uri + "?format=zip")
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as zf:
        assert len(zf.namelist()) == 4 and zf.testzip() is None
    scan_zip = client.get(uri + "/scans/2?format=zip")
    assert len(zipfile.ZipFile(io.BytesIO(scan_zip.content)).namelist()) == 2
    logs = client.get(uri + "/logs?format=json").json()["ResultSet"]["Result"]
    assert logs[0]["status"] == "RECEIVING"


def test_dicomdump_for_session_scan_and_file(site: Site) -> None:
    uri = stage(site, "demo", seed=1)
    client = site.as_user("collab")
    rows = client.get(f"/data/services/dicomdump?src={uri[len('/data'):]}&format=json").json()["ResultSet"]["Result"]
    assert set(rows[0]) == {"tag1", "tag2", "vr", "value", "desc"}
    modality = [r for r in rows if r["tag1"] == "(0008,0060)"]
    assert modality and modality[0]["value"] == "MR" and modality[0]["desc"] == "Modality"
    assert any(r["tag2"] for r in rows), "nested sequence items are listed under their sequence"
    only = client.get(f"/data/services/dicomdump?src={uri}/scans/2&field=00080060&field=SeriesNumber").json()
    assert [r["value"] for r in only["ResultSet"]["Result"]] == ["MR", "2"]
    files = client.get(uri + "/scans/1/resources/DICOM/files?format=json").json()["ResultSet"]["Result"]
    single = client.get("/data/services/dicomdump", params={"src": files[1]["URI"]}).json()["ResultSet"]["Result"]
    assert any(r["tag1"] == "(0008,0018)" for r in single)
    assert site.as_user("outsider").get(f"/data/services/dicomdump?src={uri}").status_code == 403


def test_archive_service_and_archive_listings(site: Site) -> None:
    uri = stage(site, "demo", seed=1, session="E1")
    member = site.as_user("member")
    assert member.post(f"/data/services/archive?src={uri}").status_code == 403
    response = site.as_user("owner").post(f"/data/services/archive?src={uri[len('/data'):]}&overwrite=none")
    assert response.status_code == 200, response.text
    (archived,) = site.stores.catalog.sessions(ARCHIVE)
    assert response.text == f"/data/archive/projects/demo/subjects/{archived.subject}/experiments/E1\r\n"
    # archiving the same study again without overwrite is a 409
    again = stage(site, "demo", seed=1, session="E1")
    conflict = site.as_user("owner").post(f"/data/services/archive?src={again}")
    assert conflict.status_code == 409
    client = site.as_user("collab")
    projects = client.get("/data/projects?format=json").json()["ResultSet"]["Result"]
    assert [p["ID"] for p in projects] == ["demo"]
    subjects = client.get("/data/projects/demo/subjects?format=json").json()["ResultSet"]["Result"]
    assert [s["label"] for s in subjects] == [archived.subject]
    experiments = client.get("/data/archive/projects/demo/experiments?format=json").json()["ResultSet"]["Result"]
    assert [e["label"] for e in experiments] == ["E1"] and experiments[0]["xsiType"] == "xnat:mrSessionData"
    assert client.get("/data/experiments?format=json").json()["ResultSet"]["Result"] == experiments
    assert site.as_user("outsider").get("/data/experiments?format=json").json()["ResultSet"]["Result"] == []
    item = client.get(experiments[0]["URI"] + "?format=json").json()["items"][0]
    assert item["data_fields"]["label"] == "E1" and item["meta"]["isHistory"] is False
    scans = client.get("/data/projects/demo/experiments/E1/scans?format=json").json()["ResultSet"]["Result"]
    assert [s["ID"] for s in scans] == ["1", "2"]
    all_zip = client.get("/data/projects/demo/experiments/E1/scans/ALL/files?format=zip")
    assert len(zipfile.ZipFile(io.BytesIO(all_zip.content)).namelist()) == 4
    scan_zip = client.get(f"/data/projects/demo/subjects/{archived.subject}/experiments/E1/scans/1/files?format=zip")
    assert len(zipfile.ZipFile(io.BytesIO(scan_zip.content)).namelist()) == 2
    assert site.as_user("outsider").get("/data/projects/demo/experiments").status_code == 403
    assert site.as_user("outsider").get("/data/projects/demo/experiments/E1?format=zip").status_code == 403


def test_experiments_listing_shows_and_filters_custom_fields(site: Site) -> None:
    stage(site, "demo", seed=1, session="E1")
    stage(site, "demo", seed=2, session="E2")
    for session in site.stores.catalog.sessions(PREARCHIVE):
        site.stores.archiver.archive(session.id, overwrite="none")
    for row in site.stores.catalog.sessions(ARCHIVE):
        value = '{"scanner": "%s"}' % ("A" if row.label == "E1" else "B")
        site.stores.catalog.write(lambda c, v=value, i=row.id: c.execute("UPDATE sessions SET custom=? WHERE id=?", (v, i)))
    client = site.as_user("collab")
    rows = client.get("/data/projects/demo/experiments?format=json").json()["ResultSet"]["Result"]
    assert {r["label"]: r["scanner"] for r in rows} == {"E1": "A", "E2": "B"}
    only = client.get("/data/projects/demo/experiments?format=json&scanner=B").json()["ResultSet"]["Result"]
    assert [r["label"] for r in only] == ["E2"]


def test_prearchive_move_delete_rebuild_services(site: Site) -> None:
    uri = stage(site, "demo", seed=1)
    owner = site.as_user("owner")
    # the owner of demo may not move into a project they have no role in
    assert owner.post("/data/services/prearchive/move", data={"src": uri, "newProject": "other"}).status_code == 403
    rebuilt = site.as_user("member").post(f"/data/services/prearchive/rebuild?src={uri}&format=json")
    assert rebuilt.status_code == 200 and rebuilt.json()["ResultSet"]["Result"][0]["status"] == "READY"
    admin = site.as_user("admin")
    moved = admin.post("/data/services/prearchive/move?format=csv", data={"src": uri, "newProject": "other",
                                                                          "async": "false"})
    assert moved.status_code == 200, moved.text
    (row,) = site.stores.catalog.sessions(PREARCHIVE)
    assert row.project == "other"
    new_uri = "/data" + row.url
    assert site.as_user("owner").post("/data/services/prearchive/delete", data={"src": new_uri}).status_code == 403
    deleted = admin.post("/data/services/prearchive/delete?format=json", data={"src": new_uri, "async": "false"})
    assert deleted.status_code == 200 and deleted.json()["ResultSet"]["Result"][0]["status"] == "DELETED"
    assert site.stores.catalog.sessions(PREARCHIVE) == []


def test_session_actions_on_the_session_uri(site: Site) -> None:
    uri = stage(site, "demo", seed=1)
    owner = site.as_user("owner")
    built = owner.post(uri + "?format=json", data={"action": "build"})
    assert built.status_code == 200 and built.json()["ResultSet"]["Result"][0]["status"] == "READY"
    assert site.as_user("member").post(uri, data={"action": "set-status", "status": "ERROR"}).status_code == 403
    errored = owner.post(uri + "?format=json", data={"action": "set-status", "status": "ERROR"})
    assert errored.json()["ResultSet"]["Result"][0]["status"] == "ERROR"
    assert owner.post(uri, data={"action": "set-status", "status": "ARCHIVED"}).status_code == 400
    assert owner.post(uri, data={"action": "explode"}).status_code == 400
    committed = owner.post(uri, data={"action": "commit"})
    assert committed.status_code == 200 and committed.text.startswith("/data/archive/projects/demo/")
    uri2 = stage(site, "demo", seed=2)
    assert site.as_user("member").delete(uri2).status_code == 403
    assert owner.delete(uri2).status_code == 200
    assert owner.get(uri2).status_code == 404


def test_unassigned_is_for_admins(site: Site) -> None:
    paths_uri = stage(site, "", seed=7)
    assert paths_uri.startswith("/data/prearchive/projects/Unassigned/")
    owner = site.as_user("owner")
    assert owner.get("/data/prearchive/projects/Unassigned?format=json").status_code == 403
    assert owner.get(paths_uri).status_code == 403
    assert owner.post("/data/services/prearchive/move", data={"src": paths_uri, "newProject": "demo"}).status_code == 403
    assert all(r["project"] != "Unassigned"
               for r in owner.get("/data/prearchive?format=json").json()["ResultSet"]["Result"])
    admin = site.as_user("admin")
    assert admin.post(f"/data/services/archive?src={paths_uri}").status_code == 409
    assert admin.post("/data/services/prearchive/move", data={"src": paths_uri, "newProject": "demo"}).status_code == 200
    rows = [xnat_row(r) for r in site.stores.catalog.sessions(PREARCHIVE)]
    assert [r["project"] for r in rows] == ["demo"]


def test_path_traversal_is_refused(site: Site) -> None:
    uri = stage(site, "demo", seed=1)
    client = site.as_user("admin")
    for src in ("/prearchive/projects/demo/..%2F..%2F../etc/passwd",
                "/data/prearchive/projects/../../../etc/passwd/x/y",
                uri + "/scans/1/resources/DICOM/files/..%2F..%2Fcatalog.sqlite",
                "/archive/projects/demo/subjects/%2E%2E/experiments/x"):
        response = client.get("/data/services/dicomdump", params={"src": src})
        assert response.status_code in (400, 403, 404), src
        assert "SQLite" not in response.text
    traversal = client.get(uri + "/scans/1/resources/DICOM/files/%2E%2E%2F%2E%2E%2Fcatalog.sqlite")
    assert traversal.status_code in (400, 403, 404)
    assert client.get("/data/prearchive/projects/demo/x/..%2F..%2F..%2Fcatalog.sqlite").status_code in (400, 403, 404)
