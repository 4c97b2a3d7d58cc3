"""The status table: derived sets keep today's members, the code makes only changes the table
allows, and set_status refuses a session in a status its caller did not expect."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomd import lifecycle
from dicomd.archive import Archiver, CopyWriter
from dicomd.catalog import Catalog
from dicomd.config import load
from dicomd.stores import Stores
from dicomd.errors import Conflict, HeldForReview, InvalidState, NotFound
from dicomd.testing.generator import generate_study, write_study
from dicomd.ingest import Source
from dicomd.lifecycle import Change, Stage, Status
from dicomd.pipeline import SessionWatcher
from tests.conftest import wait_for, write_config


def test_derived_sets_keep_the_members_and_order_dicomd_used() -> None:
    assert lifecycle.RECEIVABLE == ("RECEIVING", "BUILDING", "READY", "ERROR", "CONFLICT", "REVIEW")
    assert lifecycle.BUILDABLE == ("RECEIVING", "BUILDING", "READY", "ERROR", "CONFLICT", "REVIEW")
    assert lifecycle.ARCHIVABLE == ("READY", "ERROR", "CONFLICT", "REVIEW", "RECEIVING")
    assert lifecycle.SETTABLE == ("READY", "RECEIVING", "ERROR")
    assert set(lifecycle.HANDING_ON) == {"ARCHIVING", "MOVING"}
    assert lifecycle.ACTIONABLE == {
        "prearchive": ("RECEIVING", "READY", "ERROR", "CONFLICT", "REVIEW"), "archive": ("ARCHIVED",),
    }
    assert lifecycle.STATUSES[Stage.PREARCHIVE] == (
        "RECEIVING", "BUILDING", "READY", "ARCHIVING", "MOVING", "DELETING", "ERROR", "CONFLICT", "REVIEW")
    assert lifecycle.NEEDS_ATTENTION == ("ERROR", "CONFLICT", "REVIEW")
    assert lifecycle.OPEN_JOB_STATES == ("staging", "moving", "done")


def test_callers_use_the_derived_sets() -> None:
    from dicomd import storecheck
    from dicomd.cli import common, ops, prearchive
    from dicomd import operations

    assert operations.SETTABLE == ("READY", "RECEIVING", "ERROR")
    assert storecheck.ACTIONABLE is lifecycle.ACTIONABLE
    assert ops.PROBLEM_STATES == ("ERROR", "CONFLICT", "REVIEW")
    assert prearchive.PREARCHIVE_STATES == (
        "RECEIVING", "BUILDING", "READY", "ARCHIVING", "MOVING", "DELETING", "ERROR", "CONFLICT", "REVIEW")
    assert common.STATUS_COLOURS == {
        "READY": "green", "ARCHIVED": "green", "RECEIVING": "cyan", "BUILDING": "cyan", "ARCHIVING": "cyan",
        "MOVING": "cyan", "DELETING": "cyan", "ERROR": "red", "CONFLICT": "red", "REVIEW": "yellow",
        "held": "yellow", "retried": "green", "deleted": "bright_black",
    }


def test_every_status_is_in_the_table_with_a_tone() -> None:
    named = {s for t in lifecycle.TRANSITIONS.values() for s in (*t.sources, *t.targets)}
    assert named == set(Status)
    assert set(lifecycle.TONES) == {*Status, *lifecycle.QuarantineStatus}
    assert set(lifecycle.TRANSITIONS) == set(Change)


def test_allowed_reads_the_table() -> None:
    assert lifecycle.allowed(None, Status.RECEIVING) and lifecycle.allowed(None, Status.ARCHIVED)
    assert not lifecycle.allowed(None, Status.READY)
    assert lifecycle.allowed(Status.REVIEW, Status.ARCHIVING)
    assert not lifecycle.allowed(Status.BUILDING, Status.ARCHIVING)
    assert not lifecycle.allowed(Status.DELETING, Status.RECEIVING)
    assert not lifecycle.allowed(Status.ARCHIVED, Status.RECEIVING)
    assert all(lifecycle.allowed(a, b) for a, b in itertools.product(lifecycle.RECEIVABLE, lifecycle.SETTABLE))


def test_job_states_only_move_forward() -> None:
    reachable = {s for nxt in lifecycle.JOB_TRANSITIONS.values() for s in nxt}
    assert lifecycle.JobState.STAGING not in reachable
    assert set(lifecycle.JOB_TRANSITIONS) == set(lifecycle.JobState)


# ---------------------------------------------------------------- set_status and expect=


def open_session(catalog: Catalog, label: str = "S1") -> int:
    return catalog.open_prearchive_session(
        project="demo", subject="P1", label=label, study_uid=f"2.25.{len(label)}", subject_from="", session_from="",
        source="test", auto_archive=None, prevent_anon=False,
    ).id


def test_set_status_with_expect_refuses_other_statuses(catalog: Catalog) -> None:
    # Given a session that is being deleted
    session_id = open_session(catalog)
    catalog.set_status(session_id, Status.DELETING, expect=lifecycle.RECEIVABLE)
    history = catalog.history(session_id)
    # When a build tries to start, expecting a status new data may join
    with pytest.raises(InvalidState, match="session is DELETING, not RECEIVING or BUILDING"):
        catalog.set_status(session_id, Status.BUILDING, expect=lifecycle.BUILDABLE)
    # Then nothing changed
    assert catalog.session(session_id).status == Status.DELETING
    assert catalog.history(session_id) == history


def test_set_status_without_expect_checks_nothing(catalog: Catalog) -> None:
    session_id = open_session(catalog)
    catalog.set_status(session_id, Status.BUILDING)
    row = catalog.set_status(session_id, Status.RECEIVING, "build interrupted by a restart", actor="recovery")
    assert row.status == "RECEIVING" and row.reason == "build interrupted by a restart"
    assert [h["status"] for h in catalog.history(session_id)] == ["RECEIVING", "BUILDING", "RECEIVING"]


def test_set_status_of_a_gone_session_is_not_found(catalog: Catalog) -> None:
    with pytest.raises(NotFound):
        catalog.set_status(999, Status.READY, expect=lifecycle.RECEIVABLE)


def test_begin_archive_refuses_a_session_that_is_not_archivable(catalog: Catalog) -> None:
    session_id = open_session(catalog)
    catalog.set_status(session_id, Status.MOVING)
    with pytest.raises(InvalidState, match="can be archived only when READY, ERROR, CONFLICT, REVIEW, RECEIVING"):
        catalog.begin_archive(session_id, overwrite="none", actor="t", work_dir="")


# ---------------------------------------------------------------- what the code really does


class HoldingWriter(CopyWriter):
    """A writer that asks for a person's review (as a burned-in annotation check would)."""

    def review_reason(self) -> str | None:
        return "burned-in annotation (test)"


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    s = Stores.open(load(write_config(tmp_path)))
    yield s
    s.close()


