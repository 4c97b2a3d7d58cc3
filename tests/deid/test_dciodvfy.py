"""Valid output: dciodvfy (dicom3tools) finds no error in the anonymized corpus that the planted
original did not already have, for the Basic Profile and for the options that keep more."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pydicom
import pytest

from dicomd.anonymize import Anonymizer, Labels, PseudonymStore
from dicomd.config import AnonymizeConfig

_VALUE = re.compile(r"(= |value |\[)<[^>]*>|\d+")


def _errors(dciodvfy: str, path: Path) -> set[str] | None:
    """dciodvfy's error lines, with values and counts taken out (UIDs, dates change on purpose);
    None when dciodvfy finds no IOD to check the file against (a malformed test file)."""
    result = subprocess.run([dciodvfy, "-new", str(path)], capture_output=True, text=True, timeout=120, check=False)
    text = result.stdout + result.stderr
    if "Information Object Not found" in text:
        return None
    return {_VALUE.sub("#", line.strip()) for line in text.splitlines() if line.startswith("Error")}


@pytest.mark.parametrize("options", [
    (),
    ("retain_long_modified_dates",),
    ("retain_long_modified_dates", "clean_descriptors", "clean_structured_content", "clean_graphics",
     "retain_safe_private", "retain_device_id", "retain_patient_chars"),
], ids=lambda o: "+".join(o) or "basic")
def test_no_new_dciodvfy_errors(corpus, dciodvfy: str, store: PseudonymStore, tmp_path: Path, options):
    anonymizer = Anonymizer("deid", AnonymizeConfig(enabled=True, options=options), store)
    new: list[str] = []
    for path, sample in corpus:
        before = _errors(dciodvfy, path)
        if before is None:  # priv_SQ / nested_priv_SQ: private data only, no IOD to validate
            continue
        ds = pydicom.dcmread(path, force=True)
        anonymizer.apply(ds, Labels("deid", "S01", "S01_V1"))
        out = tmp_path / sample.name
        ds.save_as(out, enforce_file_format=False)
        after = _errors(dciodvfy, out)
        assert after is not None, f"{sample.name}: dciodvfy no longer recognizes the object"
        new += [f"{sample.name}: {line}" for line in sorted(after - before)]
    assert not new, "\n".join(new)
