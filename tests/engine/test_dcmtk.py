"""Conformance with dcmtk's storescu/echoscu (Debian's dcmtk, installed here when missing): many
contexts, small and large PDUs both ways, compressed and retired syntaxes sent as they are, DICOM
TLS; every instance is stored byte for byte as sent. Fails loudly under CI=true without dcmtk."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable

import pydicom
import pytest

from bench.tools import dcmtk_tool
from dicomd.catalog import PREARCHIVE
from dicomd.daemon import Daemon
from tests.engine.sendfiles import data_set, files_to_send
from tests.conftest import wait_for, write_config
from tests.reliability.test_security import pki  # noqa: F401  (the test CA and certificates)

PROPOSE = {"1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.4.51": "-xx", "1.2.840.10008.1.2.4.91": "-xw",
           "1.2.840.10008.1.2.4.90": "-xv", "1.2.840.10008.1.2.5": "-xr", "1.2.840.10008.1.2.4.80": "-xt",
           "1.2.840.10008.1.2.1.99": "-xd", "1.2.840.10008.1.2.2": "-xb", "1.2.840.10008.1.2": "-xi",
           "1.2.840.10008.1.2.1": "-xe"}  # storescu's option that proposes each syntax
COMPRESSED = ["SC_rgb_jpeg_dcmtk.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
              "image_dfl.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "JPEG-lossy.dcm",
              "SC_rgb_jpeg_lossy_gdcm.dcm", "CT_small.dcm", "rtplan.dcm"]


@pytest.fixture(scope="session")
def dcmtk() -> str:
    """Debian's dcmtk (the folder of its tools): installed with apt-get (as root) when missing.
    pynetdicom installs programs of the same names into the venv: those are skipped."""
    if dcmtk_tool("storescu") is None and os.geteuid() == 0:
        for command in (["apt-get", "install", "-y", "-q", "dcmtk"], ["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", "dcmtk"]):
            subprocess.run(command, capture_output=True, timeout=600,
                           env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            if dcmtk_tool("storescu"):
                break
    path = dcmtk_tool("storescu")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("dcmtk (storescu, echoscu) is needed for the conformance tests and could not be installed")
        pytest.skip("dcmtk is not installed")
    return str(Path(path).parent)


def _files(folder: Path) -> dict[str, Path]:
    return files_to_send(folder, COMPRESSED, seed=31, series=2, per_series=3, size=64)


def _same_data_set(a: Path, b: Path) -> bool:
    one, other = pydicom.dcmread(a), pydicom.dcmread(b)
    tags = {t for t in other.keys() if t != 0xFFFCFFFC}  # dcmtk drops trailing padding
    return tags == {t for t in one.keys() if t != 0xFFFCFFFC} and \
        all(one[t].value == other[t].value for t in tags if other[t].VR != "SQ")


def _stored(daemon: Daemon) -> dict[str, Path]:
    catalog = daemon.stores.catalog  # type: ignore[union-attr]
    root = daemon.config.data_dir
    return {i.sop_instance_uid: root / i.path for s in catalog.sessions(PREARCHIVE) for i in catalog.instances(s.id)}


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("ours, theirs", [(4096, 4096), (131072, 131072), (1048576, 16384)])
def test_storescu_every_syntax_at_any_pdu_size(tmp_path: Path, make_daemon: Callable[..., Daemon], dcmtk: str,
                                              ours: int, theirs: int) -> None:
    daemon = make_daemon(write_config(tmp_path, receiver=f"max_pdu_size = {ours}", engine="asyncio"))
    files = _files(tmp_path / "send")
    port = str(daemon.dicom_port())
    echo = _run(f"{dcmtk}/echoscu", "-aec", "DICOMD", "127.0.0.1", port)
    assert echo.returncode == 0, echo.stderr
    generated = [str(p) for p in files.values() if p.name.startswith("gen")]
    result = _run(f"{dcmtk}/storescu", "-aec", "DICOMD", "--max-pdu", str(theirs), "127.0.0.1", port, *generated)
    assert result.returncode == 0, result.stderr
    for path in files.values():  # -R and the file's own syntax proposed: it is sent as it is
        if not path.name.startswith("gen"):
            syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            result = _run(f"{dcmtk}/storescu", "-aec", "DICOMD", "-R", PROPOSE[syntax], "--max-pdu", str(theirs),
                          "127.0.0.1", port, str(path))
            assert result.returncode == 0, (path.name, result.stderr)
    stored = wait_for(lambda: (s := _stored(daemon)) and len(s) >= len(files) and s, timeout=20)
    assert set(stored) == set(files)
    for uid, sent in files.items():
        if sent.name.startswith("gen"):
            assert data_set(stored[uid]) == data_set(sent), sent.name
        else:  # dcmtk re-encodes some (explicit item lengths, re-deflated): the same data set
            assert _same_data_set(stored[uid], sent), sent.name
        assert str(pydicom.dcmread(stored[uid], stop_before_pixels=True).file_meta.TransferSyntaxUID) == \
            str(pydicom.dcmread(sent, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def test_storescu_proposing_every_context_it_knows(tmp_path: Path, make_daemon: Callable[..., Daemon],
                                                               dcmtk: str) -> None:
    daemon = make_daemon(write_config(tmp_path, engine="asyncio"))
    files = {uid: p for uid, p in _files(tmp_path / "all").items() if p.name.startswith("gen")}
    (tmp_path / "send").mkdir()
    for path in files.values():
        path.rename(tmp_path / "send" / path.name)
    files = {uid: tmp_path / "send" / p.name for uid, p in files.items()}
    port = str(daemon.dicom_port())
    # storescu's default: a context for each syntax of each SOP class it supports (~128 contexts)
    result = _run(f"{dcmtk}/storescu", "-aec", "DICOMD", "+sd", "127.0.0.1", port, str(tmp_path / "send"))
    assert result.returncode == 0, result.stderr
    stored = wait_for(lambda: (s := _stored(daemon)) and set(files) <= set(s) and s, timeout=20)
    for uid, sent in files.items():
        assert data_set(stored[uid]) == data_set(sent)


def test_storescu_over_tls(tmp_path: Path, make_daemon: Callable[..., Daemon], dcmtk: str, pki: Path) -> None:
    receiver = f'tls_cert = "{pki}/server.pem"\ntls_key = "{pki}/server.key"\ntls_ca = "{pki}/ca.pem"\n'
    daemon = make_daemon(write_config(tmp_path, receiver=receiver, engine="asyncio"))
    files = {uid: p for uid, p in _files(tmp_path / "send").items() if p.name.startswith("gen")}
    port = str(daemon.dicom_port())
    tls = ["+tls", f"{pki}/client.key", f"{pki}/client.pem", "+cf", f"{pki}/ca.pem"]
    echo = _run(f"{dcmtk}/echoscu", *tls, "-aec", "DICOMD", "127.0.0.1", port)
    assert echo.returncode == 0, echo.stderr
    result = _run(f"{dcmtk}/storescu", *tls, "-aec", "DICOMD", "127.0.0.1", port, *map(str, files.values()))
    assert result.returncode == 0, result.stderr
    stored = wait_for(lambda: (s := _stored(daemon)) and set(files) <= set(s) and s, timeout=20)
    assert all(data_set(stored[u]) == data_set(p) for u, p in files.items())
    # without a client certificate the TLS handshake fails and nothing is stored
    anonymous = _run(f"{dcmtk}/echoscu", "+tls", "-ic", "+cf", f"{pki}/ca.pem", "-aec", "DICOMD", "127.0.0.1", port)
    assert anonymous.returncode != 0
