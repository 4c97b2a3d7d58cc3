"""Edges: URI parsing, chunked and multipart uploads, concurrent archive requests."""

from __future__ import annotations

import threading
from typing import Iterator

import pytest

from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.errors import Forbidden, InvalidInput
from dicomd.http import targets
from tests.http.conftest import Site, stage, study_files, zip_bytes


def test_uri_parsing() -> None:
    pre = targets.parse("/data/prearchive/projects/P/20240101_010101001/S/scans/3/resources/DICOM/files/a.dcm")
    assert (pre.stage, pre.project, pre.timestamp, pre.label, pre.scan, pre.file) == (
        "prearchive", "P", "20240101_010101001", "S", "3", "a.dcm")
    arc = targets.parse("/archive/projects/P/subjects/SUB/experiments/E/scans/1")
    assert (arc.stage, arc.project, arc.subject, arc.label, arc.scan) == ("archive", "P", "SUB", "E", "1")
    assert targets.parse("/REST/projects/P/experiments/E").label == "E"
    assert targets.parse(pre.uri) == pre
    for bad in ("/data/prearchive/projects/P/T", "/data/projects/P", "/x/y", "",
                "/data/prearchive/projects/P/T/S/scans", "/data/prearchive/projects/P/T/S/bogus/1"):
        with pytest.raises(InvalidInput):
            targets.parse(bad)
    for hostile in ("/data/prearchive/projects/../T/S", "/data/prearchive/projects/P/T/S/scans/1/resources/DICOM"
                    "/files/..", "/data/prearchive/projects/P/%2e%2e/S"):
        with pytest.raises(Forbidden):
            targets.parse(hostile)


def test_chunked_upload_without_length(site: Site) -> None:
    body = zip_bytes(study_files(site.tmp, seed=50))

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 7000):
            yield body[start:start + 7000]

    response = site.as_user("member").post("/data/services/import?project=demo&session=chunked", content=chunks())
    assert response.status_code == 200, response.text
    assert [r.label for r in site.stores.catalog.sessions(PREARCHIVE)] == ["chunked"]


def test_multipart_with_two_files_is_refused(site: Site) -> None:
    paths = study_files(site.tmp, seed=51)
    files = [("file", ("a.dcm", paths[0].read_bytes(), "application/dicom")),
             ("file", ("b.dcm", paths[1].read_bytes(), "application/dicom"))]
    response = site.as_user("member").post("/data/services/import", data={"project": "demo"}, files=files)
    assert response.status_code == 400
    assert site.stores.catalog.sessions(PREARCHIVE) == []


def test_concurrent_archive_requests_one_wins(site: Site) -> None:
    uri = stage(site, "demo", seed=52)
    statuses: list[int] = []
    clients = [site.as_user("owner") for _ in range(2)]

    def archive(index: int) -> None:
        statuses.append(clients[index].post(f"/data/services/archive?src={uri}").status_code)

    threads = [threading.Thread(target=archive, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(statuses) in ([200, 404], [200, 409])
    assert len(site.stores.catalog.sessions(ARCHIVE)) == 1


def test_malformed_multipart_is_400(site: Site) -> None:
    client = site.as_user("member")
    for body in (b"\x00\x01garbage--abc\r\nzzz", b"--abc\r\nNoColonHere\r\n\r\nx\r\n--abc--\r\n"):
        response = client.post("/data/services/import?project=demo", content=body,
                               headers={"Content-Type": "multipart/form-data; boundary=abc"})
        assert response.status_code == 400
    assert not any(site.stores.layout.tmp.iterdir())
