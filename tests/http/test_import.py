"""POST /data/services/import: raw and multipart bodies, all-or-nothing batches, hostile archives,
dest=/archive, the free-space floor."""

from __future__ import annotations

import dataclasses
import io
import tarfile
import zipfile

from fastapi.testclient import TestClient

import pytest

from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.http.app import create_app
from tests.http.conftest import Site, study_files, zip_bytes


def _uris(response) -> list[str]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/uri-list")
    assert response.text.endswith("\r\n")
    return response.text.strip().split("\r\n")


@pytest.mark.both_backends
def test_zip_body_as_xnatpy_sends_it(site: Site) -> None:
    body = zip_bytes(study_files(site.tmp))
    response = site.as_user("member").post(
        "/data/services/import?project=demo&subject=S1&session=E1&import-handler=DICOM-zip",
        content=body, headers={"Content-Type": "application/zip"},
    )
    (uri,) = _uris(response)
    assert uri.startswith("/data/prearchive/projects/demo/") and uri.endswith("/E1")
    (row,) = site.stores.catalog.sessions(PREARCHIVE, projects=["demo"])
    assert (row.subject, row.label, row.instances) == ("S1", "E1", 4)
    assert not any(site.stores.layout.tmp.iterdir()), "upload temp files are removed"


def test_single_file_tar_gz_and_multipart(site: Site) -> None:
    client = site.as_user("member")
    paths = study_files(site.tmp, seed=2)
    # a single DICOM file, gradual-DICOM
    single = client.post("/data/services/import?PROJECT_ID=demo&EXPT_LABEL=one&import-handler=gradual-DICOM",
                         content=paths[0].read_bytes(), headers={"Content-Type": "application/dicom"})
    assert _uris(single)[0].endswith("/one")
    # a tar.gz, detected by its bytes whatever the content type says
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in paths:
            tar.add(path, arcname=path.name)
    tgz = client.post("/data/services/import?project=demo&session=tgz", content=buf.getvalue(),
                      headers={"Content-Type": "application/octet-stream"})
    assert _uris(tgz)[0].endswith("/tgz")
    # multipart, parameters in the form
    files = {"file": ("upload.zip", zip_bytes(paths), "application/zip")}
    multi = client.post("/data/services/import", data={"project": "demo", "session": "multi"}, files=files)
    assert _uris(multi)[0].endswith("/multi")
    labels = sorted(r.label for r in site.stores.catalog.sessions(PREARCHIVE))
    assert labels == ["multi", "one", "tgz"]


def test_one_bad_member_refuses_the_whole_upload(site: Site) -> None:
    files = study_files(site.tmp, seed=3)
    body = zip_bytes(files, extra={"notes/readme.txt": b"not dicom at all", "cut.dcm": files[0].read_bytes()[:600]})
    response = site.as_user("member").post("/data/services/import?project=demo", content=body)
    assert response.status_code == 400
    assert "cut.dcm" in response.text and "readme.txt" not in response.text
    assert site.stores.catalog.sessions(PREARCHIVE) == []
    # With Ignore-Unparsable the good members are staged and the bad one quarantined
    ok = site.as_user("member").post("/data/services/import?project=demo&Ignore-Unparsable=true", content=body)
    assert len(_uris(ok)) == 1
    assert site.stores.catalog.quarantine()


def test_hostile_archives_are_refused(site: Site) -> None:
    client = site.as_user("member")
    slip = io.BytesIO()
    with zipfile.ZipFile(slip, "w") as zf:
        zf.writestr("../../escape.dcm", b"x" * 200)
    response = client.post("/data/services/import?project=demo", content=slip.getvalue())
    assert response.status_code == 400
    assert not (site.stores.layout.root.parent / "escape.dcm").exists()
    absolute = io.BytesIO()
    with zipfile.ZipFile(absolute, "w") as zf:
        zf.writestr("/etc/evil.dcm", b"x" * 200)
    assert client.post("/data/services/import?project=demo", content=absolute.getvalue()).status_code == 400
    link = io.BytesIO()
    with tarfile.open(fileobj=link, mode="w") as tar:
        info = tarfile.TarInfo("link.dcm")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    assert client.post("/data/services/import?project=demo", content=link.getvalue()).status_code == 400
    assert site.stores.catalog.sessions(PREARCHIVE) == []


def test_empty_and_garbage_bodies(site: Site) -> None:
    client = site.as_user("member")
    assert client.post("/data/services/import?project=demo", content=b"").status_code == 400
    assert client.post("/data/services/import?project=demo", content=b"garbage" * 100).status_code == 400
    assert client.post("/data/services/import?project=demo&import-handler=nope", content=b"x").status_code == 400
    assert client.post("/data/services/import?project=nosuch", content=b"x").status_code == 403
    admin = site.as_user("admin")
    assert admin.post("/data/services/import?project=nosuch", content=b"x").status_code == 404


@pytest.mark.both_backends
def test_dest_archive_archives_right_away(site: Site) -> None:
    body = zip_bytes(study_files(site.tmp, seed=4))
    response = site.as_user("owner").post(
        "/data/services/import?dest=/archive/projects/demo/subjects/SUBJ/experiments/EXP1", content=body
    )
    assert _uris(response) == ["/data/archive/projects/demo/subjects/SUBJ/experiments/EXP1"]
    (row,) = site.stores.catalog.sessions(ARCHIVE)
    assert (row.project, row.subject, row.label, row.instances) == ("demo", "SUBJ", "EXP1", 4)
    assert site.stores.catalog.sessions(PREARCHIVE) == []
    # auto-archive=true does the same; a member may not archive
    body2 = zip_bytes(study_files(site.tmp, seed=5))
    denied = site.as_user("member").post("/data/services/import?project=demo&auto-archive=true", content=body2)
    assert denied.status_code == 403
    assert site.stores.catalog.sessions(PREARCHIVE) == []
    done = site.as_user("owner").post("/data/services/import?project=demo&session=E2&auto-archive=true", content=body2)
    assert _uris(done)[0].startswith("/data/archive/projects/demo/subjects/")


def test_free_space_floor_is_507(site: Site) -> None:
    config = dataclasses.replace(site.stores.config, min_free_bytes=2**62)
    stores = dataclasses.replace(site.stores, config=config)
    client = TestClient(create_app(config, stores))
    client.auth = ("member", "correct-horse-1")
    response = client.post("/data/services/import?project=demo", content=zip_bytes(study_files(site.tmp, seed=6)))
    assert response.status_code == 507
    assert site.stores.catalog.sessions(PREARCHIVE) == []
