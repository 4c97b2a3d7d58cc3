"""A patient's second (and third) visit: each study is its own session of one subject, in the
prearchive and in the archive, with and without anonymization; re-sends change nothing and late
instances join their study."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.daemon import Daemon
from dicomd.routing import study_label
from dicomd.testing.generator import generate_study, make_patient
from tests.conftest import send, wait_for, write_config

PROJECTS = """
[projects.plain]
auto_archive = 4
overwrite = "append"

[projects.anon]
auto_archive = 4
overwrite = "append"
[projects.anon.anonymize]
enabled = true
"""


def _three_ways_config(tmp_path: Path) -> Path:
    drop = f'[[drop_folders]]\npath = "{tmp_path / "drop"}"\nstable_seconds = 0.2\n'
    config = write_config(tmp_path, drop, projects=PROJECTS)
    config.write_text(config.read_text().replace("[http]\nenabled = false\n", "[http]\nenabled = true\nport = 0\n"))
    return config


def _arrive(daemon: Daemon, way: str, study: list, tmp_path: Path) -> None:
    """One study through one way in: C-STORE, the drop folder, or an HTTP zip upload."""
    import io
    import zipfile

    import httpx

    from dicomd.auth import Auth
    from dicomd.testing.generator import write_study

    if way == "dicom":
        assert send(daemon.dicom_port(), study) == [0] * len(study)
        return
    files = write_study(study, tmp_path / f"{way}-{study[0].StudyInstanceUID[-6:]}")
    if way == "drop":
        staging = tmp_path / "drop-staging"
        staging.mkdir(exist_ok=True)
        for f in files:
            (staging / f.name).write_bytes(f.read_bytes())
            (staging / f.name).rename(tmp_path / "drop" / f.name)
        return
    auth = Auth(daemon.stores.catalog)
    if not any(u.name == "alice" for u in auth.users()):
        auth.add_user("alice", "a-long-password", admin=True)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in files:
            zf.write(f, f.name)
    http = next(s for s in daemon.services if type(s).__name__ == "HttpServer")
    reply = httpx.post(f"{http.url}/data/services/import", content=buf.getvalue(), auth=("alice", "a-long-password"),
                       headers={"Content-Type": "application/zip"}, timeout=60)
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize("project", ["plain", "anon"])
def test_three_studies_of_one_patient_are_three_sessions_of_one_subject(
        tmp_path: Path, make_daemon: Callable[..., Daemon], project: str) -> None:
    (tmp_path / "drop").mkdir()
    daemon = make_daemon(_three_ways_config(tmp_path))
    catalog = daemon.stores.catalog
    patient = make_patient(51)
    studies = [generate_study(seed, patient=patient, series=1, instances_per_series=2, study_description=project)
               for seed in (51, 52, 53)]
    # Given three studies of one patient, one over C-STORE, one through the drop folder, one over HTTP
    for number, (study, way) in enumerate(zip(studies, ("dicom", "drop", "http")), start=1):
        _arrive(daemon, way, study, tmp_path)
        wait_for(lambda: len(catalog.sessions(ARCHIVE, projects=[project])) == number, timeout=30)
    archived = catalog.sessions(ARCHIVE, projects=[project])
    # Then they are three archived sessions of one subject, none in CONFLICT
    assert len({s.label for s in archived}) == 3
    assert len({s.subject for s in archived}) == 1
    assert all(s.label != s.subject for s in archived)
    assert not catalog.sessions(PREARCHIVE, status="CONFLICT")
    if project == "anon":
        assert not any(patient.patient_id in s.label for s in archived)
    # When the first study is sent again, and a late instance of the second arrives (the projects
    # append late data; under overwrite = "none" both would wait in CONFLICT for a person)
    assert send(daemon.dicom_port(), studies[0]) == [0, 0]
    late = generate_study(52, patient=patient, series=2, instances_per_series=2, study_description=project)[-1]
    assert send(daemon.dicom_port(), [late]) == [0]
    # Then nothing new is archived beside them: the re-send changes nothing, the late one joins
    wait_for(lambda: not catalog.sessions(PREARCHIVE), timeout=30)
    after = catalog.sessions(ARCHIVE, projects=[project])
    assert sorted(s.label for s in after) == sorted(s.label for s in archived)
    assert sorted(s.instances for s in after) == [2, 2, 3]


def test_the_plain_patient_id_label_stays_available(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    config = write_config(tmp_path, projects=PROJECTS)
    config.write_text('session_label = "patient_id"\n' + config.read_text())
    daemon = make_daemon(config)
    study = generate_study(54, series=1, instances_per_series=1, study_description="plain")
    assert send(daemon.dicom_port(), study) == [0]
    row = wait_for(lambda: daemon.stores.catalog.sessions(ARCHIVE), timeout=30)[0]
    assert row.label == study[0].PatientID


def test_study_labels_are_stable_distinct_and_bounded() -> None:
    assert study_label("PID1", "1.2.3") == study_label("PID1", "1.2.3")
    assert study_label("PID1", "1.2.3") != study_label("PID1", "1.2.4")
    assert len(study_label("x" * 64, "1.2.3")) == 64


@pytest.mark.parametrize("overwrite", ["none", "delete"])
def test_two_visits_archive_side_by_side_under_every_policy(tmp_path: Path, make_daemon: Callable[..., Daemon],
                                                            overwrite: str) -> None:
    projects = f'[projects.plain]\nauto_archive = 4\noverwrite = "{overwrite}"\n'
    daemon = make_daemon(write_config(tmp_path, projects=projects))
    patient = make_patient(55)
    for seed in (55, 56):
        study = generate_study(seed, patient=patient, series=1, instances_per_series=1, study_description="plain")
        assert send(daemon.dicom_port(), study) == [0]
    archived = wait_for(lambda: (rows := daemon.stores.catalog.sessions(ARCHIVE)) and len(rows) == 2 and rows,
                        timeout=30)
    assert len({s.subject for s in archived}) == 1 and len({s.label for s in archived}) == 2


def test_a_real_conflict_says_what_to_do_and_a_new_label_resolves_it(
        tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    from click.testing import CliRunner

    from dicomd.cli import main

    # Given XNAT's plain labels, where a second study of a patient lands on the first one's label
    config = write_config(tmp_path, projects='[projects.plain]\nauto_archive = 4\n')
    config.write_text('session_label = "patient_id"\n' + config.read_text())
    daemon = make_daemon(config)
    catalog = daemon.stores.catalog
    patient = make_patient(57)
    for seed in (57, 58):
        study = generate_study(seed, patient=patient, series=1, instances_per_series=1, study_description="plain")
        assert send(daemon.dicom_port(), study) == [0]
    held = wait_for(lambda: catalog.sessions(PREARCHIVE, status="CONFLICT"), timeout=30)[0]
    # Then the reason names the archived session and the ways out
    assert "already exists in the archive" in held.reason
    for choice in ("overwrite append", "delete", "prearchive move", "--label"):
        assert choice in held.reason
    # and archiving under a new label resolves it
    name = f"{held.project}/{held.timestamp}/{held.label}"
    result = CliRunner().invoke(main, ["prearchive", "archive", name, "--label", "VISIT2", "--config", str(config)])
    assert result.exit_code == 0, result.output
    labels = sorted(s.label for s in catalog.sessions(ARCHIVE))
    assert labels == sorted([patient.patient_id, "VISIT2"])
