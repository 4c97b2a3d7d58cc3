"""/xapi/dicomscp on a real daemon: receivers added, changed, disabled and removed at run time, real
C-STOREs to them, the config file's receiver read-only, and the stored ones back after a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from dicomd.catalog import PREARCHIVE
from dicomd.cli import main
from dicomd.daemon import Daemon
from dicomd.http.app import create_app
from dicomd.testing.generator import generate_study
from tests.conftest import send, wait_for, write_config
from tests.http.conftest import PASSWORD, add_users


def client(daemon: Daemon, user: str) -> TestClient:
    """The daemon's own receivers behind the real app, logged in as ``user``."""
    assert daemon.stores is not None
    app = create_app(daemon.config, daemon.stores, daemon.receiver_set)
    http = TestClient(app)
    http.auth = (user, PASSWORD)
    return http


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def test_a_receiver_added_over_the_api_receives_and_survives_a_restart(
        make_daemon: Callable[..., Daemon], config_path: Path) -> None:
    daemon = make_daemon(config_path)
    add_users(daemon.stores)
    admin = client(daemon, "admin")
    created = admin.post("/xapi/dicomscp", json={"aeTitle": "NEWAE", "port": 0, "bind": "127.0.0.1",
                                                 "project": "DEMO", "anonymizationEnabled": True})
    assert created.status_code == 200, created.text
    shown = created.json()
    assert (shown["state"], shown["source"], shown["readOnly"], shown["project"]) == ("listening", "api", False, "demo")
    port = shown["listeningPort"]
    # a real association to the new receiver's port, which needs its own AE title
    study = generate_study(11, series=1, instances_per_series=3)
    assert send(port, study, called="NEWAE") == [0, 0, 0]
    session = wait_for(lambda: daemon.stores.catalog.sessions(PREARCHIVE))[0]
    assert session.project == "demo", "the receiver's fixed project"
    with pytest.raises(ConnectionRefusedError):
        send(port, study[:1], called="DICOMD")
    listed = {r["id"]: r for r in admin.get("/xapi/dicomscp").json()}
    assert listed["config-1"]["readOnly"] is True and listed["config-1"]["state"] == "listening"
    assert listed["config-1"]["listeningPort"] == daemon.dicom_port()
    mine = listed[shown["id"]]
    assert mine["instancesReceived"] == 3
    assert mine["lastAssociation"]["callingAeTitle"] == "SCANNER" and mine["lastAssociation"]["address"] == "127.0.0.1"
    assert admin.get(f"/xapi/dicomscp/title/NEWAE/{port}").json()["id"] == shown["id"]
    status = CliRunner().invoke(main, ["status", "--config", str(config_path), "--json"])
    assert status.exit_code == 0, status.output
    assert [(r["ae_title"], r["source"]) for r in json.loads(status.stdout)["receivers"]] == [
        ("DICOMD", "config"), ("NEWAE", f"api #{shown['id']}")]
    # disabled: it stops listening; changed: it restarts with the new settings
    off = admin.put(f"/xapi/dicomscp/{shown['id']}/enabled/false").json()
    assert off["state"] == "disabled" and off["enabled"] is False
    assert admin.get(f"/xapi/dicomscp/{shown['id']}/enabled").json() is False
    with pytest.raises(ConnectionRefusedError):
        send(port, study[:1], called="NEWAE")
    on = admin.put(f"/xapi/dicomscp/{shown['id']}", json={"enabled": True, "whitelist": ["CT1@127.0.0.1"],
                                                          "whitelistEnabled": True})
    assert on.status_code == 200 and on.json()["state"] == "listening", on.text
    new_port = on.json()["listeningPort"]
    with pytest.raises(ConnectionRefusedError):
        send(new_port, study[:1], called="NEWAE")  # SCANNER is not on the allow list
    assert send(new_port, study[:1], called="NEWAE", ae_title="CT1") == [0]
    # after a restart the stored receiver listens again (port 0: on a new free port)
    daemon.stop()
    again = make_daemon(config_path)
    shown_again = client(again, "admin").get(f"/xapi/dicomscp/{shown['id']}").json()
    assert shown_again["state"] == "listening" and shown_again["whitelist"] == ["CT1@127.0.0.1"]
    assert send(shown_again["listeningPort"], study[1:2], called="NEWAE", ae_title="CT1") == [0]
    # removed: stopped and gone
    assert client(again, "admin").delete(f"/xapi/dicomscp/{shown['id']}").status_code == 200
    with pytest.raises(ConnectionRefusedError):
        send(shown_again["listeningPort"], study[:1], called="NEWAE", ae_title="CT1")
    assert [r["id"] for r in client(again, "admin").get("/xapi/dicomscp").json()] == ["config-1"]


