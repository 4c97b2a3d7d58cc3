"""Guarantee 2: SIGKILL at any point, restart, and nothing acknowledged is lost or duplicated.

Two campaigns against a real `dicomd serve` subprocess:
- crash points: the daemon kills itself (SIGKILL) at each named step of receive, build and
  archive (dicomd.crashpoints.crashpoint); an operator process does the same during move and delete;
- random kills: seeded SIGKILLs from the test, during receive and during build/archive.
After every kill the stores are recovered exactly as a restart does and checked with
dicomd.storecheck.check_store; at the end a clean daemon drains everything into the archive and
every acknowledged SOP Instance UID must be there exactly once.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from dicomd.catalog import PREARCHIVE, READY, Catalog
from dicomd.config import load
from dicomd.stores import Stores
from dicomd.testing.generator import generate_study, write_study
from dicomd.ingest import Source
from dicomd.layout import Layout
from click.testing import CliRunner

from dicomd.cli import main
from dicomd.crashpoints import CRASHPOINT_ENV
from dicomd.storecheck import StoreReport, tree_files
from tests.conftest import ENGINE_ENV, write_config
from tests.reliability.harness import (
    REPO,
    SendResult,
    ServeProcess,
    check_only,
    recover_and_check,
    send_in_thread,
    send_tracking,
    wait_for,
)

PROJECTS = """
[projects.auto]
auto_archive = 4
overwrite = "append"

[projects.auto.anonymize]  # archive staging anonymizes: kills land inside de-identification too
enabled = true
options = ["retain_uids"]

[projects.demo]
auto_archive = 0

[projects.other]
auto_archive = 0
"""
RECEIVE_POINTS = ["ingest.installed", "ingest.recorded"]
PIPELINE_POINTS = [
    "build.started", "archive.staging", "archive.planned", "archive.moving", "archive.committed", "archive.cleaning",
]
OPERATOR_POINTS = ["move.started", "move.renamed", "delete.started", "delete.removed"]


def _snapshot(data_dir: Path, config_path: Path) -> tuple:
    """Files (size, mtime) and the catalog's session, instance and job rows: what check must not change."""
    import sqlite3

    files = tuple(sorted(tree_files(data_dir).items()))
    # SQLite files (catalog, pseudonym keys) may be checkpointed by SQLite itself on open: rows are compared instead
    files = tuple(f for f in files if not f[0].startswith(("catalog.sqlite", "locks/", "keys/")))
    url = load(config_path, {"data_dir": data_dir}).catalog_url
    tables = ("sessions", "instances", "archive_jobs")
    if url.is_postgresql:
        catalog = Catalog(url)
        try:
            rows = tuple(tuple(tuple(r) for r in catalog.reader().execute(f"SELECT * FROM {t} ORDER BY id").fetchall())
                         for t in tables)
        finally:
            catalog.close()
        return files, rows
    conn = sqlite3.connect(f"file:{data_dir / 'catalog.sqlite'}?mode=ro", uri=True)
    try:
        rows = tuple(tuple(conn.execute(f"SELECT * FROM {t} ORDER BY id")) for t in tables)
    finally:
        conn.close()
    return files, rows


