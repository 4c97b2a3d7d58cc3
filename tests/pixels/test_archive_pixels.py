"""Burned-in text through the real pipeline: C-STORE -> REVIEW with its reasons -> a rule in the
config -> `dicomd prearchive archive` -> the archived files checked pixel by pixel."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.cli import main
from dicomd.testing.generator import generate_study
from tests.conftest import send, wait_for, write_config
from tests.pixels.images import CORNER, HEADER, make_instance

PROJECTS = """
[projects.us]
auto_archive = 4
[projects.us.anonymize]
enabled = true

[projects.open]
auto_archive = 4
[projects.open.anonymize]
enabled = true
allow_burned_in = true
"""
NO_OCR = "[ocr]\nenabled = false\n"
RULE = """
[[pixel_rules]]
name = "{name}"
rectangles = [{header}, {corner}]
[pixel_rules.match]
Manufacturer = "ACME*"
ManufacturerModelName = "{model}"
"""


def rule(model: str = "Sono 5", name: str = "acme-sono5") -> str:
    return RULE.format(name=name, model=model, header=list(HEADER), corner=list(CORNER))


def study(seed: int, project: str, *, burned_in: str = "") -> list[pydicom.Dataset]:
    base = generate_study(seed, series=1, instances_per_series=1, study_comments=f"Project: {project}")[0]
    datasets = [make_instance("US", seed=seed, base=base, number=1),
                make_instance("US", photometric="RGB", frames=3, seed=seed, base=base, series=2, number=1)]
    for ds in datasets:
        if burned_in:
            ds.BurnedInAnnotation = burned_in
    return datasets


def frames(ds: pydicom.Dataset) -> np.ndarray:
    return ds.pixel_array.reshape(-1, int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel))


def held(daemon, project: str):
    return wait_for(lambda: daemon.stores.catalog.sessions(PREARCHIVE, projects=[project], status="REVIEW"))[0]


def archived_files(daemon, project: str):
    session = wait_for(lambda: daemon.stores.catalog.sessions(ARCHIVE, projects=[project]))[0]
    return session, sorted((daemon.stores.layout.root / session.relative_dir).rglob("*.dcm"))


def cli(config, *args):
    return CliRunner().invoke(main, [*args, "--config", str(config)], catch_exceptions=False)


@pytest.mark.slow
def test_held_then_a_rule_in_the_config_cleans_exactly_its_rectangles(make_daemon, tmp_path):
    # Given a US study with text in its pixels, sent over C-STORE to a de-identified project
    daemon = make_daemon(write_config(tmp_path, NO_OCR, projects=PROJECTS))
    sent = study(1, "us")
    assert send(daemon.dicom_port(), sent) == [0, 0]
    # Then it waits in REVIEW with its reason
    row = held(daemon, "us")
    assert "modality US (ultrasound)" in row.reason
    # When a rule for another model is configured, it still waits
    other = write_config(tmp_path, NO_OCR + rule("Sono 9", "acme-sono9"), projects=PROJECTS)
    refused = cli(other, "prearchive", "archive", row.url)
    assert refused.exit_code == 1 and "held for review: modality US" in refused.output
    assert daemon.stores.catalog.session(row.id).status == "REVIEW"
    # When the matching rule is configured, the preview shows it per scan and draws its rectangles
    config = write_config(tmp_path, NO_OCR + rule(), projects=PROJECTS)
    preview = json.loads(cli(config, "prearchive", "preview", row.url, "--json", "--png",
                             str(tmp_path / "p.png")).output)
    assert [s["pixels"]["rule"] for s in preview["scans"]] == ["acme-sono5", "acme-sono5"]
    assert preview["scans"][0]["pixels"]["rectangles"] == [list(HEADER), list(CORNER)]
    assert preview["scans"][0]["pixels"]["hold"] is None and (tmp_path / "p.png").stat().st_size > 0
    # and archiving cleans it
    done = cli(config, "prearchive", "archive", row.url)
    assert done.exit_code == 0, done.output
    # Then every archived frame is the sent one outside the rectangles and black inside them
    session, files = archived_files(daemon, "us")
    assert len(files) == 2 and "clean-pixels:acme-sono5" in session.anonymization
    by_frames = {int(pydicom.dcmread(p).get("NumberOfFrames") or 1): pydicom.dcmread(p) for p in files}
    inside = np.zeros((240, 320), dtype=bool)
    for x, y, w, h in (HEADER, CORNER):
        inside[y:y + h, x:x + w] = True
    for original in sent:
        out = by_frames[int(original.get("NumberOfFrames") or 1)]
        before, after = frames(original), frames(out)
        assert before.shape == after.shape
        for n in range(before.shape[0]):
            assert np.array_equal(before[n][~inside], after[n][~inside])
            assert not after[n][inside].any()
        assert out.BurnedInAnnotation == "NO"
        assert "113101" in [i.CodeValue for i in out.DeidentificationMethodCodeSequence]
        assert "PatientName" not in out or str(out.PatientName) != str(original.PatientName)
    (event,) = daemon.stores.catalog.events(kinds=["pixels"])
    assert event["detail"]["redacted"] == {"acme-sono5": 2} and event["session_id"] == session.id


@pytest.mark.slow
def test_forced_without_a_rule_keeps_the_pixels_and_says_so_while_allow_burned_in_lets_it_through(
        make_daemon, tmp_path):
    daemon = make_daemon(write_config(tmp_path, NO_OCR, projects=PROJECTS))
    # a CR screen save is held like an ultrasound
    screen = generate_study(3, series=1, instances_per_series=1, study_comments="Project: us")[0]
    screen.Modality, screen.ImageType = "CR", ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    burned = study(2, "us", burned_in="YES")
    assert send(daemon.dicom_port(), [screen]) == [0]
    row = held(daemon, "us")
    assert "ImageType SCREEN SAVE" in row.reason and "ImageType SECONDARY" in row.reason
    config = write_config(tmp_path, NO_OCR, projects=PROJECTS)
    assert cli(config, "prearchive", "delete", row.url, "--yes").exit_code == 0
    # forced archive without a rule: the pixels as sent, still flagged, and the catalog says so
    assert send(daemon.dicom_port(), burned) == [0, 0]
    row = held(daemon, "us")
    assert "BurnedInAnnotation=YES" in row.reason
    assert cli(config, "prearchive", "archive", row.url, "--force").exit_code == 0
    session, files = archived_files(daemon, "us")
    assert "clean-pixels" not in session.anonymization
    sent = {int(ds.get("NumberOfFrames") or 1): frames(ds) for ds in burned}
    for path in files:
        out = pydicom.dcmread(path)
        assert out.BurnedInAnnotation == "YES"
        assert np.array_equal(frames(out), sent[int(out.get("NumberOfFrames") or 1)])
    (event,) = daemon.stores.catalog.events(kinds=["pixels"])
    assert event["detail"] == {"redacted": {}, "unredacted_burned_in": 2, "session": row.id}
    # a project with allow_burned_in archives the same kind of data by itself
    assert send(daemon.dicom_port(), study(4, "open")) == [0, 0]
    session, files = archived_files(daemon, "open")
    assert len(files) == 2
    out = json.loads(cli(config, "status", "--json").output)
    assert out["ocr"]["available"] is False and "ocr.enabled is false" in out["ocr"]["engine"]
