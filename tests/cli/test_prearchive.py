"""`dicomd prearchive ...` on a store populated through the real ingest path."""

from __future__ import annotations

from dicomd.catalog import ARCHIVE, PREARCHIVE

XNAT_KEYS = {"project", "timestamp", "folderName", "subject", "status", "tag", "url", "scans", "instances"}


def test_list_json_has_the_contract_keys_newest_first(store):
    first = store.ingest_study(1)
    second = store.ingest_study(2)
    rows = store.cli_json("prearchive", "list")
    assert [r["url"] for r in rows] == [second.url, first.url]
    assert XNAT_KEYS <= set(rows[0])
    assert rows[0]["scans"] == 2 and rows[0]["instances"] == 6 and rows[0]["tag"] == second.study_instance_uid


def test_list_table_has_the_issue_columns_and_filters(store):
    demo = store.ingest_study(1, description="DEMO")
    store.ingest_study(2, description="unknown project")  # routes to Unassigned
    result = store.cli("prearchive", "list", "--project", "demo")
    assert result.exit_code == 0
    header, *lines = result.stdout.splitlines()
    for title in ("project", "session", "subject", "timestamp", "status", "scans", "instances", "modalities",
                  "study date", "last activity"):
        assert title in header
    assert len(lines) == 1 and demo.label in lines[0] and "\x1b[" not in result.stdout  # no colour in a pipe
    assert store.cli_json("prearchive", "list", "--status", "receiving") == []
    assert len(store.cli_json("prearchive", "list", "--status", "READY")) == 2


def test_show_lists_scans_history_and_warnings(store):
    row = store.ingest_study(3, series=3, instances=2)
    data = store.cli_json("prearchive", "show", row.label)
    assert [s["instances"] for s in data["scans_detail"]] == [2, 2, 2]
    assert [h["status"] for h in data["history"]] == ["RECEIVING", "BUILDING", "READY"]
    assert data["warnings"] == []
    text = store.cli("prearchive", "show", f"{row.project}/{row.timestamp}/{row.label}").stdout
    assert "scans" in text and "history" in text and row.study_instance_uid in text


def test_session_names_url_prefix_and_ambiguity(store):
    a = store.ingest_study(4)
    b = store.ingest_study(5)
    assert store.cli_json("prearchive", "show", a.url)["url"] == a.url
    common = "".join(x for x, y in zip(a.label, b.label) if x == y)[:3]  # "PID": matches both
    result = store.cli("prearchive", "show", common)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "matches 2 sessions" in result.stderr
    assert a.label in result.stderr and b.label in result.stderr
    assert store.cli_json("prearchive", "show", a.label[:-1] if not b.label.startswith(a.label[:-1])
                          else a.label)["url"] == a.url


def test_unknown_session_is_one_line_exit_1_and_verbose_shows_traceback(store):
    result = store.cli("prearchive", "show", "nope")
    assert result.exit_code == 1 and result.stderr.strip() == "Error: no prearchive session named 'nope'"
    verbose = store.cli("-v", "prearchive", "show", "nope")
    assert verbose.exit_code == 1 and "Traceback" in verbose.stderr


def test_usage_errors_exit_2(store):
    assert store.cli("prearchive", "move", "x").exit_code == 2  # --to missing
    assert store.cli("prearchive", "frobnicate").exit_code == 2
    assert store.cli("prearchive", "list", "--status", "NOPE").exit_code == 2


def test_archive_json_contract_and_archive_list(store):
    row = store.ingest_study(6)
    results = store.cli_json("prearchive", "archive", row.label)
    assert results == [{"session": row.url, "archived": results[0]["archived"], "instances": 6}]
    archived = store.cli_json("archive", "list")
    assert {"project", "subject", "label", "study_instance_uid", "scans", "instances"} <= set(archived[0])
    assert archived[0]["label"] == row.label and archived[0]["instances"] == 6
    shown = store.cli_json("archive", "show", f"demo/{row.label}")
    assert shown["history"][0]["status"] == "ARCHIVED" and len(shown["scans_detail"]) == 2
    assert store.stores.catalog.sessions(PREARCHIVE) == []


def test_archive_again_warns_then_conflicts_and_overwrite_delete_needs_yes(store):
    row = store.ingest_study(7)
    assert store.cli("prearchive", "archive", row.label).exit_code == 0
    again = store.ingest_study(7)  # the same study sent again: a new prearchive session
    warnings = store.cli_json("prearchive", "show", again.label)["warnings"]
    assert any("already has" in w for w in warnings)
    refused = store.cli("prearchive", "archive", again.label)
    assert refused.exit_code == 1 and "already exists in the archive" in refused.stderr
    assert store.cli("prearchive", "archive", again.label, "--overwrite", "delete").exit_code == 2
    done = store.cli("prearchive", "archive", again.label, "--overwrite", "delete", "--yes")
    assert done.exit_code == 0, done.output
    assert len(store.stores.catalog.sessions(ARCHIVE)) == 1


