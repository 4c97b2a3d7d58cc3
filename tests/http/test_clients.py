"""The real clients against a real server: xnatpy and pyxnat call sequences, and `dicomd serve`."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests

from dicomd.auth import Auth
from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.config import HttpConfig, load
from dicomd.daemon import Daemon
from tests.conftest import wait_for, write_config
from tests.http.conftest import PASSWORD, add_users, study_files, zip_bytes

xnat = pytest.importorskip("xnat")
pyxnat = pytest.importorskip("pyxnat")

PROJECTS = """
[projects.demo]
[projects.other]
"""


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Daemon, str]]:
    config = load(write_config(tmp_path, projects=PROJECTS))
    config = dataclasses.replace(config, http=HttpConfig(enabled=True, host="127.0.0.1", port=0),
                                 session_idle_seconds=3600)
    daemon = Daemon(config).start()
    assert daemon.stores is not None
    add_users(daemon.stores)
    (server,) = [s for s in daemon.services if type(s).__name__ == "HttpServer"]
    wait_for(lambda: requests.get(server.url + "/health", timeout=5).ok)
    try:
        yield daemon, server.url
    finally:
        daemon.stop()


def test_xnatpy_sequence(live: tuple[Daemon, str], tmp_path: Path) -> None:
    daemon, url = live
    assert daemon.stores is not None
    zip_path = tmp_path / "upload.zip"
    zip_path.write_bytes(zip_bytes(study_files(tmp_path, seed=11)))
    session = xnat.connect(url, user="admin", password=PASSWORD, no_parse_model=True, loglevel="ERROR")
    try:
        assert session.xnat_version.startswith("1.8")
        # upload
        uploaded = session.services.import_(zip_path, project="demo", subject="SUBJ", experiment="EXP",
                                            import_handler="DICOM-zip")
        assert uploaded.uri.startswith("/data/prearchive/projects/demo/") and uploaded.uri.endswith("/EXP")
        # prearchive listing and the session's fields, as xnatpy parses them
        (found,) = session.prearchive.sessions(project="demo", allow_receiving=True)
        assert found.uri == uploaded.uri
        assert (found.subject, found.label, found.status) == ("SUBJ", "EXP", "RECEIVING")
        assert found.timestamp.year >= 2024 and found.lastmod and found.uploaded
        scans = found.scans
        assert len(scans) == 2
        assert scans[0].dicom_dump()
        assert len(scans[0].files) == 2
        assert scans[0].read_dicom().Modality == "MR"
        zipped = tmp_path / "session.zip"
        found.download(zipped)
        assert zipped.stat().st_size > 0
        dump = session.services.dicom_dump(src=found.uri[len("/data"):], fields=["Modality"])
        assert dump[0]["value"] == "MR"
        # rebuild, move, archive, delete
        found.rebuild()
        (built,) = session.prearchive.sessions(project="demo")
        assert built.status == "READY" and built.scan_date is not None and built.scan_time is not None
        found.move("other")
        (moved,) = session.prearchive.sessions(project="other", allow_receiving=True)
        response = session.post("/data/services/archive", query={"src": moved.uri, "overwrite": "none"})
        assert response.text.strip() == "/data/archive/projects/other/subjects/SUBJ/experiments/EXP"
        assert [r.label for r in daemon.stores.catalog.sessions(ARCHIVE)] == ["EXP"]
        again = session.services.import_(data=zip_path.read_bytes(), project="demo", content_type="application/zip")
        again.delete(asynchronous=False)
        assert daemon.stores.catalog.sessions(PREARCHIVE) == []
    finally:
        session.disconnect()


def test_xnatpy_alias_token_login(live: tuple[Daemon, str]) -> None:
    _daemon, url = live
    token = requests.get(url + "/data/services/tokens/issue", auth=("member", PASSWORD), timeout=10).json()
    session = xnat.connect(url, user=token["alias"], password=token["secret"], no_parse_model=True, loglevel="ERROR")
    try:
        assert session.logged_in_user == "member"
        assert session.get("/data/prearchive/projects/demo", format="json").status_code == 200
    finally:
        session.disconnect()


def test_pyxnat_sequence(live: tuple[Daemon, str], tmp_path: Path) -> None:
    daemon, url = live
    assert daemon.stores is not None
    body = zip_bytes(study_files(tmp_path, seed=12))
    requests.post(url + "/data/services/import?project=demo&session=P1", data=body, auth=("admin", PASSWORD),
                  timeout=30).raise_for_status()
    intf = pyxnat.Interface(server=url, user="admin", password=PASSWORD)
    try:
        prearchive = intf.manage.prearchive
        (triple,) = prearchive.get()
        assert triple[0] == "demo" and triple[2] == "P1"
        assert prearchive.status(triple) == "RECEIVING"
        assert prearchive.get_scans(triple) == ["1", "2"]
        assert prearchive.get_resources(triple, "1") in ("DICOM", ["DICOM"])  # pyxnat unwraps one row
        assert len(prearchive.get_files(triple, "1", "DICOM")) == 2
        uri = prearchive.get_uri(triple)
        assert uri.startswith("/prearchive/projects/demo/")
        prearchive.reset(triple)
        assert prearchive.status(triple) == "READY"
        # move with a form body, as pyxnat builds it
        body_text = f"src={uri}&newProject=other&async=false"
        intf._exec("/data/services/prearchive/move?format=csv", "POST", body_text,
                   {"content-type": "application/x-www-form-urlencoded"})
        (moved,) = prearchive.get()
        assert moved[0] == "other"
        prearchive.delete(prearchive.get_uri(moved))
        assert prearchive.get() == []
    finally:
        intf.disconnect()


def test_dicomd_serve_subprocess(tmp_path: Path) -> None:
    config = write_config(tmp_path, projects=PROJECTS)
    text = config.read_text().replace("[http]\nenabled = false", '[http]\nenabled = true\nhost = "127.0.0.1"\nport = 0')
    text = text.replace('log_level = "DEBUG"', 'log_level = "WARNING"')
    config.write_text(text)
    stores_config = load(config)
    from dicomd.catalog import Catalog

    catalog = Catalog(stores_config.data_dir / "catalog.sqlite")
    Auth(catalog).add_user("admin", PASSWORD, admin=True)
    catalog.close()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dicomd", "serve", "--config", str(config)],
                            stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    try:
        assert proc.stderr is not None
        url = ""
        deadline = time.monotonic() + 60
        while not url and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            match = re.search(r"dicomd: HTTP API on (http://\S+)", line)
            url = match.group(1) if match else ""
        assert url, "the server did not announce its HTTP address"
        wait_for(lambda: requests.get(url + "/health", timeout=5).ok)
        assert requests.get(url + "/data/prearchive", timeout=5).status_code == 401
        body = zip_bytes(study_files(tmp_path, seed=13))
        response = requests.post(url + "/data/services/import?project=demo", data=body, auth=("admin", PASSWORD),
                                 headers={"Content-Type": "application/zip"}, timeout=30)
        assert response.status_code == 200 and response.text.startswith("/data/prearchive/projects/demo/")
        rows = requests.get(url + "/data/prearchive?format=json", auth=("admin", PASSWORD),
                            timeout=5).json()["ResultSet"]["Result"]
        assert len(rows) == 1 and rows[0]["instances"] == 4
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_https_when_a_certificate_is_configured(tmp_path: Path) -> None:
    """The reliability suite owns TLS end to end; this checks the HTTP server honours the keys."""
    if not (hasattr(HttpConfig(), "tls_cert") and shutil.which("openssl")):
        pytest.skip("no http.tls_cert in this build, or no openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    config = load(write_config(tmp_path, projects=PROJECTS))
    http = HttpConfig(enabled=True, host="127.0.0.1", port=0, tls_cert=str(cert), tls_key=str(key))  # type: ignore[call-arg]
    daemon = Daemon(dataclasses.replace(config, http=http)).start()
    try:
        assert daemon.stores is not None
        add_users(daemon.stores)
        (server,) = [s for s in daemon.services if type(s).__name__ == "HttpServer"]
        assert server.url.startswith("https://")
        with requests.Session() as http:
            wait_for(lambda: http.get(server.url + "/health", verify=str(cert), timeout=5).ok)
            response = http.get(server.url + "/data/JSESSION", auth=("admin", PASSWORD), verify=str(cert), timeout=5)
            assert response.status_code == 200
            assert "Secure" in response.headers["set-cookie"]
            response.close()
        del response  # an idle TLS keep-alive connection would hold the server's graceful stop
    finally:
        daemon.stop()
