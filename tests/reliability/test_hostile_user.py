"""Hostile peers and users: no request may brick the daemon, overwrite data, exhaust it or escalate.

Every attack runs against a real daemon on loopback (DICOM and HTTP on port 0, real SQLite, real
files) or, where only the app is the point, the real app in-process. After each attack the daemon
still serves, and where the test runs a daemon, a daemon restarted on the same data dir comes back.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import logging
import re
import selectors
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pydicom
import pytest
import requests
from click.testing import CliRunner
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import _config as pynetdicom_config
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomd.catalog import PREARCHIVE
from dicomd.cli import main
from dicomd.config import load
from dicomd.errors import ConfigError
from dicomd.daemon import Daemon
from dicomd.testing.generator import generate_study
from dicomd.ingest import Source
from dicomd.routing import Explicit
from tests.conftest import send, wait_for, write_config
from tests.http.conftest import PASSWORD, Site, add_users, site, stage, study_files, zip_bytes  # noqa: F401 - site is a fixture
from tests.reliability.harness import echo


@pytest.fixture(autouse=True)
def _restore_tempdir() -> Iterator[None]:
    """The daemon points the process-wide temp folder into its data dir; put it back afterwards."""
    before = tempfile.tempdir
    yield
    tempfile.tempdir = before


# ---------------------------------------------------------------------------------- a live daemon


def hostile_config(tmp_path: Path, *, http: str = "", top: str = "", receiver: str = "",
                   projects: str | None = None) -> Path:
    """write_config with HTTP on port 0; ``http`` adds keys to [http], ``top`` top-level keys."""
    path = write_config(tmp_path, extra=http, receiver=receiver, projects=projects)
    text = path.read_text().replace("[http]\nenabled = false\n", "[http]\nenabled = true\nport = 0\n", 1)
    keys = {line.split("=")[0].strip() for line in top.splitlines() if "=" in line}
    text = "\n".join(line for line in text.splitlines() if line.split("=")[0].strip() not in keys)
    path.write_text(top + "\n" + text + "\n")
    return path


@dataclass
class Live:
    """A real daemon (DICOM + HTTP on loopback) and the means to restart it on the same data dir."""

    daemon: Daemon
    config: Path
    make: Callable[..., Daemon]

    @property
    def url(self) -> str:
        (server,) = [s for s in self.daemon.services if type(s).__name__ == "HttpServer"]
        return server.url  # type: ignore[attr-defined,no-any-return]

    @property
    def port(self) -> int:
        return self.daemon.dicom_port()

    def serves(self) -> None:
        """Health, a login and a C-ECHO all answer."""
        assert requests.get(self.url + "/health", timeout=10).status_code == 200
        assert requests.get(self.url + "/data/auth", auth=("admin", PASSWORD), timeout=10).status_code == 200
        assert echo(self.port)

    def restart(self) -> None:
        """Stop the daemon, start a new one on the same config and data dir, and see it serve."""
        self.daemon.stop()
        self.daemon = self.make(self.config)
        wait_for(lambda: _health(self.url), timeout=20, message="restarted daemon does not answer /health")
        self.serves()


def _health(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def start_live(tmp_path: Path, make_daemon: Callable[..., Daemon], **config: str) -> Live:
    path = hostile_config(tmp_path, **config)
    daemon = make_daemon(path)
    assert daemon.stores is not None
    add_users(daemon.stores)
    live = Live(daemon, path, make_daemon)
    wait_for(lambda: _health(live.url), timeout=20)
    return live


@pytest.fixture
def live(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> Live:
    return start_live(tmp_path, make_daemon)


def prearchive_instances(daemon: Daemon) -> list:
    catalog = daemon.stores.catalog  # type: ignore[union-attr]
    return [i for s in catalog.sessions(PREARCHIVE) for i in catalog.instances(s.id)]


# ---------------------------------------------------------------------------------- B: file names


LONG = "1.2.826.0.1.3680043.2.1143." + "1" * 120  # 147 characters: cut at 128, it loses its tail
COLLIDING_UIDS = [
    ("1.2.3.4.5", "1.2.3.4.5."),  # a trailing dot was dropped
    ("1.2.3.99/1", "1.2.3.99_1"),  # odd characters became _
    (LONG + "1", LONG + "2"),  # both cut at 128 characters
    ("..1.2.3", "1.2.3.."),  # leading and trailing dots
]


def _with_uid(ds: Dataset, uid: str, folder: Path) -> Path:
    """A file for ``ds`` whose SOP Instance UID is ``uid``; its file meta keeps a valid UID, so a
    standard SCU sends it (pynetdicom sending files in chunks takes the command's UID from the meta
    and the data set as it is in the file)."""
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.preamble = b"\0" * 128
    path = folder / f"{generate_uid()}.dcm"
    ds.save_as(path, enforce_file_format=False)  # as it is: the file format check would redo the meta
    return path


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
@pytest.mark.parametrize("first,second", COLLIDING_UIDS)
def test_look_alike_sop_instance_uids_never_share_a_file(
        first: str, second: str, tmp_path: Path, live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)  # send the files' bytes as they are
    # Given two instances of one series whose SOP Instance UIDs clean to the same name
    a, b = generate_study(31, series=1, instances_per_series=2, rows=16, cols=16, study_description="demo")
    sent = {first: _with_uid(a, first, tmp_path), second: _with_uid(b, second, tmp_path)}
    # When both are sent over a real C-STORE association
    assert send(live.port, [str(p) for p in sent.values()]) == [0, 0]  # type: ignore[list-item]
    # Then both are stored intact in distinct files, and each catalog row points at its own file
    rows = {i.sop_instance_uid: i for i in prearchive_instances(live.daemon)}
    assert set(rows) == {first, second}
    assert rows[first].path != rows[second].path
    layout = live.daemon.stores.layout  # type: ignore[union-attr]
    for uid, path in sent.items():
        stored = pydicom.dcmread(layout.resolve(rows[uid].path))
        original = pydicom.dcmread(path)
        assert stored.SOPInstanceUID == uid
        assert stored.PixelData == original.PixelData
        assert layout.resolve(rows[uid].path).read_bytes().endswith(_dataset_bytes(path))
    live.serves()
    live.restart()
    assert {i.sop_instance_uid for i in prearchive_instances(live.daemon)} == {first, second}


def _dataset_bytes(path: Path) -> bytes:
    """The data set of a DICOM file as a sender puts it on the wire (everything after the meta)."""
    with open(path, "rb") as fh:
        pydicom.filereader.read_preamble(fh, False)
        pydicom.filereader._read_file_meta_info(fh)
        return fh.read()


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_look_alike_series_uids_get_their_own_scans(tmp_path: Path, live: Live) -> None:
    # Given two series without a Series Number whose Series Instance UIDs clean to one name
    study = generate_study(32, series=2, instances_per_series=1, rows=16, cols=16, study_description="demo")
    for ds, series_uid in zip(study, ("1.2.3.4.5", "1.2.3.4.5.")):
        ds.SeriesInstanceUID = series_uid
        del ds.SeriesNumber
    assert send(live.port, study) == [0, 0]
    # Then each series is a scan of its own
    rows = prearchive_instances(live.daemon)
    assert len({r.scan_id for r in rows}) == 2
    live.serves()


# ---------------------------------------------------------------------------------- C: zip bombs


def test_a_zip_bomb_stops_at_the_free_space_floor(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    # Given a data disk whose free-space floor lies 96 MiB below what is free now
    room = 96 * 2**20
    floor = shutil.disk_usage(tmp_path).free - room
    live = start_live(tmp_path, make_daemon, top=f"min_free_bytes = {floor}")
    # and a 1 MB zip of two real instances and 12 members of 32 MiB of zeros (384 MiB expanded)
    study = study_files(tmp_path, seed=41)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in study[:2]:
            zf.write(path, f"dicom/{path.name}")
        for n in range(12):
            zf.writestr(f"dicom/zeros{n:02d}.dcm", bytes(32 * 2**20))
    assert len(bomb.getvalue()) < 2**20
    # When it is uploaded
    reply = requests.post(live.url + "/data/services/import?project=demo", data=bomb.getvalue(),
                          auth=("admin", PASSWORD), timeout=120)
    # Then extraction stops at the floor: 507, nothing staged, no temporary file left behind
    assert reply.status_code == 507, reply.text
    assert prearchive_instances(live.daemon) == []
    tmp = live.daemon.config.data_dir / "tmp"
    assert [p.name for p in tmp.iterdir()] == []
    assert shutil.disk_usage(tmp_path).free > floor
    live.serves()
    live.restart()


# ---------------------------------------------------------------------------------- A: request limits


def _peak_rss_kib() -> int:
    """This process's peak resident set since the last reset (VmHWM), in KiB."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from the current RSS


