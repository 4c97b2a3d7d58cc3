"""Conformance with Orthanc as a sending modality (issue 16; Debian's Orthanc, installed here when
missing): Orthanc's C-ECHO (``/modalities/{id}/echo``) succeeds, and instances uploaded over its REST
API and pushed with ``/modalities/{id}/store`` all reach the asyncio engine's prearchive, routed to
project ``demo``. JPEG baseline, JPEG 2000 and RLE arrive in the syntax they were uploaded in (Orthanc
transcodes nothing); generated and JPEG files byte for byte, the others as the same data set (the dcmtk
inside Orthanc writes explicit sequence lengths and drops trailing padding). Fails under CI=true
without Orthanc."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Iterator

import pydicom
import pytest
import requests

from bench.procs import free_port, wait_for_port
from bench.receivers import orthanc_config
from dicomd.catalog import PREARCHIVE
from dicomd.daemon import Daemon
from tests.engine.sendfiles import data_set, files_to_send
from tests.conftest import wait_for, write_config

BUNDLED = ["SC_rgb_jpeg_dcmtk.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "CT_small.dcm"]  # pydicom's test files


@pytest.fixture(scope="session")
def orthanc_binary() -> str:
    """Debian's Orthanc: installed with apt-get (as root) when missing. The package may start a
    system service on 4242/8042: the one our install started is stopped; tests start their own
    Orthanc on free ports and never talk to a system one."""
    if shutil.which("Orthanc") is None and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "install", "-y", "-q", "orthanc"], ["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", "orthanc"]):
            subprocess.run(command, capture_output=True, timeout=600, env=env)
            if shutil.which("Orthanc"):
                subprocess.run(["service", "orthanc", "stop"], capture_output=True, timeout=60, env=env)
                break
    path = shutil.which("Orthanc")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Orthanc is needed for the conformance test and could not be installed")
        pytest.skip("Orthanc is not installed")
    return path


@pytest.fixture
def orthanc(tmp_path: Path, orthanc_binary: str) -> Iterator[Callable[[int], str]]:
    """Start Orthanc with a modality ``dicomd`` at 127.0.0.1:port; returns its REST base URL."""
    started: list[subprocess.Popen[bytes]] = []

    def start(dicomd_port: int) -> str:
        work = tmp_path / "orthanc"
        (work / "storage").mkdir(parents=True)
        port, http_port = free_port(), free_port()
        while http_port == port:
            http_port = free_port()
        config = orthanc_config(work, port, http_port, 131072)
        config["DicomModalities"] = {"dicomd": ["DICOMD", "127.0.0.1", dicomd_port]}
        (work / "orthanc.json").write_text(json.dumps(config, indent=2))
        with (work / "orthanc.log").open("wb") as log:
            proc = subprocess.Popen([orthanc_binary, "--verbose", str(work / "orthanc.json")], stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        started.append(proc)
        wait_for_port(http_port, proc)
        return f"http://127.0.0.1:{http_port}"

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _files(folder: Path) -> dict[str, Path]:
    return files_to_send(folder, BUNDLED, seed=16, series=1, per_series=3, size=32)


def _syntax(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def _same_data_set(a: Path, b: Path) -> bool:
    """Equal element by element, into sequences, pixel data included; trailing padding ignored."""
    one, other = pydicom.dcmread(a), pydicom.dcmread(b)
    for ds in (one, other):
        ds.pop(0xFFFCFFFC, None)  # Orthanc (dcmtk) drops Data Set Trailing Padding
    return one == other


def _stored(daemon: Daemon) -> dict[str, tuple[str, str, Path]]:
    """SOP Instance UID -> (project, source, file) of every instance in the prearchive."""
    catalog = daemon.stores.catalog  # type: ignore[union-attr]
    root = daemon.config.data_dir
    return {i.sop_instance_uid: (s.project, i.source, root / i.path)
            for s in catalog.sessions(PREARCHIVE) for i in catalog.instances(s.id)}


def _upload(base: str, files: dict[str, Path]) -> list[str]:
    """POST each file to Orthanc's /instances; returns Orthanc's instance IDs."""
    ids = []
    for path in files.values():
        answer = requests.post(f"{base}/instances", data=path.read_bytes(), timeout=30)
        assert answer.ok and answer.json()["Status"] == "Success", (path.name, answer.text)
        ids.append(str(answer.json()["ID"]))
    return ids


def test_orthanc_pushes_every_instance_through_its_rest_api(tmp_path: Path, make_daemon: Callable[..., Daemon],
                                                            orthanc: Callable[[int], str]) -> None:
    # Given: dicomd on the asyncio engine, and Orthanc holding generated and compressed instances
    daemon = make_daemon(write_config(tmp_path, engine="asyncio"))
    base = orthanc(daemon.dicom_port())
    files = _files(tmp_path / "send")
    ids = _upload(base, files)
    # When: Orthanc echoes and then pushes them all to its modality "dicomd"
    echo = requests.post(f"{base}/modalities/dicomd/echo", json={}, timeout=30)
    assert echo.ok, echo.text
    store = requests.post(f"{base}/modalities/dicomd/store", json={"Resources": ids, "Synchronous": True},
                          timeout=120)
    assert store.ok, store.text
    assert (store.json()["InstancesCount"], store.json()["FailedInstancesCount"]) == (len(files), 0), store.text
    # Then: each is in the prearchive of project demo, in the syntax it was uploaded in (Orthanc
    # transcodes nothing: dicomd accepts the compressed syntaxes it proposes)
    stored = wait_for(lambda: (s := _stored(daemon)) and len(s) >= len(files) and s, timeout=20,
                      message="not every instance Orthanc pushed reached the prearchive")
    assert set(stored) == set(files)
    for uid, sent in files.items():
        project, source, path = stored[uid]
        assert (project, source) == ("demo", "DICOM:ORTHANC@127.0.0.1"), sent.name
        assert _syntax(path) == _syntax(sent), sent.name
        if sent.name.startswith("gen") or sent.name == "SC_rgb_jpeg_dcmtk.dcm":
            assert data_set(path) == data_set(sent), sent.name
        else:  # dcmtk inside Orthanc re-encodes: explicit sequence and item lengths, no trailing padding
            assert _same_data_set(path, sent), sent.name
