"""`dicomd catalog migrate --to`: a real SQLite catalog and keys file copied into a real PostgreSQL
server, verified, resumable, idempotent; refused into a non-empty target or while dicomd serves."""

from __future__ import annotations


import pytest

from dicomd.anonymize.pseudonyms import PseudonymStore
from dicomd.auth import Auth
from dicomd.catalog import ARCHIVE, PREARCHIVE, Catalog
from dicomd.catalog.transfer import copy_database
from dicomd.catalogmove import CATALOG_SETS
from dicomd.config import load
from dicomd.dburl import parse
from dicomd.errors import StorageFailure
from dicomd.layout import Layout
from dicomd.runlock import RunLock
from dicomd.stores import Stores
from tests.cli.conftest import Store
from tests.pgserver import PASSWORD, PgServer


@pytest.fixture
def filled(store: Store) -> Store:
    """A SQLite catalog with prearchive and archive sessions, a user, and a project key with a pair."""
    store.ingest_study(1)
    archived = store.ingest_study(2)
    store.stores.archiver.archive(archived.id)
    Auth(store.stores.catalog).add_user("alice", "correct horse", admin=True)
    keys = PseudonymStore(store.stores.layout.pseudonyms)
    keys.project_key("demo")
    keys.record("demo", "PatientID", "ORIGINAL-1", "PSEUDO-1")
    keys.close()
    return store


def test_migrate_copies_catalog_and_keys_and_a_rerun_is_a_no_op(filled: Store, postgres: PgServer) -> None:
    # Given an empty catalog database and an empty keys database
    target, keys_target = postgres.new_database(template="template0"), postgres.new_database(template="template0")
    before = {stage: [(s.id, s.label, s.instances) for s in filled.stores.catalog.sessions(stage)]
              for stage in (PREARCHIVE, ARCHIVE)}
    key = PseudonymStore(filled.stores.layout.pseudonyms).project_key("demo")
    filled.stores.close()
    # When the catalog and its keys are migrated
    result = filled.cli("catalog", "migrate", "--to", target, "--keys-to", keys_target)
    # Then every table is copied and verified, and the password is shown nowhere
    assert result.exit_code == 0, result.output
    assert "copied, counts verified" in result.output and "sessions" in result.output
    assert PASSWORD not in result.output
    # And a second run changes nothing
    again = filled.cli("catalog", "migrate", "--to", target, "--keys-to", keys_target)
    assert again.exit_code == 0, again.output
    assert again.output.count("already migrated, counts verified") == 2
    # And dicomd on PostgreSQL sees the same sessions, user and key, and hands out new ids after the copied ones
    config_path = filled.config_path
    config_path.write_text(config_path.read_text() + f'\n[catalog]\nurl = "{target}"\n[keys]\nurl = "{keys_target}"\n')
    stores = Stores.open(load(config_path))
    try:
        assert stores.catalog.dialect == "postgresql"
        assert {stage: [(s.id, s.label, s.instances) for s in stores.catalog.sessions(stage)]
                for stage in (PREARCHIVE, ARCHIVE)} == before
        assert Auth(stores.catalog).authenticate("alice", "correct horse") is not None
        moved = PseudonymStore(stores.config.keys_url)
        assert moved.project_key("demo") == key
        assert moved.lookup("demo")[0]["pseudonym"] == "PSEUDO-1"
        moved.close()
        new = stores.catalog.open_prearchive_session(
            project="demo", subject="P9", label="NEW", study_uid="2.25.99", subject_from="", session_from="",
            source="test", auto_archive=None, prevent_anon=False)
        assert new.id > max(i for rows in before.values() for i, _l, _n in rows)
    finally:
        stores.close()


def test_migrate_refuses_a_non_empty_target_and_a_running_daemon(filled: Store, postgres: PgServer) -> None:
    # Given a target that already holds a catalog with data
    busy = postgres.new_database()
    other = Catalog(parse(busy, filled.tmp))
    other.event("someone else's", {})
    other.close()
    refused = filled.cli("catalog", "migrate", "--to", busy)
    assert refused.exit_code != 0 and "not empty" in refused.output
    # And while dicomd serves this data directory, nothing is copied
    lock = RunLock.serving(Layout(filled.stores.config.data_dir))
    try:
        running = filled.cli("catalog", "migrate", "--to", postgres.new_database(template="template0"))
    finally:
        lock.release()
    assert running.exit_code != 0 and "dicomd serve is running" in running.output


def test_an_interrupted_copy_resumes_where_it_stopped(filled: Store, postgres: PgServer) -> None:
    target = parse(postgres.new_database(template="template0"), filled.tmp)
    source = filled.stores.config.catalog_url.path
    assert source is not None
    filled.stores.close()

    def stop_in_instances(table: str, done: int, total: int) -> None:
        if table == "instances" and done >= 4:
            raise KeyboardInterrupt  # as if the operator pressed Ctrl-C mid-copy

    with pytest.raises(KeyboardInterrupt):
        copy_database(source, target, CATALOG_SETS, batch_rows=2, progress=stop_in_instances)
    report = copy_database(source, target, CATALOG_SETS, batch_rows=2)
    assert report.resumed and report.counts["instances"] == 12
    assert 0 < report.copied["instances"] < 12  # only what the first run had not committed


def test_a_wrong_password_is_reported_masked(filled: Store, postgres: PgServer) -> None:
    url = postgres.url("postgres").replace(PASSWORD, "not-the-password")
    result = filled.cli("catalog", "migrate", "--to", url)
    assert result.exit_code != 0 and "not-the-password" not in result.output and "***" in result.output
    with pytest.raises(StorageFailure) as failure:
        Catalog(parse(url, filled.tmp))
    assert "not-the-password" not in str(failure.value)