class Campaign:
    """One data directory, the studies sent into it, and what the daemon acknowledged."""

    def __init__(self, tmp_path: Path, idle: float = 0.3, extra: str = "", catalog_url: str = "") -> None:
        """``catalog_url``: a postgresql:// catalog ('' = the SQLite file in the data directory)."""
        if catalog_url:
            extra += f'\n[catalog]\nurl = "{catalog_url}"\n'
        self.config_path = write_config(tmp_path, extra, projects=PROJECTS)
        text = self.config_path.read_text().replace("session_idle_seconds = 0.5", f"session_idle_seconds = {idle}")
        text = text.replace("watch_interval_seconds = 0.1", "watch_interval_seconds = 0.05")
        text = text.replace('log_level = "DEBUG"', 'log_level = "INFO"')
        self.config_path.write_text(text)
        self.data_dir = tmp_path / "data"
        self.serve = ServeProcess(self.config_path, self.data_dir, tmp_path / "dicomd.log")
        self.acknowledged: set[str] = set()
        self.unacknowledged: dict[str, object] = {}  # uid -> dataset still to (re)send
        self.rounds: list[str] = []

    def study(self, seed: int, project: str = "auto", series: int = 2, per_series: int = 3) -> list:
        return generate_study(seed, series=series, instances_per_series=per_series, rows=16, cols=16,
                              study_description=project)

    def outbox(self, new: list) -> list:
        """What a real sender sends next: the new study plus everything not yet acknowledged."""
        for ds in new:
            self.unacknowledged[str(ds.SOPInstanceUID)] = ds
        return list(self.unacknowledged.values())

    def record(self, result: SendResult) -> None:
        for uid in result.acknowledged:
            self.acknowledged.add(uid)
            self.unacknowledged.pop(uid, None)
        assert not result.refused, f"refused: {result.refused}"

    def after_kill(self, what: str, *, deleted: bool = False) -> StoreReport:
        before = _snapshot(self.data_dir, self.config_path)
        pending = self.dicomd_check()  # read-only: reports, changes nothing
        after = _snapshot(self.data_dir, self.config_path)
        changed = sorted(set(before[0]) ^ set(after[0]))
        assert after == before, f"after {what}: dicomd check changed the store: {changed[:6]} rows equal: {before[1] == after[1]}"
        done, report = recover_and_check(self.config_path, self.data_dir)
        assert len(pending["recovery"]) == len(done), (pending["recovery"], done)
        clean = self.dicomd_check()
        assert clean["ok"], f"after {what} and recovery, dicomd check still finds: {clean}"
        if deleted:  # an operator's delete that recovery finished: those instances are meant to go
            self.acknowledged = {uid for uid in self.acknowledged if report.copies(uid)}
        self.rounds.append(f"{what}: recovery did {len(done)} thing(s)")
        assert report.ok, f"after {what}:\n{report.describe()}\nrecovery: {done}"
        lost = [uid for uid in self.acknowledged if report.copies(uid) == 0]
        assert not lost, f"after {what}: acknowledged instances lost: {lost[:5]}"
        return report

    def dicomd_check(self) -> dict:
        runner = CliRunner()
        result = runner.invoke(main, ["check", "--config", str(self.config_path), "--data-dir", str(self.data_dir),
                                      "--json"])
        assert result.exit_code in (0, 1), result.output
        return json.loads(result.stdout)

    def drain(self) -> StoreReport:
        """Start a clean daemon, resend what is unacknowledged, wait until the prearchive is empty."""
        self.serve.start()
        try:
            if self.unacknowledged:
                result = send_tracking(self.serve.port, list(self.unacknowledged.values()), SendResult(), timeout=20)
                self.record(result)
                assert not self.unacknowledged, f"still unacknowledged: {result}"
            config = load(self.config_path, {"data_dir": self.data_dir})
            catalog = Catalog(config.catalog_url)
            try:
                wait_for(lambda: not catalog.sessions(PREARCHIVE), timeout=30)
            except AssertionError:
                left = [(s.url, s.status, s.reason) for s in catalog.sessions(PREARCHIVE)]
                raise AssertionError(f"prearchive did not drain: {left}\n{self.serve.dump_stacks()}") from None
            finally:
                catalog.close()
        finally:
            assert self.serve.terminate() == 0, self.serve.log_tail()
        report = check_only(load(self.config_path, {"data_dir": self.data_dir}))
        assert report.ok, report.describe()
        wrong = {uid: report.copies(uid) for uid in self.acknowledged if report.archive_uids[uid] != 1}
        assert not wrong, f"acknowledged instances not exactly once in the archive: {wrong}"
        assert not report.prearchive_uids
        archived = [s for s in report.sessions if s.stage == "archive" and s.project == "auto"]
        assert all(s.anonymization for s in archived), "auto-archived sessions were not anonymized"
        return report


def test_crash_at_every_step_of_receive_build_and_archive(tmp_path: Path) -> None:
    _crash_at(tmp_path, RECEIVE_POINTS + PIPELINE_POINTS)


@pytest.mark.slow
def test_crash_at_every_step_of_receive_on_the_pynetdicom_engine(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENGINE_ENV, "pynetdicom")
    _crash_at(tmp_path, RECEIVE_POINTS)


@pytest.mark.slow
def test_crash_at_every_step_of_build_and_archive_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    """The same campaign on a PostgreSQL catalog: every crash point of the pipeline and the
    recorded one of receive (the installed one is about files, the same on both backends)."""
    _crash_at(tmp_path, ["ingest.recorded"] + PIPELINE_POINTS, catalog_url=pg_url)


