"""The group-commit writer: results, savepoints, failed commits, the durable flag, close."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dicomd.catalog import Catalog
from dicomd.errors import StorageFailure
from tests.conftest import wait_for

FULL, NORMAL = 2, 1  # PRAGMA synchronous (synchronous_commit on/off on PostgreSQL)


@contextmanager
def one_batch(catalog: Catalog, calls: int) -> Iterator[ThreadPoolExecutor]:
    """Hold the writer inside a call while ``calls`` writes are queued from other threads, so that
    they are committed together as the next batch."""
    entered, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        entered.set()
        release.wait(30)

    with ThreadPoolExecutor(max_workers=calls + 1) as pool:
        held = pool.submit(catalog.write, hold)
        assert entered.wait(30)
        try:
            yield pool
            # the queue is the writer's own: the only way to know every call is waiting in it
            wait_for(lambda: catalog.queued_writes == calls, message=f"{calls} writes never queued")
        finally:
            release.set()
        held.result(timeout=30)


def insert_event(kind: str) -> Callable[[sqlite3.Connection], int]:
    def txn(conn: sqlite3.Connection) -> int:
        return int(conn.execute("INSERT INTO events(at, kind) VALUES (0, ?) RETURNING id", (kind,)).fetchone()[0])

    return txn


def kinds(catalog: Catalog) -> dict[int, str]:
    return dict(catalog.reader().execute("SELECT id, kind FROM events").fetchall())


def test_concurrent_writers_each_get_their_own_result(catalog: Catalog) -> None:
    # Given 40 threads writing at once, queued into one batch
    futures: list[Future[int]] = []
    with one_batch(catalog, 40) as pool:
        futures = [pool.submit(catalog.write, insert_event(f"t{i}")) for i in range(40)]
    # Then each got the id of its own row, and every row is committed
    ids = [f.result(timeout=30) for f in futures]
    assert len(set(ids)) == 40
    rows = kinds(catalog)
    assert [rows[i] for i in ids] == [f"t{i}" for i in range(40)]


def test_many_threads_without_coordination_all_commit(catalog: Catalog) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(lambda i: catalog.write(insert_event(f"free{i}")), range(200)))
    rows = kinds(catalog)
    assert [rows[i] for i in ids] == [f"free{i}" for i in range(200)]


def test_a_raising_call_is_rolled_back_alone(catalog: Catalog) -> None:
    def fails(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO events(at, kind) VALUES (0, 'doomed')")
        raise ValueError("refused by the caller's rule")

    # Given a batch of a good call, a raising call and another good call
    with one_batch(catalog, 3) as pool:
        before = pool.submit(catalog.write, insert_event("before"))
        failing = pool.submit(catalog.write, fails)
        wait_for(lambda: catalog.queued_writes == 2)  # keep the order: good, raising, good
        after = pool.submit(catalog.write, insert_event("after"))
    # Then the raising call gets its own exception and leaves nothing behind; the others commit
    with pytest.raises(ValueError, match="refused"):
        failing.result(timeout=30)
    rows = kinds(catalog)
    assert rows[before.result(timeout=30)] == "before" and rows[after.result(timeout=30)] == "after"
    assert "doomed" not in rows.values()


def test_a_failed_commit_fails_every_call_in_its_batch(catalog: Catalog) -> None:
    # Given a table whose foreign key is checked only at COMMIT
    catalog.write(lambda conn: conn.execute(
        "CREATE TABLE notes(id BIGINT PRIMARY KEY,"
        " session_id BIGINT REFERENCES sessions(id) DEFERRABLE INITIALLY DEFERRED)"
    ))

    def dangling(conn: sqlite3.Connection) -> str:
        conn.execute("INSERT INTO notes(id, session_id) VALUES (1, 424242)")
        return "inserted"

    # When a batch holds a call that breaks it and an innocent call
    with one_batch(catalog, 2) as pool:
        bad = pool.submit(catalog.write, dangling)
        innocent = pool.submit(catalog.write, insert_event("innocent"))
    # Then both are told the write failed, and neither is in the file
    for future in (bad, innocent):
        with pytest.raises(StorageFailure, match="catalog write failed"):
            future.result(timeout=30)
    assert "innocent" not in kinds(catalog).values()
    assert catalog.reader().execute("SELECT COUNT(*) FROM notes").fetchone()[0] == 0
    # And the writer carries on
    later = catalog.write(insert_event("later"))
    assert kinds(catalog)[later] == "later"


def synchronous(conn: sqlite3.Connection) -> int:
    """The batch's commit mode: SQLite's PRAGMA synchronous, or PostgreSQL's synchronous_commit."""
    if isinstance(conn, sqlite3.Connection):
        return int(conn.execute("PRAGMA synchronous").fetchone()[0])
    return {"on": FULL, "off": NORMAL}[conn.execute("SHOW synchronous_commit").fetchone()[0]]


