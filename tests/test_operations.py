"""dicomd.operations: what both faces do, with their permission checks, on real stores.

Actors are real `User`s (as the HTTP login makes them) and the CLI's `LocalOperator`.
"""

from __future__ import annotations

import getpass
import shutil
import zipfile
from pathlib import Path
from typing import Iterator

import pytest
from pydicom.data import get_testdata_file

from dicomd import operations
from dicomd.auth import MANAGE, READ, UPLOAD, User
from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.config import load
from dicomd.routing import UNASSIGNED
from dicomd.stores import Stores
from dicomd.errors import Forbidden, InvalidInput, InvalidState, NotFound
from dicomd.testing.generator import generate_study, write_study
from dicomd.ingest import Source, quarantine
from dicomd.layout import SessionRef
from dicomd.operations import ImportPlan, LocalOperator
from dicomd.routing import Explicit
from tests.cli.conftest import Store
from tests.conftest import write_config

ADMIN = User("admin", True)
OWNER = User("owner", False, {"demo": "owner"})
MEMBER = User("member", False, {"demo": "member"})
COLLAB = User("collab", False, {"demo": "collaborator"})
OUTSIDER = User("outsider", False, {"auto": "owner"})
OPERATOR = LocalOperator("ops")


def open_store(tmp_path: Path, projects: str | None = None) -> Store:
    config_path = write_config(tmp_path, projects=projects)
    return Store(config_path, Stores.open(load(config_path)), tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(tmp_path)
    try:
        yield opened
    finally:
        opened.stores.close()


def actors_in_history(store: Store, *session_ids: int) -> set[str]:
    return {h["actor"] for sid in session_ids for h in store.stores.catalog.history(sid)}


# ---------------------------------------------------------------- who acts


def test_the_local_operator_may_do_everything_and_is_named_as_the_cli_names_it() -> None:
    assert LocalOperator.current().history_name == f"cli:{getpass.getuser()}"
    assert (OPERATOR.history_name, OPERATOR.name, OPERATOR.via) == ("cli:ops", "ops", "CLI")
    assert LocalOperator().history_name == "cli"
    for action in (READ, UPLOAD, MANAGE):
        for project in ("demo", UNASSIGNED, "no-such-project"):
            assert OPERATOR.can(action, project)
            OPERATOR.require(action, project)
    assert (OWNER.history_name, OWNER.via) == ("http:owner", "HTTP")


# ---------------------------------------------------------------- acting on sessions


def test_archive_as_the_operator_and_as_an_owner(store: Store) -> None:
    first, second = store.ingest_study(1), store.ingest_study(2)
    done = operations.archive(store.stores, OPERATOR, first, overwrite=None)
    assert done.before == first and done.instances == 6 and done.after is not None
    assert done.url == done.after.url and done.url.startswith("/archive/projects/demo/subjects/")
    assert done.uri == "/data" + done.url
    assert "cli:ops" in actors_in_history(store, first.id, done.after.id)
    by_owner = operations.archive(store.stores, OWNER, second, overwrite="none")
    assert by_owner.after is not None and "http:owner" in actors_in_history(store, second.id, by_owner.after.id)


def test_refused_actions_change_nothing(store: Store) -> None:
    row = store.ingest_study(3)
    for user in (MEMBER, COLLAB, OUTSIDER):
        with pytest.raises(Forbidden):
            operations.archive(store.stores, user, row, overwrite=None)
        with pytest.raises(Forbidden):
            operations.delete(store.stores, user, row)
        with pytest.raises(Forbidden):
            operations.set_status(store.stores, user, row, "ERROR")
        with pytest.raises(Forbidden):
            operations.move(store.stores, user, row, "auto")
    for user in (COLLAB, OUTSIDER):
        with pytest.raises(Forbidden):
            operations.rebuild(store.stores, user, row)
        with pytest.raises(Forbidden):
            operations.build(store.stores, user, row)
    assert store.stores.catalog.session(row.id) == row


def test_members_rebuild_and_owners_delete(store: Store) -> None:
    row = store.ingest_study(4)
    rebuilt = operations.rebuild(store.stores, MEMBER, row)
    assert rebuilt.current.status == "READY" and rebuilt.current.instances == 6
    gone = operations.delete(store.stores, OWNER, row)
    assert (gone.after, gone.current, gone.url, gone.uri) == (None, row, "", "")
    assert store.prearchive() == []


def test_move_needs_manage_here_and_upload_there(store: Store) -> None:
    row = store.ingest_study(5)
    with pytest.raises(Forbidden):
        operations.move(store.stores, OWNER, row, "auto")  # owns demo, nothing in auto
    with pytest.raises(NotFound, match="no project 'nosuch'"):
        operations.move(store.stores, ADMIN, row, "nosuch")
    moved = operations.move(store.stores, OPERATOR, row, "auto")
    assert moved.current.project == "auto" and moved.url.startswith("/prearchive/projects/auto/")
    assert not store.stores.layout.session_dir(row.relative_dir).exists()
    assert store.stores.layout.session_dir(moved.current.relative_dir).is_dir()


def test_move_all_checks_an_admins_target_before_reading_the_sources(store: Store) -> None:
    def sources() -> Iterator[SessionRef]:
        raise AssertionError("sources read before the target project was checked")
        yield  # pragma: no cover

    with pytest.raises(NotFound, match="no project 'nosuch'"):
        operations.move_all(store.stores, ADMIN, sources(), "nosuch")
    row = store.ingest_study(6)
    moved = operations.move_all(store.stores, ADMIN, [SessionRef.of(row)], "DEMO")
    assert [o.current.project for o in moved] == ["demo"]


def test_set_status_only_to_settable_states(store: Store) -> None:
    row = store.ingest_study(7)
    with pytest.raises(InvalidInput, match="status must be one of READY, RECEIVING, ERROR"):
        operations.set_status(store.stores, OWNER, row, "ARCHIVED")
    done = operations.set_status(store.stores, OWNER, row, "ERROR")
    assert (done.current.status, done.current.reason) == ("ERROR", "set over HTTP")


# ---------------------------------------------------------------- finding sessions


def test_permission_is_checked_before_anything_is_looked_up(store: Store) -> None:
    row = store.ingest_study(8)
    missing = SessionRef.prearchive("demo", "20000101_000000000", "NOPE")
    with pytest.raises(Forbidden):
        operations.prearchive_sessions(store.stores, OUTSIDER, [missing], READ)  # 403, not 404
    with pytest.raises(NotFound, match="no prearchive session demo/20000101_000000000/NOPE"):
        operations.prearchive_sessions(store.stores, COLLAB, [missing], READ)
    with pytest.raises(InvalidInput, match="not a prearchive session"):
        operations.prearchive_sessions(store.stores, ADMIN, [SessionRef.archive("demo", "S", "E")], READ)
    assert operations.prearchive_sessions(store.stores, COLLAB, [SessionRef.of(row)], READ) == [row]
    with pytest.raises(Forbidden):
        operations.readable_session(store.stores, OUTSIDER, missing)
    with pytest.raises(NotFound):
        operations.readable_session(store.stores, COLLAB, missing)
    assert operations.readable_session(store.stores, COLLAB, SessionRef.of(row)) == row


def test_session_for_an_archive_url_checks_the_subject_it_names(store: Store) -> None:
    pre = store.ingest_study(9)
    arc = store.stores.catalog.session(store.stores.archiver.archive(pre.id).session_id)
    assert operations.session_for(store.stores.catalog, SessionRef.archive("demo", "", arc.label)) == arc
    assert operations.session_for(store.stores.catalog, SessionRef.of(arc)) == arc
    with pytest.raises(NotFound, match=f"no archive session demo/WRONG/{arc.label}"):
        operations.session_for(store.stores.catalog, SessionRef.archive("demo", "WRONG", arc.label))


def test_readable_projects_resolve_aliases_and_refuse_the_others(store: Store) -> None:
    assert operations.readable_projects(store.stores, COLLAB, ["DEMO"]) == ["demo"]
    with pytest.raises(Forbidden):
        operations.readable_projects(store.stores, COLLAB, ["demo", "auto"])
    with pytest.raises(NotFound):
        operations.readable_projects(store.stores, ADMIN, ["nosuch"])


# ---------------------------------------------------------------- importing


def plan(project: str, *, archive: bool, session: str = "") -> ImportPlan:
    return ImportPlan(explicit=Explicit(project=project, session=session), archive=archive, overwrite=None,
                      ignore_unparsable=False, prevent_anon=False, auto_archive=None)


def upload_zip(store: Store, seed: int) -> Path:
    paths = write_study(generate_study(seed, series=2, instances_per_series=2), store.tmp / f"up{seed}")
    target = store.tmp / f"upload{seed}.zip"
    with zipfile.ZipFile(target, "w") as zf:
        for path in paths:
            zf.write(path, f"dicom/{path.name}")
    return target


def test_import_project_is_checked_before_the_upload(store: Store) -> None:
    assert operations.import_project(store.stores, MEMBER, "demo", archive=False) == "demo"
    assert operations.import_project(store.stores, ADMIN, "DEMO", archive=True) == "demo"
    with pytest.raises(Forbidden):  # as before this refactor: the check is on the name given, not the alias's ID
        operations.import_project(store.stores, MEMBER, "DEMO", archive=False)
    with pytest.raises(Forbidden):
        operations.import_project(store.stores, MEMBER, "demo", archive=True)  # archiving needs an owner
    with pytest.raises(Forbidden, match="only site admins may import without naming a project"):
        operations.import_project(store.stores, OWNER, "", archive=False)
    assert operations.import_project(store.stores, ADMIN, "", archive=False) == ""
    with pytest.raises(InvalidInput, match="cannot be archived into Unassigned"):
        operations.import_project(store.stores, ADMIN, UNASSIGNED, archive=True)


def test_import_then_archive(store: Store) -> None:
    staged = operations.import_upload(store.stores, MEMBER, upload_zip(store, 10), plan("demo", archive=False),
                                      address="member@127.0.0.1")
    assert [o.current.stage for o in staged] == [PREARCHIVE]
    assert staged[0].uri == SessionRef.of(staged[0].current).uri
    inst = store.stores.catalog.instances(staged[0].current.id)[0]
    assert inst.source == "HTTP:member@127.0.0.1"
    archived = operations.import_upload(store.stores, OWNER, upload_zip(store, 11),
                                        plan("demo", archive=True, session="DIRECT"), address="owner@127.0.0.1")
    assert [(o.current.stage, o.current.label, o.instances) for o in archived] == [(ARCHIVE, "DIRECT", 4)]
    assert archived[0].uri.startswith("/data/archive/projects/demo/subjects/")
    assert "http:owner" in actors_in_history(store, archived[0].before.id, archived[0].current.id)


def test_an_upload_with_nothing_to_stage_is_refused(store: Store) -> None:
    empty = store.tmp / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "no DICOM here")
    with pytest.raises(InvalidInput):
        operations.import_upload(store.stores, ADMIN, empty, plan("demo", archive=False), address="a@b")
    assert store.prearchive() == []


