"""The same-key lock of ingest across nodes: on PostgreSQL an advisory lock (flock is not reliable on
network file systems), on SQLite flock; one interface (dicomd.catalog.locks)."""

from __future__ import annotations

import threading
from pathlib import Path

from dicomd.catalog import Catalog
from dicomd.catalog.locks import AdvisoryKeyLock, FileKeyLock
from dicomd.dburl import parse, sqlite_file
from tests.conftest import wait_for


def test_sqlite_keeps_flock(tmp_path: Path) -> None:
    catalog = Catalog(sqlite_file(tmp_path / "catalog.sqlite"))
    try:
        assert isinstance(catalog.key_lock(tmp_path / "locks"), FileKeyLock)
    finally:
        catalog.close()


def test_on_postgresql_two_nodes_exclude_each_other_on_one_key(pg_url: str, tmp_path: Path) -> None:
    # two catalogs stand for two nodes on two machines (each its own connections)
    first, second = Catalog(parse(pg_url, tmp_path)), Catalog(parse(pg_url, tmp_path))
    try:
        lock_a, lock_b = first.key_lock(tmp_path / "a"), second.key_lock(tmp_path / "b")
        assert isinstance(lock_a, AdvisoryKeyLock)
        acquired, release = threading.Event(), threading.Event()

        def other_node() -> None:
            with lock_b.hold("prearchive/P/T/S/SCANS/1/DICOM/1.2.3.dcm"):
                acquired.set()

        with lock_a.hold("prearchive/P/T/S/SCANS/1/DICOM/1.2.3.dcm"):
            thread = threading.Thread(target=other_node)
            thread.start()
            # the other node is queued on the server for the same advisory lock, and has not got it
            wait_for(lambda: first.reader().execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").fetchone()[0] == 1)
            assert not acquired.is_set()
        thread.join(timeout=30)
        assert acquired.is_set()
        with lock_a.hold("another key"), lock_b.hold("yet another key, another stripe"):
            pass  # other keys (on other stripes) do not wait for each other
    finally:
        first.close()
        second.close()
