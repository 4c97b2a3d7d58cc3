"""The xnatpy and pyxnat call sequences from xnat.md, as plain requests (no client libraries needed)."""

from __future__ import annotations

import csv
import io

from fastapi.testclient import TestClient

from dicomd.catalog import ARCHIVE, PREARCHIVE
from tests.http.conftest import PASSWORD, Site, study_files, zip_bytes


def test_xnatpy_shaped_sequence(site: Site) -> None:
    client = TestClient(site.client.app)
    # Given xnatpy's connect(): GET / (unauthenticated), form login, auth check, version probes
    assert client.get("/").status_code == 401
    login = client.put("/data/services/auth", data={"username": "admin", "password": PASSWORD})
    assert login.status_code == 200
    client.cookies.set("JSESSIONID", login.text)
    assert "User 'admin' is logged in" in client.get("/data/auth").text
    assert client.get("/data/version").status_code in (200, 404)
    assert client.get("/xapi/siteConfig/buildInfo", params={"format": "json"}).json()["version"].startswith("1.8.")
    # When uploading the raw zip
    body = zip_bytes(study_files(site.tmp, seed=30))
    upload = client.post("/data/services/import", params={"project": "demo", "subject": "S", "session": "E",
                                                          "import-handler": "DICOM-zip"},
                         content=body, headers={"Content-Type": "application/zip"})
    uri = upload.text.strip()
    assert uri.startswith("/data/prearchive/projects/demo/")
    # Then the prearchive listing, dicomdump, rebuild, move, archive and delete all answer
    rows = client.get("/data/prearchive/projects/demo", params={"format": "json"}).json()["ResultSet"]["Result"]
    assert ["/data" + r["url"] for r in rows] == [uri]
    dump = client.get("/data/services/dicomdump", params={"src": uri[5:], "format": "json"})
    assert dump.json()["ResultSet"]["Result"]
    assert client.post("/data/services/prearchive/rebuild", params={"src": uri}).status_code == 200
    assert client.post("/data/services/prearchive/move", params={"src": uri, "newProject": "other"}).status_code == 200
    (moved,) = site.stores.catalog.sessions(PREARCHIVE)
    archived = client.post("/data/services/archive", params={"src": "/data" + moved.url, "auto-archive": "false"})
    assert archived.text.strip() == "/data/archive/projects/other/subjects/S/experiments/E"
    again = client.post("/data/services/import", params={"project": "demo", "session": "E2"}, content=body,
                        headers={"Content-Type": "application/zip"}).text.strip()
    assert client.post("/data/services/prearchive/delete", params={"src": again}).status_code == 200
    assert site.stores.catalog.sessions(PREARCHIVE) == [] and len(site.stores.catalog.sessions(ARCHIVE)) == 1
    # And logout ends the session
    assert client.delete("/data/JSESSION", headers={"Connection": "close"}).status_code == 200
    assert client.get("/data/auth").status_code == 401


def test_pyxnat_shaped_sequence(site: Site) -> None:
    body = zip_bytes(study_files(site.tmp, seed=31))
    site.as_user("admin").post("/data/services/import?project=demo&session=P", content=body).raise_for_status()
    client = site.as_user("admin")  # basic auth on every request
    session_id = client.get("/data/JSESSION").text
    assert session_id and client.cookies.get("JSESSIONID") == session_id
    listing = client.get("/data/prearchive/projects?format=csv").text
    (row,) = list(csv.DictReader(io.StringIO(listing)))
    triple = "/".join((row["project"], row["timestamp"], row["folderName"]))
    scans = list(csv.DictReader(io.StringIO(client.get(f"/data/prearchive/projects/{triple}/scans?format=csv").text)))
    assert [s["ID"] for s in scans] == ["1", "2"]
    form = {"content-type": "application/x-www-form-urlencoded"}
    reset = client.post(f"/data/prearchive/projects/{triple}?format=single", content="action=build", headers=form)
    assert reset.status_code == 200
    moved = client.post("/data/services/prearchive/move?format=csv",
                        content=f"src={row['url']}&newProject=other&async=false", headers=form)
    assert moved.status_code == 200 and "other" in moved.text
    (now,) = list(csv.DictReader(io.StringIO(client.get("/data/prearchive/projects?format=csv").text)))
    deleted = client.post("/data/services/prearchive/delete?format=csv", content=f"src={now['url']}&async=false",
                          headers=form)
    assert deleted.status_code == 200
    assert client.get("/data/prearchive/projects?format=csv").text.strip().count("\n") == 0
    assert client.delete("/data/JSESSION").status_code == 200
