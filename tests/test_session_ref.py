"""dicomd.layout.SessionRef: session names, folders and urls, built and parsed in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.config import load
from dicomd.stores import Stores
from dicomd.layout import Layout, SessionRef
from tests.cli.conftest import Store
from tests.conftest import write_config

PRE = SessionRef.prearchive("demo", "20240619_091425123", "S1")
ARC = SessionRef.archive("demo", "SUBJ", "S1")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    config_path = write_config(tmp_path)
    stores = Stores.open(load(config_path))
    try:
        yield Store(config_path, stores, tmp_path)
    finally:
        stores.close()


def test_names_folders_and_urls_of_both_stages() -> None:
    assert (PRE.stage, ARC.stage) == (PREARCHIVE, ARCHIVE)
    assert PRE.url == "/prearchive/projects/demo/20240619_091425123/S1"
    assert PRE.uri == "/data/prearchive/projects/demo/20240619_091425123/S1"
    assert PRE.relative_dir == "prearchive/demo/20240619_091425123/S1"
    assert PRE.name == "demo/20240619_091425123/S1"
    assert ARC.url == "/archive/projects/demo/subjects/SUBJ/experiments/S1"
    assert ARC.browse_uri == "/data/projects/demo/subjects/SUBJ/experiments/S1"
    assert ARC.relative_dir == "archive/demo/SUBJ/S1"
    assert ARC.name == "demo/S1"


def test_catalog_rows_name_themselves_through_it(store: Store) -> None:
    # Given a built prearchive session and its archived copy
    pre = store.ingest_study(1)
    archived = store.stores.archiver.archive(pre.id)
    arc = store.stores.catalog.session(archived.session_id)
    # Then each row's url and folder are its SessionRef's, and the folders are where the files are
    for row in (pre, arc):
        ref = SessionRef.of(row)
        assert (row.url, row.relative_dir) == (ref.url, ref.relative_dir)
    assert SessionRef.of(arc) == SessionRef.archive("demo", arc.subject, arc.label)
    inst = store.stores.catalog.instances(arc.id)[0]
    assert SessionRef.from_dir(inst.path) == SessionRef.of(arc)
    assert (store.stores.layout.session_dir(arc.relative_dir) / Layout.instance_relpath(
        inst.scan_id, inst.sop_instance_uid)).is_file()


def test_urls_parse_back_with_what_lies_below() -> None:
    for ref in (PRE, ARC):
        assert SessionRef.from_url(ref.url.strip("/").split("/")) == (ref, [])
    assert SessionRef.from_url(PRE.url.strip("/").split("/") + ["scans", "2"]) == (PRE, ["scans", "2"])
    no_subject = SessionRef.archive("demo", "", "S1")
    assert SessionRef.from_url(["projects", "demo", "experiments", "S1"]) == (no_subject, [])
    for bad in ([], ["prearchive", "projects", "demo", "T"], ["projects", "demo"], ["x", "y", "z", "w", "v"]):
        assert SessionRef.from_url(bad) is None


@pytest.mark.parametrize("text", [
    "demo/20240619_091425123/S1", "/prearchive/projects/demo/20240619_091425123/S1",
    "/data/prearchive/projects/demo/20240619_091425123/S1", " REST/prearchive/projects/demo/20240619_091425123/S1/ ",
])
def test_what_an_operator_types_for_a_prearchive_session(text: str) -> None:
    assert SessionRef.from_name(text, PREARCHIVE) == PRE


@pytest.mark.parametrize(("text", "subject"), [
    ("demo/S1", ""), ("/archive/projects/demo/S1", ""), ("/archive/projects/demo/experiments/S1", ""),
    ("/data/archive/projects/demo/subjects/SUBJ/experiments/S1", "SUBJ"), ("demo/subjects/SUBJ/experiments/S1", "SUBJ"),
])
def test_what_an_operator_types_for_an_archived_session(text: str, subject: str) -> None:
    assert SessionRef.from_name(text, ARCHIVE) == SessionRef.archive("demo", subject, "S1")


def test_bare_labels_and_other_stages_are_not_session_names() -> None:
    assert SessionRef.from_name("S1", PREARCHIVE) is None
    assert SessionRef.name_parts("/data/prearchive/projects/S1", PREARCHIVE) == ["S1"]  # looked up as a label
    assert SessionRef.from_name(ARC.url, PREARCHIVE) is None
    assert SessionRef.from_name(PRE.url, ARCHIVE) is None
    assert SessionRef.from_name("demo/subjects/SUBJ/experiments/S1/scans/1", ARCHIVE) is None


def test_resolve_uses_the_same_names(store: Store) -> None:
    row = store.ingest_study(2)
    ref = SessionRef.of(row)
    for text in (ref.name, ref.url, ref.uri, row.label):
        assert store.stores.prearchive.resolve(text).id == row.id


def test_layout_paths() -> None:
    layout = Layout(Path("/srv/dicomd"))
    assert Layout.instance_relpath("3", "1.2.3") == "SCANS/3/DICOM/1.2.3.dcm"
    expected = layout.root / PRE.relative_dir / "SCANS/3/DICOM/1.2.3.dcm"
    assert layout.instance_path(PRE.relative_dir, "3", "1.2.3") == expected
    assert layout.pseudonyms == layout.keys / "pseudonyms.sqlite"
    first, second = layout.temp_dir("http-"), layout.temp_dir("http-")
    assert first.parent == layout.tmp and first.name.startswith("http-") and first != second