def test_several_sessions_one_failure_still_runs_the_others(store):
    unassigned = store.ingest_study(8, description="no such project")
    good = store.ingest_study(9)
    result = store.cli("prearchive", "archive", unassigned.label, good.label)
    assert result.exit_code == 1
    assert "Unassigned cannot be archived" in result.stderr
    assert good.url in result.stdout
    assert [r.label for r in store.stores.catalog.sessions(ARCHIVE)] == [good.label]


def test_move_fixes_routing(store):
    row = store.ingest_study(10, description="no such project")
    assert row.project == "Unassigned"
    moved = store.cli_json("prearchive", "move", row.label, "--to", "DEMO")  # alias of demo
    assert moved[0]["moved"].startswith("/prearchive/projects/demo/") and moved[0]["status"] == "READY"
    unknown = store.cli("prearchive", "move", row.label, "--to", "nosuch")
    assert unknown.exit_code == 2 and "no project 'nosuch'" in unknown.stderr


def test_delete_asks_unless_yes(store):
    row = store.ingest_study(11)
    refused = store.cli("prearchive", "delete", row.label)
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    assert store.prearchive()
    assert store.cli("prearchive", "delete", row.label, "--yes").exit_code == 0
    assert store.prearchive() == []
    assert not (store.stores.layout.root / row.relative_dir).exists()


def test_rebuild_drops_rows_whose_file_is_gone(store):
    row = store.ingest_study(12)
    victim = store.stores.catalog.instances(row.id)[0]
    (store.stores.layout.root / victim.path).unlink()
    result = store.cli_json("prearchive", "rebuild", row.label)
    assert result[0]["instances"] == 5 and result[0]["status"] == "READY"


def test_preview_without_anonymization_says_so(store):
    row = store.ingest_study(13)
    result = store.cli("prearchive", "preview", row.label)
    assert result.exit_code == 0 and "anonymization is not configured for project 'demo'" in result.stdout


def test_preview_lists_what_anonymization_changes(tmp_path):
    from dicomd.config import load
    from dicomd.stores import Stores
    from tests.cli.conftest import Store
    from tests.conftest import write_config

    config_path = write_config(tmp_path, projects="[projects.demo.anonymize]\nenabled = true\n")
    stores = Stores.open(load(config_path))
    try:
        anon = Store(config_path, stores, tmp_path)
        row = anon.ingest_study(14, series=2, instances=2)
        report = anon.cli_json("prearchive", "preview", row.label, "--scan", "2")
        assert report["enabled"] and [s["scan_id"] for s in report["scans"]] == ["2"]
        changes = {c["keyword"]: c for c in report["scans"][0]["changes"]}
        assert changes["PatientName"]["action"] in ("changed", "removed")
        assert changes["PatientName"]["before"] and changes["PatientName"]["after"] != changes["PatientName"]["before"]
        assert report["label"] != row.label  # the session label came from Patient ID: pseudonymised
        before = anon.stores.catalog.instances(row.id)
        assert all((anon.stores.layout.root / i.path).stat().st_size == i.size for i in before)
        text = anon.cli("prearchive", "preview", row.label).stdout
        assert "PatientName" in text and "scan 1" in text and "scan 2" in text
    finally:
        stores.close()


def test_mapped_fields_show_and_filter_the_archive_with_where(store):
    from dicomd.mappings import MappingStore

    MappingStore(store.stores.catalog).upsert(
        {"scope": "site", "fieldName": "mod", "fieldType": "string", "dicomTag": "(0008,0060)"})
    mr = store.ingest_study(15)
    ct = store.ingest_study(16, modality="CT")
    assert store.cli_json("prearchive", "show", mr.label)["custom"] == {"mod": "MR"}
    assert "mapped fields" in store.cli("prearchive", "show", mr.label).stdout
    assert store.cli("prearchive", "archive", mr.label, ct.label).exit_code == 0
    assert [r["label"] for r in store.cli_json("archive", "list", "--where", "mod=CT")] == [ct.label]
    assert store.cli_json("archive", "list", "--where", "mod=US") == []
    assert store.cli("archive", "list", "--where", "mod").exit_code == 2


def test_show_a_session_still_receiving_sums_its_scans_from_the_instances(store):
    row = store.ingest_study(17, series=2, instances=3, build=False)
    data = store.cli_json("prearchive", "show", row.label)
    assert data["status"] == "RECEIVING"
    assert [(s["scan_id"], s["instances"]) for s in data["scans_detail"]] == [("1", 3), ("2", 3)]