def test_only_admins_change_receivers_and_others_see_less(make_daemon: Callable[..., Daemon],
                                                          config_path: Path) -> None:
    daemon = make_daemon(config_path)
    add_users(daemon.stores)
    admin = client(daemon, "admin")
    made = admin.post("/xapi/dicomscp", json={"aeTitle": "GUARDED", "port": 0, "bind": "127.0.0.1",
                                              "whitelist": ["CT1@10.0.0.0/8"]}).json()
    for name in ("owner", "member", "collab", "outsider"):
        http = client(daemon, name)
        assert http.post("/xapi/dicomscp", json={"aeTitle": "X", "port": 0}).status_code == 403, name
        assert http.put(f"/xapi/dicomscp/{made['id']}", json={"port": 0}).status_code == 403, name
        assert http.put(f"/xapi/dicomscp/{made['id']}/enabled/false").status_code == 403, name
        assert http.delete(f"/xapi/dicomscp/{made['id']}").status_code == 403, name
        seen = {r["id"]: r for r in http.get("/xapi/dicomscp").json()}
        assert seen[made["id"]]["whitelist"] == [] and seen[made["id"]]["whitelistEnabled"] is True
    assert admin.get(f"/xapi/dicomscp/{made['id']}").json()["state"] == "listening"
    # the config file's receiver is read-only over the API
    refused = admin.put("/xapi/dicomscp/config-1", json={"enabled": False})
    assert refused.status_code == 403 and "dicomd.toml" in refused.text
    assert admin.delete("/xapi/dicomscp/config-1").status_code == 403


@pytest.mark.parametrize("body, status, words", [
    ({"aeTitle": "A" * 17, "port": 0}, 400, "ae_title"),
    ({"aeTitle": "OK", "port": 70000}, 400, "port"),
    ({"aeTitle": "OK", "port": 0, "bind": "not-an-address"}, 400, "bind"),
    ({"aeTitle": "OK", "port": 0, "whitelist": ["OK@999.1.1.1"]}, 400, "allowlist entry"),
    ({"aeTitle": "OK", "port": 0, "project": "nope"}, 400, "project"),
    ({"aeTitle": "OK", "port": 0, "routingExpressionsEnabled": True}, 400, "not supported"),
    ({"aeTitle": "OK", "port": 0, "colour": "red"}, 400, "unknown field"),
    ({"port": 0}, 400, "aeTitle"),
])
def test_receivers_are_checked_like_the_config(make_daemon: Callable[..., Daemon], config_path: Path,
                                               body: dict, status: int, words: str) -> None:
    daemon = make_daemon(config_path)
    add_users(daemon.stores)
    reply = client(daemon, "admin").post("/xapi/dicomscp", json=body)
    assert reply.status_code == status and words in reply.text, reply.text
    assert daemon.stores.catalog.receivers() == []


def test_a_port_serves_one_receiver(make_daemon: Callable[..., Daemon], config_path: Path) -> None:
    daemon = make_daemon(config_path)
    add_users(daemon.stores)
    reply = client(daemon, "admin").post("/xapi/dicomscp", json={"aeTitle": "TWIN", "port": daemon.dicom_port(),
                                                                 "bind": "127.0.0.1"})
    assert reply.status_code == 409 and "config receiver DICOMD" in reply.text
    assert daemon.stores.catalog.receivers() == []


def test_a_port_the_system_refuses_leaves_nothing_behind(make_daemon: Callable[..., Daemon],
                                                         config_path: Path) -> None:
    import socket

    daemon = make_daemon(config_path)
    add_users(daemon.stores)
    admin = client(daemon, "admin")
    with socket.socket() as other:  # another program holds the port
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        taken = other.getsockname()[1]
        reply = admin.post("/xapi/dicomscp", json={"aeTitle": "LATE", "port": taken, "bind": "127.0.0.1"})
        assert reply.status_code == 409 and "cannot listen" in reply.text, reply.text
        assert daemon.stores.catalog.receivers() == []
        # a running receiver moved onto it keeps its old settings
        made = admin.post("/xapi/dicomscp", json={"aeTitle": "STAY", "port": 0, "bind": "127.0.0.1"}).json()
        moved = admin.put(f"/xapi/dicomscp/{made['id']}", json={"port": taken})
        assert moved.status_code == 409
        kept = admin.get(f"/xapi/dicomscp/{made['id']}").json()
        assert kept["port"] == 0 and kept["state"] == "listening"
        assert send(kept["listeningPort"], [], called="STAY") == []