def _raw_request(url: str, head: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(head.encode("latin-1"))
    return sock


def _read_status(sock: socket.socket) -> int:
    """The status code of the reply on ``sock`` (its socket timeout is the deadline)."""
    data = b""
    while b"\r\n" not in data:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    assert data.startswith(b"HTTP/1.1 "), f"no reply, got {data[:200]!r}"
    return int(data.split(b" ", 2)[1])


class BodySender(threading.Thread):
    """Streams ``total`` body bytes (chunked framing when ``chunked``) until the peer stops reading."""

    def __init__(self, sock: socket.socket, total: int, *, chunked: bool = False) -> None:
        super().__init__(daemon=True)
        self.sock, self.total, self.chunked = sock, total, chunked
        self.sent = 0

    def run(self) -> None:
        block = b"a=" + b"x" * (2**20 - 2)
        try:
            while self.sent < self.total:
                data = b"%x\r\n%s\r\n" % (len(block), block) if self.chunked else block
                self.sock.sendall(data)
                self.sent += len(block)
            if self.chunked:
                self.sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection: the point


def test_a_huge_declared_login_body_is_refused_before_it_is_read(live: Live) -> None:
    # Given an anonymous client declaring a 512 MiB login form and streaming it
    total = 512 * 2**20
    _reset_peak_rss()
    before = _peak_rss_kib()
    sock = _raw_request(live.url, "PUT /data/services/auth HTTP/1.1\r\nHost: dicomd\r\n"
                        "Content-Type: application/x-www-form-urlencoded\r\n"
                        f"Content-Length: {total}\r\n\r\n")
    sender = BodySender(sock, total)
    sender.start()
    # Then the reply is 413, and the server (this process) did not take the body into memory
    try:
        status = _read_status(sock)
    finally:
        sender.join(timeout=60)
        sock.close()
    grown_mib = (_peak_rss_kib() - before) / 1024
    assert grown_mib < 64, f"peak RSS grew by {grown_mib:.0f} MiB"
    assert status == 413
    assert sender.sent < total  # the connection was closed, not read to its end
    live.serves()
    live.restart()


def test_a_streamed_chunked_body_is_cut_at_the_bound(live: Live) -> None:
    # Given chunked bodies (no Content-Length) far over the bound of their paths
    for head in ("PUT /data/services/auth HTTP/1.1\r\nHost: dicomd\r\n"  # 16 KiB, anonymous
                 "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n",
                 "POST /data/services/archive HTTP/1.1\r\nHost: dicomd\r\n"  # 1 MiB, logged in
                 f"Authorization: Basic {base64.b64encode(f'admin:{PASSWORD}'.encode()).decode()}\r\n"
                 "Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"):
        total = 256 * 2**20
        sock = _raw_request(live.url, head)
        sender = BodySender(sock, total, chunked=True)
        sender.start()
        # Then the server answers 413 while the body is still coming, and stops reading it
        try:
            assert _read_status(sock) == 413
        finally:
            sender.join(timeout=60)
            sock.close()
        assert sender.sent < total
    live.serves()


def test_slow_header_clients_are_dropped_and_others_served(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    live = start_live(tmp_path, make_daemon, http="header_timeout = 2")
    # Given 300 clients that send half a request head and then nothing
    host, port = live.url.removeprefix("http://").split(":")
    slow = []
    for _ in range(300):
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: dicomd\r\nX-Slow: ")
        slow.append(sock)
    try:
        # Then a normal request is answered while they are connected
        assert requests.get(live.url + "/data/auth", auth=("admin", PASSWORD), timeout=10).status_code == 200
        # and every slow client is dropped by the server
        selector = selectors.DefaultSelector()
        for sock in slow:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        open_ = set(slow)
        deadline = time.monotonic() + 60
        while open_ and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                sock = key.fileobj
                try:
                    data = sock.recv(4096)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    open_.discard(sock)  # type: ignore[arg-type]
        assert not open_, f"{len(open_)} slow clients still connected"
    finally:
        for sock in slow:
            sock.close()
    live.serves()
    live.restart()


# ---------------------------------------------------------------------------------- D: password guessing


def _from(site: Site, address: str, **kwargs: Any) -> TestClient:
    """An in-process client whose requests come from ``address``."""
    return TestClient(site.client.app, client=(address, 40000), **kwargs)


def _serves(site: Site) -> None:
    """A fresh, honest client from an address nobody attacked from is served."""
    assert _from(site, "192.0.2.250").get("/data/auth", auth=("admin", PASSWORD)).status_code == 200


def test_password_guessing_is_throttled_per_user(site: Site) -> None:
    # Given five wrong passwords for one user, each from another address
    for n in range(5):
        assert _from(site, f"10.0.1.{n}").get("/data/auth", auth=("member", f"guess-{n}")).status_code == 401
    # Then the right password is refused too, from anywhere and through every door, until the back-off ends
    reply = _from(site, "10.0.1.9").get("/data/auth", auth=("member", PASSWORD))
    assert reply.status_code == 429 and int(reply.headers["retry-after"]) >= 1
    form = _from(site, "10.0.1.9").put("/data/services/auth", data={"username": "member", "password": PASSWORD})
    assert form.status_code == 429 and "retry-after" in form.headers
    assert _from(site, "10.0.1.10").get("/data/auth", auth=("collab", PASSWORD)).status_code == 200  # others not
    wait_for(lambda: _from(site, "10.0.1.11").get("/data/auth", auth=("member", PASSWORD)).status_code == 200,
             timeout=30, interval=0.2, message="the back-off never ended")
    # and the success reset the user: a mistake is a plain 401 again
    assert _from(site, "10.0.1.12").get("/data/auth", auth=("member", "typo-pass")).status_code == 401
    _serves(site)


def test_password_spraying_is_throttled_per_address(site: Site) -> None:
    # Given one address trying five different names (one of them forged to look like a log line)
    sprayer = _from(site, "10.0.2.1")
    for name in ("root", "alice", "bob", "evil\nINFO fake line", "owner"):
        assert sprayer.get("/data/auth", auth=(name, "Winter2024!")).status_code == 401
    # Then that address is refused even for a right password (a form login too), others are not
    assert sprayer.get("/data/auth", auth=("admin", PASSWORD)).status_code == 429
    assert sprayer.put("/data/services/auth", data={"username": "admin", "password": PASSWORD}).status_code == 429
    assert _from(site, "10.0.2.2").get("/data/auth", auth=("admin", PASSWORD)).status_code == 200
    # and the failures and the lock-out are audited, names escaped, passwords nowhere
    events = site.stores.catalog.events(kinds=["login_failed", "login_locked"], limit=100)
    failed = [e["detail"] for e in events if e["kind"] == "login_failed"]
    assert len(failed) == 5 and {"user": "evil\\x0aINFO fake line", "address": "10.0.2.1", "via": "basic"} in failed
    assert any(e["detail"].get("address") == "10.0.2.1" for e in events if e["kind"] == "login_locked")
    assert "Winter2024" not in json.dumps(events)
    _serves(site)


def test_an_alias_token_cannot_mint_tokens(site: Site) -> None:
    # Given an alias token of a member
    member = site.as_user("member")
    token = member.get("/data/services/tokens/issue").json()
    assert member.get("/data/auth").status_code == 200
    # Then neither the token, nor a session opened with it (cookie or form login), can issue another
    with_token = TestClient(site.client.app)
    with_token.auth = (token["alias"], token["secret"])
    assert with_token.get("/data/auth").text == "User 'member' is logged in"
    assert with_token.get("/data/services/tokens/issue").status_code == 403
    session_id = with_token.get("/data/JSESSION").text
    cookie = TestClient(site.client.app, cookies={"JSESSIONID": session_id})
    assert cookie.get("/data/services/tokens/issue").status_code == 403
    form = TestClient(site.client.app)
    assert form.put("/data/services/auth", data={"username": token["alias"], "password": token["secret"]}).status_code == 200
    assert form.get("/data/services/tokens/issue").status_code == 403
    # while the password still can
    assert member.get("/data/services/tokens/issue").status_code == 200
    _serves(site)


def test_a_password_change_revokes_sessions_and_tokens(site: Site) -> None:
    # Given a member with a login session and an alias token
    member = site.as_user("member")
    session_id = member.get("/data/JSESSION").text
    token = member.get("/data/services/tokens/issue").json()
    cookie = TestClient(site.client.app, cookies={"JSESSIONID": session_id})
    by_token = TestClient(site.client.app)
    by_token.auth = (token["alias"], token["secret"])
    assert cookie.get("/data/auth").status_code == 200 and by_token.get("/data/auth").status_code == 200
    # When an operator sets a new password
    result = CliRunner().invoke(main, ["user", "password", "member", "--password-stdin",
                                       "--config", str(site.tmp / "dicomd.toml")], input="a-new-password-2\n")
    assert result.exit_code == 0, result.output
    # Then the session, the token and the old password are dead; the new password works
    assert cookie.get("/data/auth").status_code == 401
    assert by_token.get("/data/auth").status_code == 401
    assert site.as_user("member").get("/data/auth").status_code == 401
    fresh = TestClient(site.client.app)
    fresh.auth = ("member", "a-new-password-2")
    assert fresh.get("/data/auth").status_code == 200
    _serves(site)


# ---------------------------------------------------------------------------------- E: cross-site requests


def test_cross_site_requests_are_refused(site: Site, tmp_path: Path) -> None:
    upload = zip_bytes(study_files(tmp_path, seed=61))
    session_id = site.as_user("member").get("/data/JSESSION").text
    cookie = TestClient(site.client.app, cookies={"JSESSIONID": session_id})
    basic = site.as_user("member")
    # Given state-changing requests a hostile page makes a browser send, with its cookie or cached basic auth
    forged = [{"Origin": "http://evil.example"}, {"Referer": "http://evil.example/page.html"},
              {"Origin": "null"}, {"Origin": "http://testserver.evil.example"}]
    for client in (cookie, basic):
        for headers in forged:
            reply = client.post("/data/services/import?project=demo&session=forged", content=upload,
                                headers={**headers, "Content-Type": "application/zip"})
            assert reply.status_code == 403, (headers, reply.text)
    assert cookie.post("/data/services/import?project=demo&session=forged", content=upload,
                       headers={"Sec-Fetch-Site": "cross-site", "Content-Type": "application/zip"}).status_code == 403
    assert cookie.delete("/data/JSESSION", headers={"Origin": "http://evil.example"}).status_code == 403
    # Then nothing was staged and the session was not logged out
    assert site.stores.catalog.sessions(PREARCHIVE) == []
    assert cookie.get("/data/auth").status_code == 200
    # while same-origin browser requests and programs that send no Origin (xnatpy, curl) go through
    same = cookie.post("/data/services/import?project=demo&session=same", content=upload,
                       headers={"Origin": "http://testserver", "Content-Type": "application/zip"})
    assert same.status_code == 200, same.text
    program = basic.post("/data/services/import?project=demo&session=program", content=upload)
    assert program.status_code == 200, program.text
    assert sorted(s.label for s in site.stores.catalog.sessions(PREARCHIVE)) == ["program", "same"]
    _serves(site)


# ---------------------------------------------------------------------------------- F: CSV and log injection


FORMULAS = ['=HYPERLINK("http://evil.example/","x")', "+1+cmd|' /C calc'!A0", "-2-3", "@SUM(A1:A9)",
            "\t=1+1", "\r=1+1"]


def test_csv_cells_cannot_start_formulas(site: Site, tmp_path: Path) -> None:
    # Given a staged instance whose header values (sent by a peer) start formulas
    (ds,) = generate_study(71, series=1, instances_per_series=1, rows=8, cols=8)
    ds.StudyDescription, ds.SeriesDescription, ds.InstitutionName = FORMULAS[:3]
    ds.InstitutionalDepartmentName, ds.StationName, ds.ReferringPhysicianName = FORMULAS[3:]
    path = tmp_path / "formula.dcm"
    ds.save_as(path, enforce_file_format=True)
    staged = site.stores.ingest.stage(path, Source(kind="CLI", explicit=Explicit(project="demo")))
    # When its header is listed as CSV
    reply = site.as_user("member").get(f"/data/services/dicomdump?src=/prearchive/projects/demo/"
                                       f"{staged.session.timestamp}/{staged.session.label}&format=csv")
    assert reply.status_code == 200
    # Then no cell starts a formula: each such value is prefixed with a quote
    cells = [cell for row in csv.reader(io.StringIO(reply.text, newline="")) for cell in row]
    for value in FORMULAS:  # (the dump shows values stripped of leading whitespace)
        assert any(c.startswith("'") and c.endswith(value.lstrip("\t\r")) for c in cells), value
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    _serves(site)


def _associate_raw(port: int, calling: bytes, called: bytes = b"DICOMD") -> bytes:
    """An A-ASSOCIATE-RQ with ``calling`` (16 bytes, anything) as the calling AE title; the start of the reply
    PDU (type, reserved, length, reserved, result, source, reason for an A-ASSOCIATE-RJ)."""
    prim = A_ASSOCIATE()
    prim.application_context_name = "1.2.840.10008.3.1.1.1"
    prim.calling_ae_title, prim.called_ae_title = "PLACEHOLDER", "DICOMD"
    context = build_context(Verification)
    context.context_id = 1
    prim.presentation_context_definition_list = [context]
    length = MaximumLengthNotification()
    length.maximum_length_received = 16382
    prim.user_information = [length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(prim)
    data = bytearray(pdu.encode())
    data[10:26] = called.ljust(16)[:16]  # the called AE title field of the PDU (PS3.8 9.3.2)
    data[26:42] = calling.ljust(16)[:16]  # the calling AE title field
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(bytes(data))
        reply = b""
        while len(reply) < 10 and (chunk := sock.recv(10 - len(reply))):
            reply += chunk
        return reply


def test_a_peer_ae_title_cannot_forge_log_lines(tmp_path: Path, make_daemon: Callable[..., Daemon],
                                                caplog: pytest.LogCaptureFixture) -> None:
    live = start_live(tmp_path, make_daemon, receiver='allowed = ["SCANNER", "PROBE"]')
    caplog.set_level(logging.DEBUG)
    # Given a peer whose calling AE title holds a newline and a fake log line
    forged = b"X\nERROR forged!!!"
    # When it asks for an association (refused: it is not on the allowlist, which is logged)
    assert _associate_raw(live.port, forged)[:1] in (b"\x03", b"\x07")  # A-ASSOCIATE-RJ or A-ABORT
    wait_for(lambda: "forged" in caplog.text, timeout=10, message="the refusal was not logged")
    # Then its title shows up escaped, never as a line of its own
    lines = caplog.text.splitlines()
    assert not [line for line in lines if line.lstrip().startswith("ERROR forged")], caplog.text
    assert any("X\\x0aERROR forged" in line for line in lines)
    live.serves()
    live.restart()


# ---------------------------------------------------------------------------------- G: project names


@pytest.mark.parametrize("projects,key,clash", [
    ('[projects.a]\n[projects.b]\naliases = ["A"]\n', "projects.b.aliases", "the ID of project 'a'"),
    ('[projects.a]\naliases = ["shared"]\n[projects.b]\naliases = ["Shared"]\n', "projects.b.aliases",
     "also an alias of project 'a'"),
    ('[projects.demo]\n[projects.Demo]\n', "projects.Demo", "projects.demo"),
])
def test_a_project_name_means_one_project(projects: str, key: str, clash: str, tmp_path: Path) -> None:
    # Given a config where one name could mean two projects
    path = write_config(tmp_path, projects=projects)
    # Then loading it is an error naming the key and the file
    with pytest.raises(ConfigError) as refused:
        load(path)
    assert str(path) in str(refused.value) and key in str(refused.value) and clash in str(refused.value)
    # and `dicomd user add --project` refuses it as well, creating no user
    result = CliRunner().invoke(main, ["user", "add", "bob", "--project", "A", "--role", "owner", "--password-stdin",
                                       "--config", str(path)], input="a-long-password\n")
    assert result.exit_code != 0 and key in result.output
    assert not (tmp_path / "data" / "catalog.sqlite").exists() or not _user_names(tmp_path)


def _user_names(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "data" / "catalog.sqlite") as conn:
        try:
            return [r[0] for r in conn.execute("SELECT name FROM users")]
        except sqlite3.OperationalError:
            return []


def test_user_add_resolves_an_alias_to_its_project(tmp_path: Path) -> None:
    path = write_config(tmp_path)  # demo has the alias DEMO
    result = CliRunner().invoke(main, ["user", "add", "bob", "--project", "DEMO", "--role", "member",
                                       "--password-stdin", "--config", str(path)], input="a-long-password\n")
    assert result.exit_code == 0, result.output
    listed = CliRunner().invoke(main, ["user", "list", "--json", "--config", str(path)])
    assert json.loads(listed.output) == [{"name": "bob", "admin": False, "roles": {"demo": "member"}}]


# ---------------------------------------------------------------------------------- H: hardening


@pytest.mark.parametrize("bad_id", ["abc", "1.5", 1.5, -1, "-1", 10**30, True, [1], "1e3"])
def test_a_bad_mapping_id_is_a_400(site: Site, bad_id: Any) -> None:
    body = {"id": bad_id, "scope": "site", "fieldName": "scanner", "fieldType": "string", "dicomTag": "0x00081090"}
    reply = site.as_user("admin").put("/xapi/dicom_mappings/update", json=body)
    assert reply.status_code == 400, reply.text
    _serves(site)


def test_error_replies_name_no_server_path(site: Site, tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    data_dir = str(site.stores.layout.root.resolve())
    upload = zip_bytes(study_files(tmp_path, seed=81))
    # Given a store that cannot create a session folder (a file where the project folder goes)
    (site.stores.layout.prearchive / "demo").write_text("in the way")
    reply = site.as_user("member").post("/data/services/import?project=demo", content=upload)
    assert reply.status_code == 500 and reply.text and data_dir not in reply.text, reply.text
    (site.stores.layout.prearchive / "demo").unlink()
    _serves(site)
    # and a daemon whose disk is below the free-space floor
    (tmp_path / "full").mkdir()
    live = start_live(tmp_path / "full", make_daemon, top=f"min_free_bytes = {2**62}")
    reply = requests.post(live.url + "/data/services/import?project=demo", data=upload, auth=("admin", PASSWORD),
                          timeout=30)
    assert reply.status_code == 507 and str(live.daemon.config.data_dir) not in reply.text, reply.text
    assert "/" not in reply.text.replace("data_dir", "")
    live.serves()


def _counts(page: str) -> int:
    return sum(int(n) for n in re.findall(r"<tr><td>\w+</td><td>\w+</td><td>(\d+)</td></tr>", page))


def test_the_front_page_counts_only_readable_projects(site: Site) -> None:
    stage(site, project="demo", seed=82)
    stage(site, project="other", seed=83)
    assert _counts(site.as_user("admin").get("/").text) == 2
    assert _counts(site.as_user("collab").get("/").text) == 1  # demo only
    assert _counts(site.as_user("outsider").get("/").text) == 0  # owner of auto, which is empty
    _serves(site)


def test_source_hides_user_names_and_addresses_from_non_admins(site: Site, tmp_path: Path) -> None:
    upload = zip_bytes(study_files(tmp_path, seed=84))
    assert site.as_user("member").post("/data/services/import?project=demo&session=viahttp",
                                       content=upload).status_code == 200
    path = study_files(tmp_path, seed=85, name="dicom")[0]
    site.stores.ingest.stage(path, Source(kind="DICOM", ae_title="CT1", address="10.9.9.9",
                                          explicit=Explicit(project="demo", session="viadicom")))

    def sources(user: str) -> dict[str, str]:
        rows = site.as_user(user).get("/data/prearchive/projects/demo?format=json").json()["ResultSet"]["Result"]
        return {r["name"]: r["SOURCE"] for r in rows}

    assert sources("admin") == {"viahttp": "HTTP:member@testclient", "viadicom": "DICOM:CT1@10.9.9.9"}
    assert sources("collab") == {"viahttp": "HTTP", "viadicom": "DICOM:CT1"}
    assert sources("member") == {"viahttp": "HTTP", "viadicom": "DICOM:CT1"}
    _serves(site)


def test_a_wrong_basic_auth_beside_a_good_cookie_is_a_401(site: Site) -> None:
    session_id = site.as_user("member").get("/data/JSESSION").text
    both = TestClient(site.client.app, cookies={"JSESSIONID": session_id})
    both.auth = ("member", "not-the-password")
    assert both.get("/data/auth").status_code == 401
    assert TestClient(site.client.app, cookies={"JSESSIONID": session_id}).get("/data/auth").status_code == 200
    _serves(site)


def _session_rows(site: Site) -> int:
    return int(site.stores.catalog.reader().execute("SELECT COUNT(*) FROM login_sessions").fetchone()[0])


def test_basic_auth_requests_open_no_session_rows(site: Site) -> None:
    before = _session_rows(site)
    client = site.as_user("collab")
    for _ in range(5):
        assert client.get("/").status_code == 200
        assert client.get("/data/auth").status_code == 200
    assert _session_rows(site) == before
    client.get("/data/JSESSION")  # asked for: one
    assert _session_rows(site) == before + 1
    _serves(site)


def test_security_headers_on_every_response(site: Site) -> None:
    anonymous = TestClient(site.client.app)
    replies = [anonymous.get("/health"), anonymous.get("/data/projects"),  # 200, 401
               site.as_user("collab").get("/data/no-such-thing"),  # 404
               anonymous.put("/data/services/auth", content=b"x" * 20000,
                             headers={"Content-Type": "application/x-www-form-urlencoded"})]  # 413
    assert [r.status_code for r in replies] == [200, 401, 404, 413]
    for reply in replies:
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["x-frame-options"] == "DENY"
        assert reply.headers["referrer-policy"] == "no-referrer"
        assert "strict-transport-security" not in reply.headers
    https = TestClient(site.client.app, base_url="https://testserver")
    assert https.get("/health").headers["strict-transport-security"].startswith("max-age=")
    _serves(site)


def test_the_api_docs_load_nothing_from_other_sites(site: Site) -> None:
    client = site.as_user("collab")
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200
        assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html.text)
        assert assets and all(a.startswith("/") and not a.startswith("//") for a in assets), assets
        assert "cdn" not in html.text and "fonts.googleapis" not in html.text
        for asset in assets:
            assert client.get(asset).status_code == 200, asset
    _serves(site)


def test_a_wrong_called_ae_title_is_rejected(live: Live) -> None:
    # Given a peer calling another AE title than the receiver's
    reply = _associate_raw(live.port, b"SCANNER", called=b"NOTDICOMD")
    # Then it gets an A-ASSOCIATE-RJ: rejected-permanent by the service user, called AE title not recognised
    assert reply[:1] == b"\x03" and tuple(reply[7:10]) == (1, 1, 7), reply
    assert _associate_raw(live.port, b"SCANNER")[:1] == b"\x02"  # the right title is accepted
    live.serves()
    live.restart()
