"""The OCR tests' Tesseract: Debian's tesseract-ocr (+ English data) and the DejaVu fonts the
generated images are drawn with, installed with apt-get (as root) when missing. Without them the
tests fail under CI=true and skip locally, saying why."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dicomd.pixels.ocr import availability
from tests.pixels.images import FONT

PACKAGES = ["tesseract-ocr", "tesseract-ocr-eng", "fonts-dejavu-core"]


def _missing() -> bool:
    return shutil.which("tesseract") is None or not Path(FONT).exists()


@pytest.fixture(scope="session")
def tesseract() -> str:
    if _missing() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "install", "-y", "-q", *PACKAGES], ["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", *PACKAGES]):
            subprocess.run(command, capture_output=True, timeout=900, env=env)
            if not _missing():
                break
    found = availability()
    if not found.available or not Path(FONT).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"Tesseract and the DejaVu fonts are needed for the OCR tests: {found.engine}")
        pytest.skip(f"OCR tests need Tesseract and fonts-dejavu-core ({found.engine})")
    return found.engine
