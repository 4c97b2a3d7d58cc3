"""A session built but not yet auto-archived when the daemon stopped (a kill between the two) is
archived by the next start, as the tick after its build would have done."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.config import load
from dicomd.daemon import Daemon
from dicomd.ingest import Source
from dicomd.routing import Explicit
from dicomd.stores import Stores
from dicomd.testing.generator import generate_study, write_study
from tests.conftest import wait_for, write_config


def test_a_ready_session_of_an_auto_archiving_project_is_archived_at_start(
        tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    config = write_config(tmp_path)
    stores = Stores.open(load(config))
    files = write_study(generate_study(121, series=1, instances_per_series=2), tmp_path / "study")
    staged = [stores.ingest.stage(f, Source("CLI", explicit=Explicit(project="auto"))) for f in files]
    held = [stores.ingest.stage(f, Source("CLI", explicit=Explicit(project="demo", session="HELD")))
            for f in files]
    assert stores.prearchive.build(staged[0].session.id).status == "READY"
    assert stores.prearchive.build(held[0].session.id).status == "READY"
    stores.close()
    daemon = make_daemon(config)
    archived = wait_for(lambda: daemon.stores.catalog.sessions(ARCHIVE), timeout=30)
    assert [s.project for s in archived] == ["auto"]
    assert [s.project for s in daemon.stores.catalog.sessions(PREARCHIVE)] == ["demo"]  # review project waits
