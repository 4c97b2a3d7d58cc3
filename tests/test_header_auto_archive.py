"""`AA: true` in a sender's comments auto-archives only where the project allows it: an
unauthenticated sender must not archive past the owner's review of de-identified projects."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.config import load
from dicomd.daemon import Daemon
from dicomd.testing.generator import generate_study
from tests.conftest import send, wait_for, write_config

PROJECTS = """
[projects.guarded]
[projects.guarded.anonymize]
enabled = true

[projects.trusting]
allow_header_auto_archive = true
[projects.trusting.anonymize]
enabled = true

[projects.plain]
"""


def _send_with_aa(daemon: Daemon, project: str, seed: int) -> None:
    datasets = generate_study(seed, series=1, instances_per_series=1)
    for ds in datasets:
        ds.PatientComments = f"Project: {project} AA: true"
    assert send(daemon.dicom_port(), datasets) == [0]


def test_header_auto_archive_follows_the_project(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    config = write_config(tmp_path, projects=PROJECTS)
    assert load(config).project("guarded").header_auto_archive is False
    daemon = make_daemon(config)
    # Given senders that ask for auto-archive in their headers
    for seed, project in enumerate(("guarded", "trusting", "plain"), start=70):
        _send_with_aa(daemon, project, seed)
    catalog = daemon.stores.catalog
    # Then projects that allow it (explicitly, or by having no anonymization) archive
    wait_for(lambda: len(catalog.sessions(ARCHIVE)) == 2, timeout=30)
    assert {s.project for s in catalog.sessions(ARCHIVE)} == {"trusting", "plain"}
    # and the de-identified project without the setting keeps the session for its owner's review
    held = wait_for(lambda: catalog.sessions(PREARCHIVE, projects=["guarded"], status="READY"), timeout=30)
    assert held[0].auto_archive == 1
