"""Fixtures for the de-identification corpus tests: the planted corpus, a pseudonym store, dciodvfy."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dicomd.anonymize import PseudonymStore

from .corpus import Sample, build


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Sample]]:
    return build(tmp_path_factory.mktemp("deid-corpus"))


# A fixed key: the date shift (62-730 days) and every pseudonym are then the same in every run. With a
# random key, a shifted date now and then equalled another original date of the same file, which the
# scan (rightly, it cannot tell them apart) reported as a surviving identifier.
FIXED_KEY = {"project": "deid", "key": "5e" * 32, "created": "2026-12-02T00:00:00+00:00", "derivation": 2}


@pytest.fixture
def store(tmp_path: Path) -> PseudonymStore:
    store = PseudonymStore(tmp_path / "keys" / "pseudonyms.sqlite")
    store.import_keys([FIXED_KEY])
    return store


def _install_dicom3tools() -> str | None:
    """apt-get install dicom3tools (as root); the reason it could not be done, or None."""
    if os.geteuid() != 0:
        return "dciodvfy (Debian package dicom3tools) is not installed and this user is not root"
    if shutil.which("apt-get") is None:
        return "dciodvfy is not installed and there is no apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "install", "-y", "-q", "dicom3tools"], ["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "dicom3tools"]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
        if command[1] == "install" and result.returncode == 0 and shutil.which("dciodvfy"):
            return None
    return f"apt-get install dicom3tools failed: {result.stderr.strip()[-300:]}"


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    """The path of dciodvfy; installed when missing. Under CI=true a missing tool fails the run."""
    found = shutil.which("dciodvfy")
    if found is None:
        reason = _install_dicom3tools()
        found = shutil.which("dciodvfy")
        if found is None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"dciodvfy is required in CI: {reason}")
            pytest.skip(str(reason))
    return found
