"""dicomd.views: the rows both faces print, on real sessions (their keys are client contracts)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Iterator

import pytest

from dicomd import views
from dicomd.config import load
from dicomd.stores import Stores
from tests.cli.conftest import Store
from tests.conftest import write_config

XNAT_KEYS = ["project", "timestamp", "lastmod", "uploaded", "scan_date", "scan_time", "subject", "folderName",
             "name", "tag", "status", "url", "autoarchive", "prevent_anon", "prevent_auto_commit", "SOURCE",
             "VISIT", "PROTOCOL", "TIMEZONE", "scans", "instances", "modalities", "reason", "custom", "pixel_text"]
MILLIS = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    config_path = write_config(tmp_path)
    stores = Stores.open(load(config_path))
    try:
        yield Store(config_path, stores, tmp_path)
    finally:
        stores.close()


def test_date_formats() -> None:
    assert views.xnat_date("20240619") == "2024-06-19" and views.xnat_date("2024") == "2024"
    assert views.xnat_time("091425.123") == "09:14:25" and views.xnat_time("0914") == "0914"
    moment = time.mktime((2024, 6, 19, 9, 14, 25, 0, 0, -1)) + 0.123
    assert views.local_stamp(moment) == "2024-06-19 09:14:25"
    assert views.xnat_stamp(moment) == "2024-06-19 09:14:25.123"
    assert views.local_stamp(None) == views.xnat_stamp(0) == ""


def test_prearchive_row_has_xnats_columns(store: Store) -> None:
    row = store.ingest_study(1, series=2, instances=3)
    shown = views.xnat_row(row, store.stores.config)
    assert list(shown) == XNAT_KEYS
    assert (shown["folderName"], shown["name"], shown["status"], shown["url"]) == (row.label, row.label, "READY",
                                                                                   row.url)
    assert MILLIS.match(shown["lastmod"]) and MILLIS.match(shown["uploaded"])
    assert re.match(r"^\d{4}-\d\d-\d\d$", shown["scan_date"]) and re.match(r"^\d\d:\d\d:\d\d$", shown["scan_time"])
    assert (shown["autoarchive"], shown["prevent_anon"], shown["scans"], shown["instances"]) == ("Manual", "false",
                                                                                               2, 6)


def test_archive_and_experiment_rows(store: Store) -> None:
    pre = store.ingest_study(2)
    archived = store.stores.archiver.archive(pre.id)
    row = store.stores.catalog.session(archived.session_id)
    assert views.archive_row(row) == {
        "project": "demo", "subject": row.subject, "label": row.label, "study_instance_uid": row.study_instance_uid,
        "scans": 2, "instances": 6, "modalities": "MR", "scan_date": views.xnat_date(row.scan_date),
        "url": row.url, "archived_at": row.archived_at, "custom": {}}
    experiment = views.experiment_row(row)
    assert experiment["URI"] == f"/data/projects/demo/subjects/{row.subject}/experiments/{row.label}"
    assert experiment["xsiType"] == "xnat:mrSessionData"
    assert experiment["insert_date"] == views.local_stamp(row.archived_at)


def test_scan_summaries_before_a_build_match_the_built_scans_table(store: Store) -> None:
    # Given a session still RECEIVING: no scans table yet
    row = store.ingest_study(3, series=3, instances=2, build=False)
    assert store.stores.catalog.scans(row.id) == []
    before = views.scan_table(store.stores.catalog, row)
    # When it is built
    store.stores.prearchive.build(row.id)
    built = store.stores.catalog.session(row.id)
    after = views.scan_table(store.stores.catalog, built)
    # Then the summaries from the instance rows said what the build recorded
    keys = ("scan_id", "series_instance_uid", "series_number", "description", "modality", "instances", "bytes")
    assert [{k: s[k] for k in keys} for s in before] == [{k: s[k] for k in keys} for s in after]
    summaries = views.scan_summaries(store.stores.catalog.instances(row.id))
    assert [(s.scan_id, s.instances, s.bytes) for s in summaries] == [
        (s["scan_id"], s["instances"], s["bytes"]) for s in after]


def test_xnat_scan_rows_type_archive_scans_only(store: Store) -> None:
    row = store.ingest_study(4)
    pre = views.xnat_scan_rows(store.stores.catalog, row, "/data" + row.url)
    assert [r["ID"] for r in pre] == ["1", "2"] and all("xsiType" not in r for r in pre)
    assert pre[0]["URI"] == f"/data{row.url}/scans/1" and pre[0]["file_count"] == 3
    archived = store.stores.catalog.session(store.stores.archiver.archive(row.id).session_id)
    arc = views.xnat_scan_rows(store.stores.catalog, archived, "/data/projects/demo/x")
    assert {r["xsiType"] for r in arc} == {"xnat:mrScanData"}


def test_scan_order_numbers_first_then_names() -> None:
    assert sorted(["10", "2", "1.2.3", "-1", "abc", "1"], key=views.scan_order) == ["-1", "1", "2", "10", "1.2.3",
                                                                                  "abc"]
