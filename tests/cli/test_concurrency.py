"""The CLI against a running daemon: archive while it receives; two archives of one session race."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from click.testing import CliRunner

from dicomd.catalog import ARCHIVE, PREARCHIVE, READY
from dicomd.cli import main
from dicomd.testing.generator import generate_study
from tests.conftest import send, wait_for, write_config

ROOT = Path(__file__).resolve().parents[2]


def _cli(config_path: Path, *args: str):
    return CliRunner().invoke(main, [*args, "--config", str(config_path)], catch_exceptions=False)


def test_cli_archive_while_the_daemon_receives(make_daemon, tmp_path):
    config_path = write_config(tmp_path)
    daemon = make_daemon(config_path)
    catalog = daemon.stores.catalog
    first = generate_study(31, series=2, instances_per_series=3, study_description="DEMO", rows=32, cols=32)
    assert send(daemon.dicom_port(), first) == [0] * 6
    ready = wait_for(lambda: [r for r in catalog.sessions(PREARCHIVE) if r.status == READY])
    second = generate_study(32, series=3, instances_per_series=8, study_description="DEMO", rows=32, cols=32)
    statuses: list[int] = []
    sender = threading.Thread(target=lambda: statuses.extend(send(daemon.dicom_port(), second)))
    sender.start()
    result = _cli(config_path, "prearchive", "archive", ready[0].label, "--json")
    sender.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["instances"] == 6
    assert statuses == [0] * 24
    other = wait_for(lambda: [r for r in catalog.sessions(PREARCHIVE) if r.status == READY])
    assert other[0].instances == 24 and other[0].study_instance_uid == second[0].StudyInstanceUID
    archived = catalog.sessions(ARCHIVE)
    assert [(a.label, a.instances) for a in archived] == [(ready[0].label, 6)]
    check = _cli(config_path, "check")
    assert check.exit_code == 0, check.output


def test_two_operators_archiving_one_session_get_one_success_and_one_refusal(make_daemon, tmp_path):
    config_path = write_config(tmp_path)
    daemon = make_daemon(config_path)
    catalog = daemon.stores.catalog
    study = generate_study(33, series=4, instances_per_series=10, study_description="DEMO", rows=64, cols=64)
    assert send(daemon.dicom_port(), study) == [0] * 40
    row = wait_for(lambda: [r for r in catalog.sessions(PREARCHIVE) if r.status == READY])[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "dicomd", "prearchive", "archive", row.url, "--config", str(config_path)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outcomes = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    codes = sorted(code for code, _out, _err in outcomes)
    assert codes == [0, 1], outcomes
    _code, _out, refusal = next(o for o in outcomes if o[0] == 1)
    last = refusal.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "Traceback" not in refusal
    assert any(words in last for words in ("ARCHIVING", "no prearchive session", "no longer in the prearchive",
                                           "worked on by another node"))
    archived = catalog.sessions(ARCHIVE)
    assert len(archived) == 1 and archived[0].instances == 40
    assert catalog.sessions(PREARCHIVE) == []


def test_two_simultaneous_archives_are_arbitrated_by_the_catalog(tmp_path):
    """Two operators' stores (as two CLI processes open them) start archiving at the same instant."""
    from dicomd.config import load
    from dicomd.stores import Stores
    from dicomd.errors import InvalidState, NotFound
    from tests.cli.conftest import Store

    config = load(write_config(tmp_path))
    operators = [Stores.open(config), Stores.open(config)]
    try:
        row = Store(tmp_path / "unused", operators[0], tmp_path).ingest_study(34, series=3, instances=10)
        barrier = threading.Barrier(2)
        outcomes: list[object] = []

        def archive(stores: Stores) -> None:
            session = stores.prearchive.resolve(row.url)
            barrier.wait(timeout=10)
            try:
                outcomes.append(stores.archiver.archive(session.id, actor="test"))
            except (InvalidState, NotFound) as exc:
                outcomes.append(exc)

        threads = [threading.Thread(target=archive, args=(s,)) for s in operators]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        refusals = [o for o in outcomes if isinstance(o, Exception)]
        assert len(outcomes) == 2 and len(refusals) == 1, outcomes
        # the session's claim (dicomd.cluster) or its status (ARCHIVING) turns the second away
        assert any(words in str(refusals[0]) for words in ("ARCHIVING", "no ", "worked on by another node"))
        archived = operators[0].catalog.sessions(ARCHIVE)
        assert len(archived) == 1 and archived[0].instances == 30
    finally:
        for stores in operators:
            stores.close()
