"""`dicomd status`, `dump`, `config check|keys`, `check`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from pydicom.data import get_testdata_file

from dicomd.cli import main
from dicomd.ingest import Source, quarantine


def test_status_counts_states_disk_and_last_refusals(store):
    store.ingest_study(1)
    store.ingest_study(2, build=False)
    junk = store.tmp / "junk.bin"
    junk.write_bytes(b"not dicom at all")
    quarantine(store.stores.layout, store.stores.catalog, junk, Source(kind="CLI"), "not a DICOM file", move=False)
    data = store.cli_json("status")
    assert data["prearchive"] == {"READY": 1, "RECEIVING": 1}
    assert data["quarantine_held"] == 1 and data["last_errors"][0]["detail"].endswith("not a DICOM file")
    assert data["receivers"][0]["ae_title"] == "DICOMD" and data["disk"]["free"] > 0
    text = store.cli("status").stdout
    assert "receivers" in text and "READY" in text and "last errors" in text


def test_status_while_the_daemon_runs_sees_its_port_listening(make_daemon, tmp_path):
    from tests.conftest import write_config

    config_path = write_config(tmp_path)
    daemon = make_daemon(config_path)
    port = daemon.dicom_port()
    result = CliRunner().invoke(main, ["status", "--config", str(config_path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["receivers"][0]["listening"] is None  # port 0 in the file
    text = config_path.read_text().replace("port = 0", f"port = {port}", 1)
    config_path.write_text(text)
    data = json.loads(CliRunner().invoke(main, ["status", "--config", str(config_path), "--json"]).stdout)
    assert data["receivers"][0]["port"] == port and data["receivers"][0]["listening"] is True


def test_dump_a_file_and_selected_tags(store):
    path = get_testdata_file("CT_small.dcm")
    text = store.cli("dump", path).stdout
    assert "(0008,0060) CS Modality" in text and "PixelData" in text and "bytes>" in text
    data = store.cli_json("dump", path, "--tag", "PatientName", "--tag", "(0008,0060)", "--tag", "00181020",
                          "--tag", "OtherPatientIDs")
    values = {e["keyword"]: e["value"] for e in data["elements"]}
    assert values["Modality"] == "CT" and values["PatientName"] == "CompressedSamples^CT1"
    assert values["OtherPatientIDs"] is None  # not present in the file
    assert store.cli("dump", path, "--tag", "NoSuchKeyword").exit_code == 2


def test_dump_a_session_and_a_scan(store):
    row = store.ingest_study(3, series=2, instances=2)
    data = store.cli_json("dump", row.label, "--scan", "2", "--tag", "SeriesNumber")
    assert data["elements"][0]["value"] == "2"
    assert "/SCANS/2/" in data["file"]
    result = store.cli("dump", "nothing-like-this")
    assert result.exit_code == 1 and "neither a file nor" in result.stderr


def test_dump_walks_sequences(store):
    text = store.cli("dump", get_testdata_file("rtplan.dcm")).stdout
    assert "-- item 1" in text and "BeamSequence" in text


def test_config_check_good_and_bad(tmp_path, config_file):
    runner = CliRunner()
    good = runner.invoke(main, ["config", "check", str(config_file)])
    assert good.exit_code == 0 and "OK" in good.stdout and "demo" in good.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('data_dir = "d"\n[[receivers]]\nae_title = "X"\nportt = 4\n')
    result = runner.invoke(main, ["config", "check", str(bad)])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "receivers[0].portt" in result.stderr and str(bad) in result.stderr


def test_config_check_reports_a_broken_anonymization_script(tmp_path):
    script = tmp_path / "broken.das"
    script.write_text('version "6.1"\n(0010,0010 := "x"\n')
    config = tmp_path / "c.toml"
    config.write_text(f'[projects.p.anonymize]\nenabled = true\nscript = "{script}"\n')
    result = CliRunner().invoke(main, ["config", "check", str(config)])
    assert result.exit_code == 1 and "projects.p.anonymize.script" in result.stderr


def test_config_keys_lists_every_key():
    rows = json.loads(CliRunner().invoke(main, ["config", "keys", "--json"]).stdout)
    keys = {r["key"] for r in rows}
    assert {"data_dir", "receivers[].port", "projects.<id>.anonymize.enabled"} <= keys


def test_check_is_clean_then_reports_a_missing_file_without_changing_anything(store):
    row = store.ingest_study(4)
    store.cli("prearchive", "archive", row.label)
    clean = store.cli("check")
    assert clean.exit_code == 0 and "consistent" in clean.stdout
    pending = store.ingest_study(5)
    victim = store.stores.catalog.instances(pending.id)[0]
    (store.stores.layout.root / victim.path).unlink()
    result = store.cli("check", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert any("not on disk" in line for line in report["recovery"])
    assert any(f["kind"] == "missing_file" for f in report["findings"])
    assert len(store.stores.catalog.instances(pending.id)) == 6  # dry run: the row is still there
