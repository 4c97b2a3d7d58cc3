"""Size limits: max_instance_bytes on a receiver, max_upload_bytes on the HTTP API."""

import dataclasses

from fastapi.testclient import TestClient

from dicomd.catalog import PREARCHIVE
from dicomd.config import load
from dicomd.stores import Stores
from dicomd.testing.generator import generate_study
from dicomd.http.app import create_app
from tests.conftest import send, write_config
from tests.http.conftest import add_users, PASSWORD, study_files, zip_bytes


def test_instance_over_the_limit_gets_a700_and_nothing_is_staged(make_daemon, tmp_path):
    daemon = make_daemon(write_config(tmp_path, receiver="max_instance_bytes = 20000"))
    small = generate_study(1, series=1, instances_per_series=1, rows=32, cols=32, study_description="demo")
    large = generate_study(2, series=1, instances_per_series=1, rows=256, cols=256, study_description="demo")
    assert send(daemon.dicom_port(), large) == [0xA700]
    assert send(daemon.dicom_port(), small) == [0]
    rows = daemon.stores.catalog.sessions(PREARCHIVE)
    assert len(rows) == 1 and rows[0].instances == 1
    assert not [p for p in daemon.stores.layout.tmp.rglob("*") if p.is_file()]


def test_upload_over_the_limit_gets_413(tmp_path):
    config = load(write_config(tmp_path))
    config = dataclasses.replace(config, http=dataclasses.replace(config.http, max_upload_bytes=10_000))
    stores = Stores.open(config)
    try:
        add_users(stores)
        body = zip_bytes(study_files(tmp_path, per_series=3))
        assert len(body) > 10_000
        with TestClient(create_app(config, stores)) as client:
            client.auth = ("admin", PASSWORD)
            reply = client.post("/data/services/import?project=demo&subject=S&session=E", content=body,
                                headers={"Content-Type": "application/zip"})
            assert reply.status_code == 413, reply.text

            def chunks():  # no Content-Length: the limit is enforced while receiving
                for i in range(0, len(body), 4096):
                    yield body[i:i + 4096]

            reply = client.post("/data/services/import?project=demo&subject=S&session=E", content=chunks(),
                                headers={"Content-Type": "application/zip"})
            assert reply.status_code == 413, reply.text
        assert not stores.catalog.sessions(PREARCHIVE)
    finally:
        stores.close()
