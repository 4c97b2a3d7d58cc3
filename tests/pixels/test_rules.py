"""Redaction rules in the config: validated at start-up with messages naming the rule; matching;
and the detection that decides the review hold."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from dicomd.config import load
from dicomd.errors import ConfigError
from dicomd.pixels.detect import burned_in_reasons
from dicomd.pixels.policy import PixelPolicy
from dicomd.pixels.rules import matching_rule

GOOD = """
[[pixel_rules]]
name = "sono5"
rectangles = [[0, 0, 320, 40]]
[pixel_rules.match]
Manufacturer = "acme*"
ManufacturerModelName = "Sono 5"
SOPClassUID = "UltrasoundImageStorage"
Rows = 240
Columns = 320
"""


def config(tmp_path, text):
    path = tmp_path / "dicomd.toml"
    path.write_text(text)
    return load(path)


def test_a_rule_loads_with_its_sop_class_keyword_as_a_uid(tmp_path):
    (rule,) = config(tmp_path, GOOD).pixel_rules
    assert rule.name == "sono5" and rule.rectangles == ((0, 0, 320, 40),)
    assert rule.match.SOPClassUID == "1.2.840.10008.5.1.4.1.1.6.1"


@pytest.mark.parametrize("text, message", [
    (GOOD.replace('Rows = 240', 'Rows = 240\nStationName = "x"'),
     r"pixel_rules\[0\] \(rule 'sono5'\)\.match\.StationName: unknown key"),
    (GOOD.replace("[[0, 0, 320, 40]]", "[[300, 0, 40, 40]]"), r"rule 'sono5'.*reaches outside the 320 x 240 image"),
    (GOOD.replace("[[0, 0, 320, 40]]", "[[0, 0, 0, 40]]"), r"rule 'sono5'.*empty rectangle"),
    (GOOD.replace("[[0, 0, 320, 40]]", "[]"), r"rule 'sono5'.*rectangles: give at least one"),
    (GOOD.replace("[[0, 0, 320, 40]]", "[[0, 0, 40]]"), r"rule 'sono5'.*expected \[x, y, width, height\]"),
    (GOOD + GOOD, r"pixel_rules\[1\] \(rule 'sono5'\)\.name: another rule is named 'sono5'"),
    ('[[pixel_rules]]\nname = "all"\nrectangles = [[0, 0, 1, 1]]\n', r"rule 'all'.*at least one condition"),
    (GOOD.replace('"UltrasoundImageStorage"', '"NoSuchStorage"'), r"rule 'sono5'.*SOPClassUID.*neither a UID"),
    (GOOD.replace('name = "sono5"', 'name = ""'), r"pixel_rules\[0\]\.name: required"),
])
def test_bad_rules_are_refused_at_start_up_naming_the_rule(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, text)


def header(**values) -> Dataset:
    ds = Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_matching_is_whole_value_case_insensitive_with_wildcards(tmp_path):
    rules = config(tmp_path, GOOD).pixel_rules
    us = dict(Manufacturer="ACME Imaging", ManufacturerModelName="sono 5", SOPClassUID="1.2.840.10008.5.1.4.1.1.6.1",
              Rows=240, Columns=320)
    assert matching_rule(rules, header(**us)) is rules[0]
    assert matching_rule(rules, header(**{**us, "ManufacturerModelName": "Sono 50"})) is None
    assert matching_rule(rules, header(**{**us, "Rows": 480})) is None
    assert matching_rule(rules, header(**{k: v for k, v in us.items() if k != "Manufacturer"})) is None


@pytest.mark.parametrize("values, reason", [
    (dict(Modality="CT", BurnedInAnnotation="YES"), "BurnedInAnnotation=YES"),
    (dict(Modality="CR", ImageType=["DERIVED", "SECONDARY", "SCREEN SAVE"]), "ImageType SCREEN SAVE"),
    (dict(Modality="DX", ImageType=["DERIVED", "SECONDARY"]), "ImageType SECONDARY"),
    (dict(Modality="XA"), "modality XA"),
    (dict(Modality="OP"), "modality OP"),
    (dict(Modality="MG", SOPClassUID="1.2.840.10008.5.1.4.1.1.7.4"), "Multi-frame True Color Secondary Capture"),
    (dict(Modality="DOC", SOPClassUID="1.2.840.10008.5.1.4.1.1.104.1"), "Encapsulated PDF Storage"),
    (dict(Modality="XX", SOPClassUID="1.2.840.10008.5.1.4.1.1.77.1.1.1"), "Video Endoscopic Image Storage"),
    (dict(Modality="MR", RecognizableVisualFeatures="YES"), "RecognizableVisualFeatures=YES"),
])
def test_what_is_held_and_why(values, reason):
    ds = header(**values)
    assert reason in " ".join(burned_in_reasons(ds))
    assert reason in PixelPolicy((), False).decide(ds).hold
    assert burned_in_reasons(header(Modality="CT", ImageType=["ORIGINAL", "PRIMARY", "AXIAL"])) == ()


def test_a_rule_or_allow_burned_in_lifts_the_hold_but_never_for_a_face(tmp_path):
    rules = config(tmp_path, GOOD.replace("Rows = 240\nColumns = 320\n", "").replace(
        'SOPClassUID = "UltrasoundImageStorage"\n', "")).pixel_rules
    us = header(Modality="US", Manufacturer="ACME", ManufacturerModelName="Sono 5", Rows=240, Columns=320)
    us.PixelData = b"\0" * 16
    assert PixelPolicy(rules, False).decide(us).hold is None
    assert PixelPolicy(rules, False).decide(us).rule is rules[0]
    assert "modality US" in PixelPolicy((), False).decide(us).hold
    assert PixelPolicy((), True).decide(us).hold is None
    us.RecognizableVisualFeatures = "YES"
    for policy in (PixelPolicy(rules, False), PixelPolicy(rules, True)):
        assert "RecognizableVisualFeatures=YES" in policy.decide(us).hold


def test_status_says_clearly_when_ocr_is_off_because_tesseract_is_missing(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from dicomd.cli import main
    from tests.conftest import write_config

    path = write_config(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no tesseract on this PATH
    out = CliRunner().invoke(main, ["status", "--config", str(path), "--json"])
    assert json.loads(out.output)["ocr"] == {
        "enabled": True, "available": False,
        "engine": "off: the tesseract binary is not installed (apt-get install tesseract-ocr tesseract-ocr-eng)"}
    text = CliRunner().invoke(main, ["status", "--config", str(path)]).output
    assert "ocr (burned-in text)  off: the tesseract binary is not installed" in text
