"""`dicomd anon check | preview | map` through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from dicomd.cli import main
from dicomd.testing.generator import generate_study, write_study

SITE = 'version "6.1"\nproject != "Unassigned" ? (0008,1030) := project\n(0010,0010) := subject\n'


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "dicomd.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        "[projects.demo.anonymize]\nenabled = true\n"
        'options = ["retain_long_modified_dates"]\n'
    )
    return path


def test_check_ok_and_bad(tmp_path: Path):
    good = tmp_path / "good.das"
    good.write_text(SITE)
    bad = tmp_path / "bad.das"
    bad.write_text('version "6.1"\n(0010,0010) := \n')
    runner = CliRunner()
    ok = runner.invoke(main, ["anon", "check", str(good)])
    assert ok.exit_code == 0 and "OK" in ok.output
    failed = runner.invoke(main, ["anon", "check", str(good), str(bad)])
    assert failed.exit_code == 1
    assert "line 2, column 16" in failed.output


def test_preview_then_map(tmp_path: Path):
    config = _config(tmp_path)
    study = generate_study(5, series=1, instances_per_series=1, rows=8, cols=8)
    path = write_study(study, tmp_path / "in")[0]
    runner = CliRunner()
    shown = runner.invoke(main, ["anon", "preview", "--config", str(config), "--project", "demo", "--json",
                                 str(path)])
    assert shown.exit_code == 0, shown.output
    report = json.loads(shown.output)
    assert report["fingerprint"] == "PS3.15-basic+retain_long_modified_dates"
    assert any(c["keyword"] == "PatientName" and c["action"] == "changed" for c in report["changes"])
    mapped = runner.invoke(main, ["anon", "map", "--config", str(config), "demo", "--json"])
    assert mapped.exit_code == 0, mapped.output
    rows = json.loads(mapped.output)
    shown_id = f"{study[0].PatientID} [{study[0].IssuerOfPatientID}]"  # a new key: the ID with its issuer
    assert {"kind": "patient_id", "original": shown_id} == {
        k: v for k, v in next(r for r in rows if r["kind"] == "patient_id").items() if k in ("kind", "original")}
    unknown = runner.invoke(main, ["anon", "preview", "--config", str(config), "--project", "nope", str(path)])
    assert unknown.exit_code == 1 and "no project" in unknown.output
