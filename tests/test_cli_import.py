"""`dicomd import` through CliRunner on a real store."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from click.testing import CliRunner

from dicomd.catalog import PREARCHIVE
from dicomd.cli import main
from dicomd.config import load
from dicomd.stores import Stores
from dicomd.testing.generator import generate_study, write_study
from tests.conftest import write_config


def study(tmp_path: Path, seed: int, count: int = 3) -> list[Path]:
    datasets = generate_study(seed=seed, series=1, instances_per_series=count, rows=16, cols=16)
    return write_study(datasets, tmp_path / f"study{seed}")


def run(config: Path, *args: str):
    return CliRunner().invoke(main, ["import", "--config", str(config), *args])


def prearchive(config: Path) -> list:
    stores = Stores.open(load(config))
    try:
        return stores.catalog.sessions(PREARCHIVE)
    finally:
        stores.close()


def test_import_zip_and_folder_with_explicit_labels(tmp_path: Path) -> None:
    # Given a zip of one study and a folder of another
    config = write_config(tmp_path)
    archive = tmp_path / "one.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in study(tmp_path, 1):
            zf.write(p, p.name)
    folder = study(tmp_path, 2)[0].parent
    # When both are imported into one project with explicit labels
    result = run(config, str(archive), str(folder), "--project", "DEMO", "--subject", "S01", "--session", "S01_MR1")
    # Then the summary counts six files and the sessions carry the labels
    assert result.exit_code == 0, result.output
    assert "Staged 6 file(s) into 2 session(s); 0 duplicate(s), 0 quarantined." in result.stdout
    sessions = prearchive(config)
    assert {(s.project, s.subject, s.label) for s in sessions} == {("demo", "S01", "S01_MR1")}
    assert sum(s.instances for s in sessions) == 6
    # and the originals are untouched
    assert archive.exists() and len(list(folder.iterdir())) == 3


def test_json_summary_and_duplicates(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    folder = study(tmp_path, 3)[0].parent
    assert run(config, str(folder)).exit_code == 0
    result = run(config, str(folder), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["staged"], data["duplicates"], data["quarantined"]) == (0, 3, 0)
    assert len(data["sessions"]) == 1 and data["sessions"][0]["url"].startswith("/prearchive/projects/")


def test_a_bad_file_fails_its_path_only(tmp_path: Path) -> None:
    # Given a folder with a corrupt DICOM file and a good folder
    config = write_config(tmp_path)
    files = study(tmp_path, 4)
    bad = files[0].parent
    (bad / "notes.txt").write_bytes(files[0].read_bytes()[:600])  # DICOM, whatever its name says
    good = study(tmp_path, 5)[0].parent
    # When both are imported
    result = run(config, str(bad), str(good))
    # Then the bad one is refused whole, naming the file, the good one is staged, and the exit is 1
    assert result.exit_code == 1
    assert "notes.txt" in result.stderr and str(bad) in result.stderr
    assert "Staged 3 file(s) into 1 session(s)" in result.stdout
    assert sum(s.instances for s in prearchive(config)) == 3


def test_ignore_unparsable_quarantines(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    files = study(tmp_path, 6)
    folder = files[0].parent
    (folder / "cut.dcm").write_bytes(files[0].read_bytes()[:600])
    (folder / "notes.txt").write_text("not dicom")
    result = run(config, str(folder), "--ignore-unparsable")
    assert result.exit_code == 0, result.output
    assert "3 file(s)" in result.stdout and "1 quarantined" in result.stdout
    assert "cut.dcm" in result.stdout and "skipped 1 non-DICOM file(s): notes.txt" in result.stdout


def test_stray_files_beside_the_images_are_skipped_and_listed(tmp_path: Path) -> None:
    # Given a folder with a README, a manifest, a DICOMDIR and macOS/Windows litter beside the images
    config = write_config(tmp_path)
    folder = study(tmp_path, 8)[0].parent
    (folder / "README.txt").write_text("scans from the MR\n")
    (folder / "MANIFEST.json").write_text('{"files": 3}')
    (folder / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    # When it is imported
    result = run(config, str(folder), "--json")
    # Then the images are staged and the strays listed, not refused
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["staged"] == 3 and data["quarantined"] == 0
    assert sorted(s["member"] for s in data["skipped"]) == ["DICOMDIR", "MANIFEST.json", "README.txt", "Thumbs.db"]
    # and a folder with no DICOM at all is refused in words an operator understands
    empty = tmp_path / "docs"
    empty.mkdir()
    (empty / "MANIFEST.json").write_text("{}")
    result = run(config, str(empty))
    assert result.exit_code == 1
    assert "no DICOM files to import" in result.stderr and "MANIFEST.json: not a DICOM file" in result.stderr


def test_unknown_project_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    folder = study(tmp_path, 7)[0].parent
    result = run(config, str(folder), "--project", "nope")
    assert result.exit_code == 2
    assert "nope" in result.stderr


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(main, ["import", "--help"])
    assert result.exit_code == 0 and "Example:" in result.output


def test_the_progress_bar_shows_the_counts_an_upload_status_shows(tmp_path: Path) -> None:
    # Given a folder with three instances and a stray text file
    from dicomd.bulk import stage_batch
    from dicomd.cli.importing import _Meter
    from dicomd.ingest import Source

    config = write_config(tmp_path)
    folder = study(tmp_path, 9)[0].parent
    (folder / "notes.txt").write_text("not dicom")
    updates: list[str] = []

    class Bar:
        def update(self, _steps: int, current_item=None) -> None:
            updates.append(current_item.text())

    # When it is staged with the CLI's meter
    meter = _Meter(Bar())
    stores = Stores.open(load(config))
    try:
        tracker = meter.begin(1000)
        stage_batch(stores, folder, Source("CLI"), progress=meter, tracker=tracker)
    finally:
        stores.close()
    # Then the bar's text counts the files as the batch goes (the HTTP status reads the same tracker)
    assert updates[-1].startswith("3 files (4 files: 3 staged, 1 skipped)")
    assert tracker.snapshot()["phase"] == "staging" and tracker.staged == 3
