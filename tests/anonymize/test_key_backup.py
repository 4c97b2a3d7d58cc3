"""The pseudonym keys: exported and imported by `dicomd anon key`, and never silently replaced when
the keys file is lost while the archive holds de-identified data."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Callable

from click.testing import CliRunner

from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.cli import main
from dicomd.daemon import Daemon
from dicomd.testing.generator import generate_study, make_patient
from tests.conftest import send, wait_for, write_config

PROJECTS = """
[projects.study]
auto_archive = 4
overwrite = "append"
[projects.study.anonymize]
enabled = true
"""


def test_lost_keys_stop_archiving_until_the_backup_is_restored(tmp_path: Path,
                                                                make_daemon: Callable[..., Daemon]) -> None:
    config = write_config(tmp_path, projects=PROJECTS)
    cli = ["--config", str(config)]
    patient = make_patient(91)
    # Given a project with de-identified data in the archive, and a backup of its key
    daemon = make_daemon(config)
    assert send(daemon.dicom_port(), generate_study(91, patient=patient, series=1, instances_per_series=1, study_description="study")) == [0]
    first = wait_for(lambda: daemon.stores.catalog.sessions(ARCHIVE), timeout=30)[0]
    backup = tmp_path / "keys.json"
    result = CliRunner().invoke(main, ["anon", "key", "export", "--output", str(backup), *cli])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert [k["project"] for k in json.loads(backup.read_text())["keys"]] == ["study"]
    daemon.stop()
    # When the keys file is lost
    for path in (tmp_path / "data" / "keys").iterdir():
        path.unlink()
    daemon = make_daemon(config)
    assert send(daemon.dicom_port(), generate_study(92, patient=patient, series=1, instances_per_series=1, study_description="study")) == [0]
    # Then archiving stops with a message that says how to restore the key
    held = wait_for(lambda: daemon.stores.catalog.sessions(PREARCHIVE, status="ERROR"), timeout=30)
    assert "pseudonym key of project study is missing" in held[0].reason
    assert "dicomd anon key import" in held[0].reason
    daemon.stop()
    # and after the import the next visit gets the same pseudonymous subject
    result = CliRunner().invoke(main, ["anon", "key", "import", str(backup), *cli])
    assert result.exit_code == 0 and "imported 1 key(s): study" in result.output, result.output
    daemon = make_daemon(config)
    session = daemon.stores.catalog.sessions(PREARCHIVE)[0]
    # (the second study gets the same session label until labels are unique per study: replace it)
    daemon.stores.archiver.archive(session.id, overwrite="delete", actor="test")
    subjects = {s.subject for s in daemon.stores.catalog.sessions(ARCHIVE)}
    assert subjects == {first.subject}


def test_import_refuses_a_different_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, projects=PROJECTS)
    from dicomd.anonymize import PseudonymStore

    store = PseudonymStore(tmp_path / "data" / "keys" / "pseudonyms.sqlite")
    store.project_key("study")
    store.close()
    backup = tmp_path / "other.json"
    backup.write_text(json.dumps({"keys": [{"project": "study", "key": "00" * 32, "created": "x"}]}))
    result = CliRunner().invoke(main, ["anon", "key", "import", str(backup), "--config", str(config)])
    assert result.exit_code == 1
    assert "already has a different key" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    result = CliRunner().invoke(main, ["anon", "key", "import", str(bad), "--config", str(config)])
    assert result.exit_code == 1 and "not a key backup" in result.output
