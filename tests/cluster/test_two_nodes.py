"""Two real `dicomd serve` nodes (subprocesses on their own ports) sharing one catalog and one data
directory: a study sent half to each ends as one session, built and archived once; a node killed
(SIGKILL, at a crash point) in the middle of an archive job is taken over by the other node, and
nothing acknowledged is lost or duplicated."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import pytest

from dicomd.catalog import ARCHIVE, PREARCHIVE, Catalog
from dicomd.config import load
from dicomd.testing.generator import generate_study
from tests.cluster.conftest import catalog_lines
from tests.conftest import write_config
from tests.reliability.harness import SendResult, ServeProcess, check_only, send_tracking, wait_for

PROJECTS = """
[projects.auto]
auto_archive = 4
overwrite = "append"
"""
CLUSTER = """
[cluster]
heartbeat_seconds = 0.2
claim_expiry_seconds = 2
"""


class Cluster:
    """Node configs (same data directory and catalog; each node its own idle time) and the nodes."""

    def __init__(self, tmp_path: Path, catalog_section: str) -> None:
        self.tmp_path = tmp_path
        self.catalog_section = catalog_section
        self.data_dir = tmp_path / "data"
        self.nodes: list[ServeProcess] = []

    def node(self, name: str, idle: float, crashpoint: str = "") -> ServeProcess:
        folder = self.tmp_path / name
        folder.mkdir()
        config = write_config(folder, CLUSTER + self.catalog_section, projects=PROJECTS)
        text = config.read_text().replace("session_idle_seconds = 0.5", f"session_idle_seconds = {idle}")
        config.write_text(text.replace('log_level = "DEBUG"', 'log_level = "INFO"'))
        serve = ServeProcess(config, self.data_dir, folder / "dicomd.log")
        self.nodes.append(serve)
        return serve.start(crashpoint=crashpoint)

    def catalog(self) -> Catalog:
        return Catalog(load(self.nodes[0].config_path, {"data_dir": self.data_dir}).catalog_url)

    def stop(self) -> None:
        for serve in self.nodes:
            if serve.alive():
                serve.terminate()

    def logs(self) -> str:
        return "".join(s.log_path.read_text(errors="replace") for s in self.nodes)

    def check_exactly_once(self, acknowledged: set[str]) -> None:
        report = check_only(load(self.nodes[0].config_path, {"data_dir": self.data_dir}))
        assert report.ok, report.describe()
        wrong = {uid: report.archive_uids[uid] for uid in acknowledged if report.archive_uids[uid] != 1}
        assert not wrong, f"acknowledged instances not exactly once in the archive: {wrong}"
        assert not report.prearchive_uids


@pytest.fixture
def cluster(tmp_path: Path, catalog_section: str) -> Iterator[Cluster]:
    made = Cluster(tmp_path, catalog_section)
    yield made
    made.stop()


def _send_halves(ports: list[int], datasets: list) -> set[str]:
    """Half the study to each node at the same time, as a load balancer would spread two associations."""
    half = len(datasets) // 2
    results = [SendResult(), SendResult()]
    threads = [threading.Thread(target=send_tracking, args=(port, part, result), kwargs={"timeout": 20})
               for port, part, result in zip(ports, (datasets[:half], datasets[half:]), results)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for result in results:
        assert not result.refused and not result.unanswered and not result.error, result
    return {uid for result in results for uid in result.acknowledged}


def _archived(catalog: Catalog) -> bool:
    return not catalog.sessions(PREARCHIVE) and len(catalog.sessions(ARCHIVE)) == 1


def test_a_study_split_across_two_nodes_is_one_session_built_and_archived_once(cluster: Cluster) -> None:
    a, b = cluster.node("a", idle=3.0), cluster.node("b", idle=3.0)
    study = generate_study(7, series=2, instances_per_series=4, rows=16, cols=16, study_description="auto")
    acknowledged = _send_halves([a.port, b.port], study)
    assert len(acknowledged) == 8
    catalog = cluster.catalog()
    try:
        wait_for(lambda: _archived(catalog), timeout=30, message="the study was not archived")
        wait_for(lambda: catalog.claims() == [], timeout=10, message="a claim was never released")
        [session] = catalog.sessions(ARCHIVE)
        assert session.instances == 8
        assert len(catalog.events(kinds=["archived"])) == 1
        jobs = catalog.reader().execute("SELECT state FROM archive_jobs").fetchall()
        assert jobs == [("clean",)]  # one archive job in all: no node tried a second one
        nodes = {row.id: row for row in catalog.nodes()}
        assert len(nodes) == 2 and all(row.stopped_at is None for row in nodes.values())
    finally:
        catalog.close()
    logs = cluster.logs()
    assert logs.count("dicomd.pipeline: built ") == 1 and logs.count("auto-archived") == 1, logs
    cluster.stop()
    cluster.check_exactly_once(acknowledged)


@pytest.mark.slow
@pytest.mark.parametrize("backend,point", [("postgresql", "archive.staging"), ("postgresql", "archive.moving"),
                                           ("sqlite", "archive.staging")])  # (kept lean: the same code path)
def test_a_node_killed_in_an_archive_job_is_taken_over_by_the_other(tmp_path: Path, request: pytest.FixtureRequest,
                                                                   backend: str, point: str) -> None:
    cluster = Cluster(tmp_path, catalog_lines(request, backend))
    request.addfinalizer(cluster.stop)
    # node a builds and auto-archives (node b never builds on its own: idle 1 h) and dies at the
    # crash point inside the archive job; node b's watcher finds the job's claim expired and rolls
    # the job back (staging) or forward (moving)
    a = cluster.node("a", idle=1.0, crashpoint=point)
    b = cluster.node("b", idle=3600)
    study = generate_study(11, series=2, instances_per_series=3, rows=16, cols=16, study_description="auto")
    result = send_tracking(a.port, study, SendResult(), timeout=20)
    assert a.wait_dead(timeout=30) == -9, f"node a did not die at {point}:\n{a.log_tail()}"
    acknowledged = set(result.acknowledged)
    rest = [ds for ds in study if str(ds.SOPInstanceUID) not in acknowledged]
    if rest:  # a loaded machine let a build before the last instances came: the sender retries on b
        again = send_tracking(b.port, rest, SendResult(), timeout=20)
        assert len(again.acknowledged) == len(rest), again
        acknowledged |= set(again.acknowledged)
    catalog = cluster.catalog()
    try:
        def taken_over() -> bool:
            states = [s for (s,) in catalog.reader().execute("SELECT state FROM archive_jobs").fetchall()]
            return states == (["failed"] if point == "archive.staging" else ["clean"]) and not catalog.claims()

        wait_for(taken_over, timeout=40, message=f"node b did not take over the archive job:\n{b.log_tail()}")
        archived = catalog.sessions(ARCHIVE)
        if point == "archive.staging":  # rolled back: the session takes data again, nothing archived
            assert archived == [] and catalog.events(kinds=["archived"]) == []
            assert {s.status for s in catalog.sessions(PREARCHIVE)} == {"RECEIVING"}
        else:  # rolled forward: archived once
            assert len(archived) == 1 and len(catalog.events(kinds=["archived"])) == 1
    finally:
        catalog.close()
    assert "taking over" in b.log_path.read_text(), b.log_tail()
    cluster.stop()
    report = check_only(load(cluster.nodes[0].config_path, {"data_dir": cluster.data_dir}))
    assert report.ok, report.describe()
    wrong = {uid: report.copies(uid) for uid in acknowledged if report.copies(uid) != 1}
    assert not wrong, f"acknowledged instances not exactly once in the stores: {wrong}"
