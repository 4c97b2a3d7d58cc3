"""Label bombs: labels far longer than any file system allows, from a header, an HTTP parameter or
the CLI. Header values are cut to MAX_LABEL; parameters a person typed are refused before any work;
after each attack the daemon stops and starts again on the same data directory."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.cli import main
from dicomd.daemon import Daemon
from dicomd.errors import InvalidInput
from dicomd.testing.generator import generate_study, write_study
from dicomd.routing import MAX_LABEL, Explicit, route
from tests.conftest import send, wait_for, write_config

BOMB = "x" * 300


def test_header_labels_are_cut_and_auto_archive_still_finishes(tmp_path: Path,
                                                              make_daemon: Callable[..., Daemon]) -> None:
    # Given a sender that puts a 300-character subject and session into Patient Comments
    config = write_config(tmp_path)
    daemon = make_daemon(config)
    datasets = generate_study(7, series=1, instances_per_series=2)
    for ds in datasets:
        ds.PatientComments = f"Project: auto Subject: {BOMB} Session: {BOMB}y AA: true"
    # When it is stored (project auto archives on its own)
    assert send(daemon.dicom_port(), datasets) == [0, 0]
    archived = wait_for(lambda: daemon.stores.catalog.sessions(ARCHIVE, projects=["auto"]), timeout=30)
    # Then the session is archived under labels cut to MAX_LABEL
    assert len(archived[0].label) == MAX_LABEL and len(archived[0].subject) == MAX_LABEL
    assert archived[0].instances == 2
    # and a restart on the same data directory comes back
    daemon.stop()
    again = make_daemon(config)
    assert again.stores.catalog.sessions(ARCHIVE, projects=["auto"])[0].instances == 2


def test_routing_cuts_header_values_and_refuses_explicit_ones() -> None:
    header = {0x00104000: f"Subject: {BOMB}", 0x00100020: BOMB}
    found = route(header, resolve_project=lambda name: None)
    assert len(found.subject) == MAX_LABEL and len(found.session) == MAX_LABEL
    with pytest.raises(InvalidInput, match="at most 64"):
        Explicit(project="demo", subject=BOMB)
    assert Explicit(project="demo", subject="s" * MAX_LABEL).subject == "s" * MAX_LABEL


def test_cli_import_refuses_a_long_subject(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    folder = tmp_path / "study"
    write_study(generate_study(8, series=1, instances_per_series=1), folder)
    result = CliRunner().invoke(main, ["import", str(folder), "--config", str(config), "--project", "demo",
                                       "--subject", BOMB])
    assert result.exit_code != 0
    assert "at most 64" in result.output
    assert not any((tmp_path / "data" / "prearchive").rglob("*.dcm"))


def test_http_import_refuses_a_long_subject_before_staging(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    import httpx

    from dicomd.auth import Auth

    config = write_config(tmp_path, "").read_text().replace(
        "[http]\nenabled = false\n", "[http]\nenabled = true\nport = 0\nhost = \"127.0.0.1\"\n")
    path = tmp_path / "http.toml"
    path.write_text(config)
    daemon = make_daemon(path)
    Auth(daemon.stores.catalog).add_user("alice", "a-long-password", admin=True)
    folder = tmp_path / "study"
    files = write_study(generate_study(9, series=1, instances_per_series=1), folder)
    http = next(s for s in daemon.services if hasattr(s, "url"))
    reply = httpx.post(f"{http.url}/data/services/import", params={"project": "auto", "subject": BOMB, "AA": "true"},
                       content=files[0].read_bytes(), auth=("alice", "a-long-password"), timeout=30)
    assert reply.status_code == 400
    assert "at most 64" in reply.text
    assert daemon.stores.catalog.sessions(PREARCHIVE) == []


def test_a_job_that_cannot_finish_ends_in_error_and_the_daemon_still_starts(tmp_path: Path) -> None:
    """The archive target cannot be created (here: a file where the project folder belongs, as a
    300-character label once caused). The job dies at its point of no return; every restart must
    come back, with the session in ERROR and its data still in the prearchive."""
    from dicomd.config import load
    from tests.reliability.harness import ServeProcess

    config_path = write_config(tmp_path, projects="[projects.auto]\nauto_archive = 4\n")
    data_dir = tmp_path / "data"
    serve = ServeProcess(config_path, data_dir, tmp_path / "serve.log")
    serve.start(crashpoint="archive.planned")
    datasets = generate_study(10, series=1, instances_per_series=2, study_description="auto")
    assert send(serve.port, datasets) == [0, 0]
    serve.wait_dead(60)  # SIGKILLed itself right after recording the plan
    blocker = data_dir / "archive" / "auto"
    if blocker.is_dir():
        blocker.rmdir()
    blocker.write_bytes(b"in the way")
    for _ in range(2):  # recovery gives up on the job once, and the next start is clean
        serve.start()
        assert serve.alive()
        assert serve.terminate() == 0
    daemon = Daemon(load(config_path, {"data_dir": str(data_dir)}))
    daemon.start()
    try:
        sessions = daemon.stores.catalog.sessions(PREARCHIVE)
        assert [s.status for s in sessions] == ["ERROR"]
        assert "archive could not finish" in sessions[0].reason and "auto" not in sessions[0].reason
        assert len(daemon.stores.catalog.instances(sessions[0].id)) == 2
        assert all((data_dir / i.path).is_file() for i in daemon.stores.catalog.instances(sessions[0].id))
        assert daemon.stores.catalog.archive_jobs(["staging", "moving"]) == []
    finally:
        daemon.stop()