# ---------------------------------------------------------------- quarantine, warnings, preview


def test_retry_quarantined_stages_held_data_once(store: Store) -> None:
    path = store.tmp / "held.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), path)
    entry_id = quarantine(store.stores.layout, store.stores.catalog, path, Source(kind="DICOM"), "held", move=True)
    entry = store.stores.catalog.quarantine_entry(entry_id)
    staged = operations.retry_quarantined(store.stores, OPERATOR, entry, Explicit(project="demo", session="FIXED"))
    assert (staged.session.project, staged.session.label, staged.outcome) == ("demo", "FIXED", "added")
    assert store.stores.catalog.instances(staged.session.id)[0].source == f"CLI:quarantine/{entry_id}"
    again = store.stores.catalog.quarantine_entry(entry_id)
    assert again.status == operations.RETRIED
    with pytest.raises(InvalidState, match=f"entry {entry_id} is retried, not held"):
        operations.retry_quarantined(store.stores, OPERATOR, again, Explicit())


def test_session_warnings(store: Store) -> None:
    unassigned = store.ingest_study(12, description="elsewhere")
    assert unassigned.project == UNASSIGNED
    assert operations.session_warnings(store.stores, OPERATOR, unassigned) == [
        "routed to Unassigned: move it to a project before archiving (prearchive move --to)"]
    row = store.ingest_study(13)
    assert operations.session_warnings(store.stores, OPERATOR, row) == []
    failed = operations.set_status(store.stores, OPERATOR, row, "ERROR").current
    assert operations.session_warnings(store.stores, OPERATOR, failed) == ["ERROR: set over HTTP"]


