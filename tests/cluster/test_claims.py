"""Claims on cluster-wide work: one node wins, an expired node's claims are taken over, a node's
running archive is left alone by another node's recovery, and a node that lost its claim cannot
commit. Two `Stores` on one data directory stand for two nodes (each with its own Node)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from dicomd.catalog import NodeRow
from dicomd.cluster import SESSION, Node, _process_key
from dicomd.config import load
from dicomd.errors import ClaimLost, InvalidState
from dicomd.ingest import Source
from dicomd.lifecycle import JobState, Stage, Status
from dicomd.pipeline import SessionWatcher
from dicomd.stores import Role, Stores
from dicomd.testing.generator import generate_study, write_study
from tests.conftest import write_config


@pytest.fixture
def two(tmp_path: Path, catalog_section: str) -> Iterator[tuple[Stores, Stores]]:
    extra = "[cluster]\nheartbeat_seconds = 0.2\nclaim_expiry_seconds = 2\n" + catalog_section
    config = load(write_config(tmp_path, extra))
    a, b = Stores.open(config, Role.DAEMON), Stores.open(config, Role.DAEMON)
    assert a.node is not None and b.node is not None
    a.node.start(), b.node.start()
    yield a, b
    a.close()
    b.close()


def _session(stores: Stores, tmp_path: Path, seed: int = 1) -> int:
    study = generate_study(seed, series=1, instances_per_series=2, study_description="auto")
    staged = [stores.ingest.stage(f, Source(kind="TEST"), move=True)
              for f in write_study(study, tmp_path / f"send{seed}")]
    return staged[-1].session.id


def _expire(stores: Stores) -> None:
    """Make a node look silent for long (as a node on another machine that died would)."""
    assert stores.node is not None
    stores.node._stop.set()  # its heartbeat thread ends
    stores.catalog.write(lambda conn: conn.execute(
        "UPDATE nodes SET heartbeat_at = ? WHERE id = ?", (time.time() - 3600, stores.node.id)))


def test_one_node_wins_a_claim_and_the_other_gets_it_once_released(two: tuple[Stores, Stores]) -> None:
    a, b = two
    assert a.node and b.node
    assert a.node.claim(SESSION, 7)
    assert not b.node.claim(SESSION, 7)
    assert a.node.claim(SESSION, 7)  # re-entrant on the holding thread
    a.node.release(SESSION, 7)
    assert not b.node.claim(SESSION, 7)  # still held once
    a.node.release(SESSION, 7)
    assert b.node.claim(SESSION, 7)
    assert [(c.kind, c.item, c.node) for c in b.catalog.claims()] == [(SESSION, "7", b.node.id)]


def test_another_thread_of_the_same_node_does_not_get_the_claim(two: tuple[Stores, Stores]) -> None:
    a, _b = two
    assert a.node
    assert a.node.claim(SESSION, 3)
    got: list[bool] = []
    thread = threading.Thread(target=lambda: got.append(a.node.claim(SESSION, 3)))  # type: ignore[union-attr]
    thread.start()
    thread.join()
    assert got == [False]


def test_the_claims_of_an_expired_node_are_taken_over(two: tuple[Stores, Stores]) -> None:
    a, b = two
    assert a.node and b.node
    assert a.node.claim(SESSION, 5)
    assert b.node.expired() == []
    _expire(a)
    assert b.node.expired() == [a.node.id]
    assert b.node.claim(SESSION, 5)
    states = {s.row.id: s for s in b.node.states()}
    assert states[a.node.id].state == "expired" and states[b.node.id].state == "alive"
    assert [f"{c.kind} {c.item}" for c in states[b.node.id].claims] == ["session 5"]


def test_a_node_whose_process_is_gone_here_expires_at_once(two: tuple[Stores, Stores]) -> None:
    _a, b = two
    assert b.node
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    key = _process_key(proc.pid)
    now = time.time()
    b.catalog.register_node(NodeRow(id="gone", host="h", pid=proc.pid, process=key, role="daemon", dicom_ports="",
                                    http_port=None, version="", started_at=now, heartbeat_at=now, stopped_at=None))
    assert "gone" not in b.node.expired()  # fresh heartbeat, process running
    proc.kill()
    proc.wait()
    assert "gone" in b.node.expired()


def test_a_clean_stop_releases_every_claim(two: tuple[Stores, Stores]) -> None:
    a, b = two
    assert a.node and b.node
    a.node.claim(SESSION, 1)
    a.node.stop()
    assert b.catalog.claims() == []
    assert {s.row.id: s.state for s in b.node.states()}[a.node.id] == "stopped"


def _staging_job(stores: Stores, tmp_path: Path) -> tuple[int, int]:
    """A built session whose archive job ``stores``' node has begun (staging) while holding its claim."""
    assert stores.node
    session = _session(stores, tmp_path)
    stores.prearchive.build(session)
    assert stores.node.claim(SESSION, session)
    return session, stores.catalog.begin_archive(session, overwrite="none", actor="a", work_dir="")


def test_recovery_leaves_a_live_nodes_archive_alone_and_rolls_back_an_expired_ones(
        two: tuple[Stores, Stores], tmp_path: Path) -> None:
    a, b = two
    assert a.node and b.node
    # node a is in the middle of archiving (its job is staging) and holds the session
    session, job = _staging_job(a, tmp_path)
    assert b.archiver.recover() == [] and b.prearchive.recover() == []
    assert b.catalog.job(job).state == JobState.STAGING
    with pytest.raises(InvalidState):
        b.archiver.archive(session)
    # node a dies: the other node's watcher takes its claim over and rolls the job back
    _expire(a)
    watcher = SessionWatcher(b.config, b.catalog, b.prearchive, b.archiver, b.node)
    done = watcher.take_over()
    assert done == [f"archive job {job}: rolled back (session {session} RECEIVING)"]
    assert b.catalog.job(job).state == JobState.FAILED
    assert b.catalog.session(session).status == Status.RECEIVING
    # and a later archive by b goes through (built again first)
    b.prearchive.build(session)
    b.archiver.archive(session)
    assert len(b.catalog.sessions(Stage.ARCHIVE)) == 1


def test_a_node_that_lost_its_claim_cannot_plan_or_commit(two: tuple[Stores, Stores], tmp_path: Path) -> None:
    a, b = two
    assert a.node and b.node
    session, job = _staging_job(a, tmp_path)
    _expire(a)
    assert b.node.claim(SESSION, session)  # b took the expired claim over
    with pytest.raises(ClaimLost):
        a.catalog.plan_archive(job, "s", "l", [], fence=(SESSION, str(session), a.node.id))
    assert a.catalog.job(job).state == JobState.STAGING


def test_dicomd_status_lists_the_nodes_with_their_claims(two: tuple[Stores, Stores]) -> None:
    from click.testing import CliRunner

    from dicomd.cli import main

    a, b = two
    assert a.node and b.node
    a.node.claim(SESSION, 9)
    result = CliRunner().invoke(main, ["status", "--config", a.config.source, "--json"])
    assert result.exit_code == 0, result.output
    import json

    nodes = {n["id"]: n for n in json.loads(result.output)["nodes"]}
    assert nodes[a.node.id]["holds"] == ["session 9"] and nodes[a.node.id]["state"] == "alive"
    assert nodes[b.node.id]["holds"] == []
    text = CliRunner().invoke(main, ["status", "--config", a.config.source]).output
    assert "nodes" in text and a.node.id in text and "session 9" in text
