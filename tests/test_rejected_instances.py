"""An instance the project's script rejects at archive goes to the quarantine with its reason, is
never left in the prearchive folder, and is never adopted again by recovery as a new session."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.daemon import Daemon
from dicomd.testing.generator import generate_study
from tests.conftest import send, wait_for, write_config


@pytest.mark.both_backends
def test_rejected_instances_are_quarantined_and_not_adopted_again(tmp_path: Path,
                                                                   make_daemon: Callable[..., Daemon]) -> None:
    script = tmp_path / "project.das"
    script.write_text('version "6.3"\nif ((0020,0013) != "1") {\n    reject["only the first instance"]\n}\n')
    projects = f'[projects.study]\nauto_archive = 4\n[projects.study.anonymize]\nenabled = true\nscript = "{script}"\n'
    config = write_config(tmp_path, projects=projects)
    daemon = make_daemon(config)
    study = generate_study(111, series=1, instances_per_series=3, study_description="study")
    assert send(daemon.dicom_port(), study) == [0, 0, 0]
    archived = wait_for(lambda: daemon.stores.catalog.sessions(ARCHIVE), timeout=30)[0]
    wait_for(lambda: not daemon.stores.catalog.sessions(PREARCHIVE), timeout=30)
    assert archived.instances == 1
    held = daemon.stores.catalog.quarantine()
    assert len(held) == 2 and all("only the first instance" in q.reason for q in held)
    # the prearchive folder is removed after the archive commit (the rows go first): wait for it
    wait_for(lambda: not _dicom_files(daemon.stores.layout.prearchive), timeout=30)
    # a restart finds nothing to adopt
    daemon.stop()
    again = make_daemon(config)
    assert again.stores.catalog.sessions(PREARCHIVE) == []
    assert [s.instances for s in again.stores.catalog.sessions(ARCHIVE)] == [1]


def _dicom_files(folder: Path) -> list[Path]:
    try:
        return list(folder.rglob("*.dcm"))
    except FileNotFoundError:  # a folder removed while it was walked
        return [Path("(being removed)")]