def test_preview_says_when_anonymization_is_off(store: Store) -> None:
    row = store.ingest_study(14)
    report = operations.preview_anonymization(store.stores, OPERATOR, row)
    assert report == {"session": row.url, "enabled": False, "scans": [],
                      "message": "anonymization is not configured for project 'demo': archiving keeps the files as "
                                 "received"}


def test_preview_lists_changes_and_writes_nothing(tmp_path: Path) -> None:
    anon = open_store(tmp_path, projects="[projects.demo.anonymize]\nenabled = true\n")
    try:
        row = anon.ingest_study(15, series=2, instances=1)
        before = [(i.path, i.sha256) for i in anon.stores.catalog.instances(row.id)]
        report = operations.preview_anonymization(anon.stores, OPERATOR, row)
        assert report["enabled"] and [s["scan_id"] for s in report["scans"]] == ["1", "2"]
        keywords = {c["keyword"] for c in report["scans"][0]["changes"]}
        assert "PatientName" in keywords and report["label"] != row.label
        assert anon.stores.layout.pseudonyms.is_file()
        with pytest.raises(Exception, match="no scan 9"):
            operations.preview_anonymization(anon.stores, OPERATOR, row, ["9"])
        assert [(i.path, i.sha256) for i in anon.stores.catalog.instances(row.id)] == before
    finally:
        anon.stores.close()