class Sender:
    def __init__(self, stores: Stores, tmp_path: Path) -> None:
        self.stores, self.tmp_path, self.calls = stores, tmp_path, 0

    def study(self, seed: int) -> int:
        """Stage one study (again, if sent before); returns the prearchive session that took it."""
        self.calls += 1
        study = generate_study(seed, series=1, instances_per_series=2, study_description="demo")
        staged = [self.stores.ingest.stage(f, Source(kind="TEST"), move=True)
                  for f in write_study(study, self.tmp_path / f"send{self.calls}")]
        return staged[-1].session.id


@pytest.mark.both_backends
def test_every_status_change_the_code_makes_is_in_the_table(stores: Stores, tmp_path: Path) -> None:
    catalog, prearchive, archiver = stores.catalog, stores.prearchive, stores.archiver
    # history rows go with their session (deleted or archived): a trigger keeps a copy for this test
    catalog.write(lambda conn: conn.execute("CREATE TABLE history_seen AS SELECT * FROM history WHERE 1 = 0"))
    copy = "INSERT INTO history_seen VALUES (NEW.id, NEW.session_id, NEW.at, NEW.status, NEW.reason, NEW.actor);"
    if catalog.dialect == "sqlite":
        catalog.write(lambda conn: conn.execute(f"CREATE TRIGGER history_seen AFTER INSERT ON history BEGIN {copy} END"))
    else:
        catalog.write(lambda conn: conn.execute(
            f"CREATE FUNCTION history_seen() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN {copy} RETURN NEW; END $f$"))
        catalog.write(lambda conn: conn.execute(
            "CREATE TRIGGER history_seen AFTER INSERT ON history FOR EACH ROW EXECUTE FUNCTION history_seen()"))
    send = Sender(stores, tmp_path)
    watcher = SessionWatcher(stores.config, catalog, prearchive, archiver)

    def conflict_after_tick(session_id: int) -> bool:
        watcher.tick()
        return catalog.session(session_id).status == Status.CONFLICT

    # receive, build, archive into a new archive session
    first = send.study(1)
    assert prearchive.build(first).status == Status.READY
    archiver.archive(first)
    # three more sessions, opened before any of them goes (SQLite reuses the id of a deleted newest
    # row, and history rows outlive their session)
    late, other, third = send.study(1), send.study(2), send.study(3)
    # the same study again is late data; the watcher builds it and, overwrite none, makes it a conflict
    assert catalog.session(late).late_for is not None
    wait_for(lambda: conflict_after_tick(late))
    with pytest.raises(Conflict):
        archiver.archive(late, overwrite="none")
    archiver.archive(late, overwrite="append")  # merged into the archive session
    # set over HTTP, move to another project (rebuilt there), delete
    prearchive.build(other)
    for status in (Status.ERROR, Status.READY):
        catalog.set_status(other, status, "set over HTTP", expect=lifecycle.RECEIVABLE, actor="http:test")
    prearchive.move(other, "auto")
    prearchive.delete(other)
    # new data for a READY session; a build and an archive interrupted by a restart
    prearchive.build(third)
    assert send.study(3) == third and catalog.session(third).status == Status.RECEIVING
    catalog.set_status(third, Status.BUILDING, expect=lifecycle.BUILDABLE)
    prearchive.recover()
    catalog.begin_archive(third, overwrite="none", actor="t", work_dir="")
    archiver.recover()
    # held for review, then archived by a person who looked
    holding = Archiver(stores.config, catalog, stores.layout, HoldingWriter)
    with pytest.raises(HeldForReview):
        holding.archive(third)
    holding.archive(third, force_review=True)
    assert len({late, other, third, *(r.id for r in catalog.sessions(Stage.ARCHIVE))}) == 5  # no id reused

    history = catalog.reader().execute("SELECT session_id, status FROM history_seen ORDER BY id").fetchall()
    steps: list[tuple[str | None, str]] = []
    for _session, rows in itertools.groupby(sorted(history, key=lambda r: r[0]), key=lambda r: r[0]):
        statuses = [status for _s, status in rows]
        steps += zip([None, *statuses], statuses)
    assert [s for s in steps if not lifecycle.allowed(*s)] == []
    # and the walk took every change in the table
    def takes(t: lifecycle.Transition, before: str | None, after: str) -> bool:
        return after in t.targets and (before in t.sources if t.sources else before is None)

    taken = {change for change, t in lifecycle.TRANSITIONS.items() if any(takes(t, *step) for step in steps)}
    assert taken == set(Change)
