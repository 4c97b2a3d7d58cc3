"""Security: DICOM TLS (mutual, pynetdicom ssl_context) and HTTPS from the config, owner-only
stores (folders 0700, files 0600), TLS config validation."""

from __future__ import annotations

import ssl
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
from pynetdicom import AE, StoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomd.config import load
from dicomd.daemon import Daemon
from dicomd.errors import ConfigError
from dicomd.testing.generator import generate_study
from tests.conftest import write_config, wait_for


@pytest.fixture(autouse=True)
def _restore_tempdir() -> Iterator[None]:
    before = tempfile.tempdir
    yield
    tempfile.tempdir = before


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate (EC P-256, 1 day)."""
    d = tmp_path_factory.mktemp("pki")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=dicomd test CA", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.pem", "-days", "1", "-extfile", "san.ext", cwd=d)
    return d


def _tls_config(tmp_path: Path, pki: Path, http: bool = False) -> Path:
    receiver = f'tls_cert = "{pki}/server.pem"\ntls_key = "{pki}/server.key"\ntls_ca = "{pki}/ca.pem"\n'
    path = write_config(tmp_path, receiver=receiver)
    if http:
        text = path.read_text().replace(
            "[http]\nenabled = false\n",
            f'[http]\nenabled = true\nport = 0\ntls_cert = "{pki}/server.pem"\ntls_key = "{pki}/server.key"\n',
        )
        path.write_text(text)
    return path


def _client_context(pki: Path, with_cert: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki / "ca.pem"))
    if with_cert:
        context.load_cert_chain(str(pki / "client.pem"), str(pki / "client.key"))
    return context


def _associate(port: int, context: ssl.SSLContext | None):  # type: ignore[no-untyped-def]
    ae = AE(ae_title="TLSSCU")
    ae.requested_contexts = StoragePresentationContexts[:100]
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    tls = (context, "127.0.0.1") if context else None
    return ae.associate("127.0.0.1", port, ae_title="DICOMD", tls_args=tls)


@pytest.mark.both_engines
def test_dicom_tls_with_client_certificates(tmp_path: Path, pki: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(_tls_config(tmp_path, pki))
    port = daemon.dicom_port()
    assoc = _associate(port, _client_context(pki))
    assert assoc.is_established
    try:
        statuses = [int(assoc.send_c_store(ds).Status) for ds in generate_study(4, series=1, instances_per_series=2, rows=8, cols=8)]
    finally:
        assoc.release()
    assert statuses == [0, 0]
    assert not _associate(port, None).is_established  # plain DICOM on a TLS port
    assert not _associate(port, _client_context(pki, with_cert=False)).is_established  # no client certificate
    assert _associate(port, _client_context(pki)).is_established  # the daemon kept serving


def test_https(tmp_path: Path, pki: Path, make_daemon: Callable[..., Daemon]) -> None:
    pytest.importorskip("dicomd.http.server")
    daemon = make_daemon(_tls_config(tmp_path, pki, http=True))
    server = next(s for s in daemon.services if type(s).__name__ == "HttpServer")
    assert server.url.startswith("https://")
    reply = wait_for(lambda: _get(f"{server.url}/health", pki))
    assert reply.status_code == 200
    with pytest.raises(httpx.HTTPError):
        httpx.get(server.url.replace("https://", "http://") + "/health", timeout=5)


def _get(url: str, pki: Path) -> httpx.Response | None:
    try:
        return httpx.get(url, verify=str(pki / "ca.pem"), timeout=5)
    except httpx.ConnectError:
        return None


def test_tls_config_is_checked(tmp_path: Path, pki: Path) -> None:
    path = write_config(tmp_path, receiver=f'tls_cert = "{pki}/server.pem"\n')
    with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
        load(path)
    path = write_config(tmp_path, receiver='tls_cert = "nope.pem"\ntls_key = "nope.key"\n')
    with pytest.raises(ConfigError, match="tls_cert: no such file"):
        load(path)
    config = load(_tls_config(tmp_path, pki))
    assert config.receivers[0].tls_ca == f"{pki}/ca.pem"


def test_stores_are_owner_only(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    config = write_config(tmp_path, projects="[projects.auto]\nauto_archive = 4\n")
    daemon = make_daemon(config)
    from tests.conftest import send

    study = generate_study(9, series=2, instances_per_series=2, rows=8, cols=8, study_description="auto")
    assert send(daemon.dicom_port(), study) == [0] * 4
    bad = generate_study(10, series=1, instances_per_series=1, rows=8, cols=8)[0]
    del bad.StudyInstanceUID
    assert send(daemon.dicom_port(), [bad]) == [0xC000]  # a quarantine entry too
    catalog = daemon.stores.catalog
    wait_for(lambda: catalog.sessions("archive") and not catalog.sessions("prearchive"))
    data = daemon.config.data_dir
    daemon.stop()
    loose = []
    for path in [data, *data.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        if path.is_dir() and mode & 0o077:
            loose.append(f"{path.relative_to(data.parent)}: folder {oct(mode)}")
        elif path.is_file() and mode & 0o077:
            loose.append(f"{path.relative_to(data.parent)}: file {oct(mode)}")
    assert not loose, "\n".join(loose)
