"""catalog.url and keys.url: validated at load with the key named, the password masked everywhere
(status, check, logs, errors), and the pseudonym keys on PostgreSQL in a database of their own."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from dicomd.anonymize.pseudonyms import PseudonymStore
from dicomd.catalog import PREARCHIVE
from dicomd.cli import main
from dicomd.config import load
from dicomd.daemon import Daemon
from dicomd.dburl import mask, parse
from dicomd.errors import ConfigError, Conflict
from dicomd.layout import Layout
from dicomd.runlock import RunLock
from dicomd.testing.generator import generate_study
from tests.conftest import send, wait_for, write_config
from tests.pgserver import PASSWORD, PgServer


@pytest.mark.parametrize("section,value,needle", [
    ("catalog", "mysql://u:secret@h/db", "catalog.url: mysql://u:***@h/db: only a file path or a postgresql:// URL"),
    ("catalog", "postgresql://u:secret@/db", "catalog.url: postgresql://u:***@/db: a PostgreSQL URL needs a host"),
    ("catalog", "postgresql://u:secret@h:5432", "catalog.url: postgresql://u:***@h:5432: a PostgreSQL URL needs a database"),
    ("keys", "postgresql://u:secret@h:x/db", "keys.url: postgresql://u:***@h:x/db: the port is not a number"),
])
def test_bad_urls_are_refused_at_load_naming_the_key(tmp_path: Path, section: str, value: str, needle: str) -> None:
    path = write_config(tmp_path, f'\n[{section}]\nurl = "{value}"\n')
    with pytest.raises(ConfigError) as failure:
        load(path)
    assert needle in str(failure.value) and "secret" not in str(failure.value)


def test_the_keys_may_not_share_the_catalogs_database(tmp_path: Path) -> None:
    url = "postgresql://dicomd:secret@db.example.org/dicomd"
    path = write_config(tmp_path, f'\n[catalog]\nurl = "{url}"\n[keys]\nurl = "{url}"\n')
    with pytest.raises(ConfigError, match="keys.url: must not be the catalog's database") as failure:
        load(path)
    assert "secret" not in str(failure.value)
    same_file = write_config(tmp_path, '\n[catalog]\nurl = "k.sqlite"\n[keys]\nurl = "k.sqlite"\n')
    with pytest.raises(ConfigError, match="keys.url"):
        load(same_file)


def test_defaults_are_the_files_in_the_data_dir(tmp_path: Path) -> None:
    config = load(write_config(tmp_path))
    assert config.catalog_url.path == Layout(config.data_dir).catalog
    assert config.keys_url.path == Layout(config.data_dir).pseudonyms


def test_mask_hides_passwords_in_urls_and_parameters() -> None:
    assert mask("postgresql://u:p%40ss@h/db and password=hunter2&x=1") == "postgresql://u:***@h/db and password=***&x=1"
    assert parse("postgresql://u:pw@h/db", Path("/")).masked == "postgresql://u:***@h/db"


@pytest.mark.both_backends
def test_status_and_check_name_the_backend_with_the_password_masked(
        tmp_path: Path, backend: str, make_daemon: Callable[..., Daemon], caplog: pytest.LogCaptureFixture) -> None:
    # Given a daemon that received a study (logging at DEBUG)
    caplog.set_level(logging.DEBUG)
    config_path = write_config(tmp_path)
    daemon = make_daemon(config_path)
    assert send(daemon.dicom_port(), generate_study(3, series=1, instances_per_series=2)) == [0, 0]
    wait_for(lambda: [s for s in daemon.stores.catalog.sessions(PREARCHIVE) if s.status == "READY"])
    # When status and check run next to it
    status = CliRunner().invoke(main, ["status", "--json", "--config", str(config_path)], catch_exceptions=False)
    check = CliRunner().invoke(main, ["check", "--json", "--config", str(config_path)], catch_exceptions=False)
    # Then both say which backend, and no output nor log line holds the password
    catalog = json.loads(status.stdout)["catalog"]
    assert catalog["backend"] == backend and json.loads(check.stdout)["catalog"] == catalog
    if backend == "postgresql":
        assert catalog["url"].startswith("postgresql://dicomd:***@127.0.0.1:")
    human = CliRunner().invoke(main, ["status", "--config", str(config_path)], catch_exceptions=False)
    assert f"{backend}: " in human.stdout
    for text in (status.stdout, check.stdout, human.stdout, caplog.text):
        assert PASSWORD not in text


def test_pseudonym_keys_in_their_own_postgresql_database(postgres: PgServer, tmp_path: Path) -> None:
    url = parse(postgres.new_database(template="template0"), tmp_path)
    store = PseudonymStore(url)
    key, version = store.key_and_version("demo")
    store.record("demo", "PatientID", "A", "X")
    store.record("demo", "PatientID", "A", "Y")  # the first pair recorded is kept
    store.close()
    again = PseudonymStore(url)  # a restart (another process) reads the same key
    assert again.key_and_version("demo") == (key, version)
    assert [r["pseudonym"] for r in again.lookup("demo")] == ["X"]
    assert again.export_keys()[0]["key"] == key.hex()
    assert again.import_keys(again.export_keys()) == ([], ["demo"])
    again.close()


def test_a_daemon_does_not_start_while_a_migration_holds_the_data_dir(tmp_path: Path) -> None:
    config = load(write_config(tmp_path))
    lock = RunLock.migrating(Layout(config.data_dir))
    try:
        with pytest.raises(Conflict, match="catalog migration is running"):
            Daemon(config).start()
    finally:
        lock.release()