def test_durable_flag_sets_the_batch_synchronous_mode(catalog: Catalog) -> None:
    assert catalog.write(synchronous) == FULL
    assert catalog.write(synchronous, durable=False) == NORMAL
    assert catalog.write(synchronous) == FULL


def test_one_durable_call_makes_its_whole_batch_durable(catalog: Catalog) -> None:
    with one_batch(catalog, 2) as pool:
        relaxed = pool.submit(catalog.write, synchronous, durable=False)
        durable = pool.submit(catalog.write, synchronous)
    assert relaxed.result(timeout=30) == FULL and durable.result(timeout=30) == FULL


def test_sync_dirs_are_accepted_with_the_write(catalog: Catalog, tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    assert catalog.write(lambda conn: 7, sync_dirs=(folder, folder)) == 7


def test_a_closed_catalog_refuses_writes(catalog: Catalog) -> None:
    catalog.write(insert_event("before close"))
    catalog.close()
    with pytest.raises(StorageFailure, match="closed"):
        catalog.write(insert_event("after close"))


def test_readers_see_commits_from_other_threads(catalog: Catalog, tmp_path: Path) -> None:
    # Given a second Catalog on the same database (the CLI next to the daemon)
    other = Catalog(catalog.url)
    try:
        event_id = catalog.write(insert_event("shared"))
        seen: list[Any] = []
        thread = threading.Thread(target=lambda: seen.append(kinds(other).get(event_id)))
        thread.start()
        thread.join(30)
        assert seen == ["shared"]
    finally:
        other.close()


def test_the_catalog_comes_back_after_its_connections_are_killed(catalog: Catalog) -> None:
    if catalog.dialect != "postgresql":
        pytest.skip("PostgreSQL only: a SQLite file has no server connection to lose")
    # Given a catalog that has written and read (a writer connection and a pooled reader)
    first = catalog.write(insert_event("before"))
    assert kinds(catalog)[first] == "before"
    # When the server ends every one of its connections (a restart, an operator's pg_terminate_backend)
    killer = Catalog(catalog.url)
    try:
        killer.reader().execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()")
    finally:
        killer.close()
    # Then reads go on, and a write fails at most once (never reported as committed) before the writer reconnects
    assert kinds(catalog)[first] == "before"
    results = []
    for attempt in range(2):
        try:
            results.append(catalog.write(insert_event(f"after{attempt}")))
        except StorageFailure:
            continue
    assert results and all(kinds(catalog)[i].startswith("after") for i in results)


def test_an_interrupted_leader_leaves_no_transaction_open(catalog: Catalog) -> None:
    # Given a leading caller interrupted (KeyboardInterrupt) inside its batch, mid-transaction
    def interrupted(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO events(at, kind) VALUES (0, 'interrupted')")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        catalog.write(interrupted)
    # Then the next write commits on its own, and the interrupted row is not in the catalog
    catalog.write(insert_event("after"))
    assert "after" in kinds(catalog).values() and "interrupted" not in kinds(catalog).values()


def test_close_answers_calls_nobody_leads(catalog: Catalog) -> None:
    # Given a call queued behind a leader that holds the writer past close()'s patience
    entered, release = threading.Event(), threading.Event()
    with ThreadPoolExecutor(max_workers=2) as pool:
        held = pool.submit(catalog.write, lambda conn: (entered.set(), release.wait(30)))
        assert entered.wait(30)
        queued = pool.submit(catalog.write, insert_event("queued"))
        wait_for(lambda: catalog.queued_writes == 1)
        # When the catalog closes meanwhile (the leader is released only afterwards)
        closer = threading.Thread(target=catalog.close)
        closer.start()
        wait_for(lambda: catalog._closed, message="close() did not start")
        release.set()
        closer.join(30)
        # Then both callers have their answer: none waits forever
        held.result(timeout=30)
        queued.exception(timeout=30)