def _crash_at(tmp_path: Path, points: list[str], catalog_url: str = "") -> None:
    campaign = Campaign(tmp_path, catalog_url=catalog_url)
    for seed, point in enumerate(points, start=100):
        campaign.serve.start(crashpoint=point)
        thread, result = send_in_thread(campaign.serve.port, campaign.outbox(campaign.study(seed)), timeout=1.5)
        code = campaign.serve.wait_dead(timeout=30)
        result.abort()
        thread.join(timeout=30)
        assert code == -9, f"{point}: daemon exited with {code}, not by its crash point:\n{campaign.serve.log_tail()}"
        campaign.record(result)
        campaign.after_kill(point)
    report = campaign.drain()
    assert len(report.archive_uids) == len(campaign.acknowledged) > 0


def _operator(config_path: Path, data_dir: Path, session_id: int, action: str, crashpoint: str) -> int:
    """A separate process (like the CLI) that moves or deletes one session and dies at ``crashpoint``."""
    script = f"""
from dicomd.config import load
from dicomd.stores import Stores
stores = Stores.open(load({str(config_path)!r}, {{"data_dir": {str(data_dir)!r}}}))
if {action!r} == "move":
    stores.prearchive.move({session_id}, "other", actor="test")
else:
    stores.prearchive.delete({session_id}, actor="test")
"""
    env = {CRASHPOINT_ENV: crashpoint, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, timeout=60)
    return proc.returncode


def _stage_ready_sessions(campaign: Campaign, tmp_path: Path, seeds: list[int]) -> dict[int, int]:
    """Stage one demo study per seed in-process (as the daemon's ingest would); seed -> session id."""
    stores = Stores.open(load(campaign.config_path, {"data_dir": campaign.data_dir}))
    ids: dict[int, int] = {}
    try:
        for seed in seeds:
            study = campaign.study(seed, project="demo")
            for path in write_study(study, tmp_path / f"in{seed}"):
                staged = stores.ingest.stage(path, Source(kind="CLI"), move=True)
                campaign.acknowledged.add(staged.sop_instance_uid)
            ids[seed] = staged.session.id
            assert stores.prearchive.build(staged.session.id).status == READY
    finally:
        stores.close()
    return ids


def test_crash_during_move_and_delete(tmp_path: Path) -> None:
    _crash_during_move_and_delete(tmp_path)


@pytest.mark.slow
def test_crash_during_move_and_delete_on_postgresql(tmp_path: Path, pg_url: str) -> None:
    _crash_during_move_and_delete(tmp_path, catalog_url=pg_url)


def _crash_during_move_and_delete(tmp_path: Path, catalog_url: str = "") -> None:
    campaign = Campaign(tmp_path, catalog_url=catalog_url)
    sessions = _stage_ready_sessions(campaign, tmp_path, list(range(len(OPERATOR_POINTS))))
    per_study = len(campaign.study(0, project="demo"))
    for seed, point in enumerate(OPERATOR_POINTS):
        action = point.split(".")[0]
        code = _operator(campaign.config_path, campaign.data_dir, sessions[seed], action, point)
        assert code == -9, f"{point}: operator exited with {code}"
        report = campaign.after_kill(point, deleted=action == "delete")
        row = {s.id: s for s in report.sessions}.get(sessions[seed])
        if action == "move":  # finished by recovery: the whole session, now in the other project
            assert row is not None and (row.project, row.instances) == ("other", per_study), point
        else:  # the operator asked for a delete: recovery finishes it
            assert row is None, point
    campaign.serve.start()  # the daemon starts cleanly on the recovered store and stops cleanly
    assert campaign.serve.terminate() == 0, campaign.serve.log_tail()
    assert check_only(load(campaign.config_path, {"data_dir": campaign.data_dir})).ok


def _random_campaign(tmp_path: Path, seed: int, kills: int) -> Campaign:
    rng = random.Random(seed)
    campaign = Campaign(tmp_path, idle=0.2)
    for round_no in range(kills):
        study = campaign.study(1000 * seed + round_no, series=rng.randint(1, 3), per_series=rng.randint(2, 5))
        campaign.serve.start()
        outbox = campaign.outbox(study)
        thread, result = send_in_thread(campaign.serve.port, outbox, timeout=1.5)
        if rng.random() < 0.5:  # during receive: after the k-th acknowledgment
            k = rng.randint(1, max(1, len(outbox) - 1))
            wait_for(lambda: len(result.acknowledged) >= k or not thread.is_alive(), timeout=30)
            what = f"round {round_no}: kill after {k} acks"
        else:  # during build / archive: a random moment after the last answer
            thread.join(timeout=60)
            delay = rng.uniform(0.0, 0.8)
            threading.Event().wait(delay)  # the seeded kill moment itself, not a wait for a condition
            what = f"round {round_no}: kill {delay:.2f}s after the last answer"
        campaign.serve.kill()
        result.abort()
        thread.join(timeout=30)
        campaign.record(result)
        campaign.after_kill(what)
    campaign.drain()
    return campaign


