"""The OCR check (Tesseract) on generated images: it finds the burned-in text before redaction and
none inside the redacted areas after; at build time it records counts and boxes (never the words)
on the session, the snapshot draws them, and archiving text outside the redacted areas needs
--confirm-text. A handful of Tesseract calls in all (each costs up to a second)."""

from __future__ import annotations

import logging
import re
import sqlite3

import numpy as np
import pydicom
from PIL import Image

from dicomd.catalog import ARCHIVE, PREARCHIVE
from dicomd.config import PixelMatchConfig, PixelRuleConfig
from dicomd.pixels import ocr
from dicomd.pixels.redact import redact
from dicomd.pixels.rules import overlaps
from dicomd.snapshot import BLANKED_COLOUR, TEXT_COLOUR
from dicomd.testing.generator import generate_study
from tests.conftest import send, wait_for, write_config
from tests.pixels.images import CORNER, HEADER, make_instance, write
from tests.pixels.test_archive_pixels import PROJECTS, cli, rule

WORDS = ("DOE", "JOHN", "123456", "ACC", "7788")


def test_ocr_finds_the_text_before_redaction_and_none_in_the_redacted_areas_after(tesseract, tmp_path):
    # Given an ultrasound cine stored as JPEG baseline (YBR_FULL_422) with text in every frame
    path = write(make_instance("US", photometric="RGB", frames=2, jpeg=True), tmp_path / "us.dcm")
    before = ocr.find_text(ocr.frame_image(path, 1))
    # Then OCR reads text in the header band and in the corner label
    assert sum(b.characters for b in before) >= 12
    assert any(overlaps(b.box, [HEADER]) for b in before) and any(overlaps(b.box, [CORNER]) for b in before)
    # When both are redacted
    ds = pydicom.dcmread(path)
    redact(ds, PixelRuleConfig("both", PixelMatchConfig(Modality="US"), (HEADER, CORNER)))
    write(ds, tmp_path / "clean.dcm")
    after = ocr.find_text(ocr.frame_image(tmp_path / "clean.dcm", 1))
    # Then nothing is read inside the redacted areas
    assert not [b for b in after if overlaps(b.box, [HEADER, CORNER])]


def test_text_outside_the_rule_needs_confirmation_and_never_reaches_the_catalog(tesseract, make_daemon, tmp_path,
                                                                                 caplog):
    caplog.set_level(logging.INFO)
    # Given a rule that blanks only the header band, and an ultrasound with text in the corner too
    header_only = rule().replace(f", {list(CORNER)}", "")
    config = write_config(tmp_path, header_only, projects=PROJECTS)
    daemon = make_daemon(config)
    base = generate_study(7, series=1, instances_per_series=1, study_comments="Project: us")[0]
    assert send(daemon.dicom_port(), [make_instance("US", seed=7, base=base)]) == [0]
    # Then the build's OCR check finds text, the rule lifts the burned-in hold, the OCR text outside it holds
    row = wait_for(lambda: daemon.stores.catalog.sessions(PREARCHIVE, projects=["us"], status="REVIEW"), timeout=60)[0]
    assert re.match(r"held for review: OCR found \d+ characters in \d+ boxes outside redacted areas", row.reason)
    assert "OCR found" in row.reason and "outside redacted areas" in row.reason and "--confirm-text" in row.reason
    findings = row.summary_fields()["pixel_text"]
    assert findings["checked"] and findings["characters"] >= 12
    boxes = [tuple(b[:4]) for b in findings["scans"][0]["boxes"]]
    assert any(overlaps(b, [CORNER]) for b in boxes) and any(overlaps(b, [HEADER]) for b in boxes)
    # `prearchive show` says what was found and where
    shown = cli(config, "prearchive", "show", row.url)
    assert f"text found: {findings['characters']} characters in {findings['boxes']} boxes" in shown.output
    # the snapshot draws the rectangle to blank and the OCR boxes
    assert cli(config, "prearchive", "snapshot", row.url, "-o", str(tmp_path / "s.png")).exit_code == 0
    colours = {tuple(c) for c in np.asarray(Image.open(tmp_path / "s.png").convert("RGB")).reshape(-1, 3)}
    assert BLANKED_COLOUR in colours and TEXT_COLOUR in colours
    # archiving refuses without the confirmation, and goes through with it
    refused = cli(config, "prearchive", "archive", row.url)
    assert refused.exit_code == 1 and "--confirm-text" in refused.output
    assert cli(config, "prearchive", "archive", row.url, "--confirm-text").exit_code == 0
    archived = wait_for(lambda: daemon.stores.catalog.sessions(ARCHIVE, projects=["us"]))[0]
    assert "clean-pixels:acme-sono5" in archived.anonymization
    # the words themselves are nowhere: not in the catalog, not in the log above DEBUG
    catalog_path = daemon.stores.layout.catalog
    daemon.stop()
    catalog = catalog_path.read_bytes()
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG)
    for word in WORDS:
        assert word.encode() not in catalog and word not in logged
    with sqlite3.connect(catalog_path) as conn:
        dumped = "\n".join(conn.iterdump())
    assert not [w for w in WORDS if w in dumped]


def test_over_http_the_session_json_shows_the_text_and_archiving_needs_confirm_text(tesseract, tmp_path):
    from fastapi.testclient import TestClient

    from dicomd.auth import Auth
    from dicomd.config import load
    from dicomd.http.app import create_app
    from dicomd.stores import Stores
    from tests.http.conftest import zip_bytes

    # Given a site whose rule blanks only the header band, and an upload of an ultrasound with a corner label
    config = load(write_config(tmp_path, rule().replace(f", {list(CORNER)}", ""),
                               projects=PROJECTS.replace("auto_archive = 4", "auto_archive = 0")))
    stores = Stores.open(config)
    Auth(stores.catalog).add_user("admin", "correct-horse-1", admin=True)
    base = generate_study(8, series=1, instances_per_series=1)[0]
    body = zip_bytes([write(make_instance("US", seed=8, base=base), tmp_path / "up" / "us.dcm")])
    try:
        with TestClient(create_app(config, stores)) as client:
            client.auth = ("admin", "correct-horse-1")
            uri = client.post("/data/services/import", params={"project": "us"}, content=body,
                              headers={"Content-Type": "application/zip"}).text.strip()
            assert client.post(uri, params={"action": "build"}).status_code == 200
            # Then the session's JSON carries the OCR findings: counts and boxes
            (shown,) = client.get(uri, params={"format": "json"}).json()["ResultSet"]["Result"]
            assert shown["pixel_text"]["characters"] >= 12 and shown["pixel_text"]["scans"][0]["boxes"]
            # archiving refuses with the reason, then goes through with confirmText=true
            refused = client.post("/data/services/archive", params={"src": uri})
            assert refused.status_code == 409 and "confirmText=true" in refused.text
            done = client.post("/data/services/archive", params={"src": uri, "confirmText": "true"})
            assert done.status_code == 200, done.text
            assert done.text.strip().startswith("/data/archive/projects/us/")
    finally:
        stores.close()
