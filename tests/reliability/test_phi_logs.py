"""No planted identifier reaches the log at INFO or above, whatever path the data takes: C-STORE
(staged, quarantined, auto-archived with anonymization), drop folder, HTTP import (good and bad)."""

from __future__ import annotations

import io
import logging
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from dicomd.daemon import Daemon
from dicomd.testing.generator import generate_study, instance_bytes, make_patient, study_phi_values, write_study
from tests.conftest import send, wait_for, write_config

PROJECTS = """
[projects.auto]
auto_archive = 4
overwrite = "append"

[projects.auto.anonymize]
enabled = true

[projects.demo]
aliases = ["DEMO"]
"""


@pytest.fixture(autouse=True)
def _restore_tempdir() -> Iterator[None]:
    before = tempfile.tempdir
    yield
    tempfile.tempdir = before


def _config(tmp_path: Path) -> Path:
    extra = f"""
[[drop_folders]]
path = "{tmp_path / 'drop'}"
project = "auto"
stable_seconds = 0.2
"""
    path = write_config(tmp_path, extra, projects=PROJECTS)
    return path.__class__(path)


def _zip(paths: list[Path]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in paths:
            zf.write(p, p.name)
    return buf.getvalue()


def test_no_identifier_is_logged_at_info_or_above(tmp_path: Path, make_daemon: Callable[..., Daemon],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    path = _config(tmp_path)
    text = path.read_text().replace("[http]\nenabled = false\n", "[http]\nenabled = true\nport = 0\n")
    path.write_text(text)
    daemon = make_daemon(path)
    assert daemon.stores is not None
    catalog = daemon.stores.catalog
    studies = {
        "dicom": generate_study(31, series=2, instances_per_series=2, rows=8, cols=8, study_description="auto"),
        "drop": generate_study(32, series=1, instances_per_series=2, rows=8, cols=8),
        "http": generate_study(33, series=1, instances_per_series=2, rows=8, cols=8),
        "bad": generate_study(34, series=1, instances_per_series=2, rows=8, cols=8, study_description="auto"),
    }
    planted = set().union(*(study_phi_values(s) for s in studies.values()))
    assert planted
    # C-STORE: a good study (auto-archived, anonymized) and broken ones (quarantined)
    assert send(daemon.dicom_port(), studies["dicom"]) == [0] * 4
    broken = studies["bad"][0]
    del broken.StudyInstanceUID
    assert send(daemon.dicom_port(), [broken]) == [0xC000]
    # drop folder: a study and a truncated file
    drop = tmp_path / "drop"
    write_study(studies["drop"], drop)
    (drop / "cut.dcm").write_bytes(instance_bytes(studies["bad"][1])[:900])
    # HTTP import: a zip into demo, and a truncated upload
    http = _http(daemon)
    if http is not None:
        url, auth = http
        files = write_study(studies["http"], tmp_path / "up")
        reply = httpx.post(f"{url}/data/services/import", params={"project": "demo"}, content=_zip(files),
                           headers={"Content-Type": "application/zip"}, auth=auth, timeout=30)
        assert reply.status_code == 200, reply.text
        reply = httpx.post(f"{url}/data/services/import", params={"project": "demo", "import-handler": "DICOM"},
                           content=instance_bytes(studies["bad"][1])[:700], auth=auth, timeout=30,
                           headers={"Content-Type": "application/dicom"})
        assert reply.status_code >= 400
        assert not any(v in reply.text for v in planted)
    wait_for(lambda: not any(drop.iterdir()), timeout=30)  # the drop folder took both files
    wait_for(lambda: len(catalog.sessions("archive")) >= 2 and not [
        s for s in catalog.sessions("prearchive") if s.project == "auto"], timeout=30)
    assert len(catalog.quarantine()) >= 2
    data = daemon.config.data_dir
    daemon.stop()
    _plant_crash_remnants(data)
    make_daemon(path).stop()  # start-up recovery reports (and logs) what it repaired
    assert any("recovery" in r.getMessage() for r in caplog.records)
    found = leaks(caplog.records, planted)
    assert not found, "\n".join(found)
    assert len(caplog.records) > 5  # the check saw the daemon's log
    # and the check itself can see a leak
    probe = logging.LogRecord("x", logging.WARNING, __file__, 1, "got %s", (sorted(planted)[0],), None)
    assert leaks([probe], planted)


def leaks(records: list[logging.LogRecord], planted: set[str]) -> list[str]:
    formatter = logging.Formatter("%(name)s %(message)s")  # message + traceback, if any
    found = []
    for record in records:
        if record.levelno < logging.INFO:
            continue
        line = formatter.format(record)
        found += [f"{value!r} in {record.levelname} {line[:300]}" for value in planted if value in line]
    return found


def _http(daemon: Daemon) -> tuple[str, tuple[str, str]] | None:
    server = next((s for s in daemon.services if type(s).__name__ == "HttpServer"), None)
    if server is None:
        return None
    from dicomd.auth import Auth

    Auth(daemon.stores.catalog).add_user("admin", "correct-horse-1", admin=True)  # type: ignore[union-attr]
    return server.url, ("admin", "correct-horse-1")


def _plant_crash_remnants(data: Path) -> None:
    """What a crash leaves: a file without its row, a row without its file, a half-written file,
    and a session folder the catalog lost; all under folders named after patient IDs."""
    demo = sorted((data / "prearchive" / "demo").glob("*/*"))[0]
    files = sorted(demo.rglob("*.dcm"))
    files[0].unlink()
    (files[1].parent / ".partial.dcm.1234.part").write_bytes(b"x")
    lost = data / "prearchive" / "demo" / "20200101_000000000" / demo.name
    (lost / "SCANS" / "1" / "DICOM").mkdir(parents=True)
    (lost / "SCANS" / "1" / "DICOM" / files[1].name).write_bytes(files[1].read_bytes())


def test_a_conflict_is_logged_without_the_identified_archive_path(
        tmp_path: Path, make_daemon: Callable[..., Daemon], caplog: pytest.LogCaptureFixture) -> None:
    # Given an identified project that auto-archives and refuses to overwrite
    caplog.set_level(logging.INFO)
    config = write_config(tmp_path, projects="[projects.plain]\nauto_archive = 4\n")
    config.write_text('session_label = "patient_id"\n' + config.read_text())  # studies share a label
    daemon = make_daemon(config)
    catalog = daemon.stores.catalog
    patient = make_patient(35)
    first, second = (generate_study(seed, patient=patient, series=1, instances_per_series=1, rows=8, cols=8,
                                    study_description="plain") for seed in (35, 36))
    planted = study_phi_values(first) | study_phi_values(second)
    # When a second study of the patient lands on the same archive label and conflicts
    assert send(daemon.dicom_port(), first) == [0]
    wait_for(lambda: catalog.sessions("archive"), timeout=30)
    assert send(daemon.dicom_port(), second) == [0]
    held = wait_for(lambda: catalog.sessions("prearchive", status="CONFLICT"), timeout=30)
    # Then the session says why (for its operator), and no log line above DEBUG names the patient
    assert "already exists" in held[0].reason
    found = leaks(caplog.records, planted)
    assert not found, "\n".join(found)