def test_random_kills(tmp_path: Path) -> None:
    campaign = _random_campaign(tmp_path, seed=6, kills=4)
    assert campaign.acknowledged


@pytest.mark.slow
def test_random_kills_long(tmp_path: Path) -> None:
    campaign = _random_campaign(tmp_path, seed=11, kills=15)
    assert campaign.acknowledged


@pytest.mark.slow
def test_kills_while_the_drop_folder_is_being_read(tmp_path: Path) -> None:
    """Removed from the drop folder means staged: after each kill, every file gone from the folder
    is in the catalog; at the end every dropped instance is archived exactly once."""
    drop = tmp_path / "drop"
    drop.mkdir()
    campaign = Campaign(tmp_path, idle=0.2, extra=f"""
[[drop_folders]]
path = "{drop}"
project = "auto"
stable_seconds = 0.1
""")
    rng = random.Random(3)
    dropped: dict[str, str] = {}  # file name -> SOP Instance UID
    for round_no in range(3):
        study = campaign.study(500 + round_no, series=2, per_series=4)
        staging = tmp_path / f"staging{round_no}"
        for ds, file in zip(study, write_study(study, staging)):
            dropped[file.name] = str(ds.SOPInstanceUID)
        campaign.serve.start()
        for file in sorted(staging.iterdir()):
            file.rename(drop / file.name)
        k = rng.randint(1, len(study) - 1)
        names = [f"{study[0].Modality}.{ds.SOPInstanceUID}.dcm" for ds in study]
        wait_for(lambda: sum(not (drop / n).exists() for n in names) >= k, timeout=30)  # kill after k consumed
        campaign.serve.kill()
        gone = {uid for name, uid in dropped.items() if not (drop / name).exists()}
        campaign.acknowledged |= gone
        campaign.after_kill(f"drop round {round_no}")
    campaign.serve.start()
    wait_for(lambda: not any(drop.iterdir()), timeout=30)
    campaign.serve.terminate()
    campaign.acknowledged |= set(dropped.values())
    campaign.drain()


@pytest.mark.slow
def test_kills_during_http_uploads(tmp_path: Path) -> None:
    """An upload answered 200 is durable: after each kill its instances are in the catalog."""
    pytest.importorskip("dicomd.http.server")
    import io
    import zipfile

    import httpx

    from dicomd.auth import Auth

    campaign = Campaign(tmp_path, idle=0.2)
    campaign.config_path.write_text(campaign.config_path.read_text().replace(
        "[http]\nenabled = false\n", "[http]\nenabled = true\n"))
    stores = Stores.open(load(campaign.config_path, {"data_dir": campaign.data_dir}))
    Auth(stores.catalog).add_user("up", "correct-horse-1", admin=True)
    stores.close()
    campaign.serve.http = True
    rng = random.Random(8)
    seeds = iter(range(700, 800))
    for round_no in range(3):
        campaign.serve.start()
        url = f"http://127.0.0.1:{campaign.serve.http_port}"
        answered: list[list[str]] = []

        def upload() -> None:
            with httpx.Client(base_url=url, auth=("up", "correct-horse-1"), timeout=10) as client:
                while True:
                    study = campaign.study(next(seeds), series=1, per_series=3)
                    buf = io.BytesIO()
                    with zipfile.ZipFile(buf, "w") as zf:
                        for file in write_study(study, tmp_path / f"up{study[0].StudyInstanceUID}"):
                            zf.write(file, file.name)
                    try:
                        reply = client.post("/data/services/import", params={"project": "auto"},
                                            content=buf.getvalue(), headers={"Content-Type": "application/zip"})
                    except httpx.HTTPError:
                        return  # the daemon died under us: no answer, nothing promised
                    if reply.status_code == 200:
                        answered.append([str(ds.SOPInstanceUID) for ds in study])

        thread = threading.Thread(target=upload, daemon=True)
        thread.start()
        k = rng.randint(1, 4)
        wait_for(lambda: len(answered) >= k, timeout=30)
        threading.Event().wait(rng.uniform(0, 0.3))  # the seeded kill moment itself
        campaign.serve.kill()
        thread.join(timeout=30)
        for uids in answered:
            campaign.acknowledged |= set(uids)
        campaign.after_kill(f"http round {round_no}: {len(answered)} uploads answered")
    campaign.drain()
