"""The README's first screen, run as printed on a fresh data directory: `scripts/serve`'s daemon on
config.example.toml, then every command of the "three ways in" block (storescu on a folder that
holds a README, a copy into the drop folder, a user and a curl zip upload), then `dicomd status`.
Only the ports and the study folder are substituted; dcmtk and curl are installed when missing."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.reliability.harness import free_port
from dicomd.testing.generator import generate_study, write_study

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# a newcomer's shell: the venv is not on PATH (pynetdicom installs a `storescu` of its own there)
SHELL_PATH = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != VENV_BIN)


def _need(tool: str, package: str) -> None:
    if shutil.which(tool, path=SHELL_PATH):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", package], capture_output=True)
        if not shutil.which(tool, path=SHELL_PATH):
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", package], capture_output=True)
    if not shutil.which(tool, path=SHELL_PATH):
        if os.environ.get("CI"):
            pytest.fail(f"{tool} ({package}) could not be installed: the README's commands need it")
        pytest.skip(f"{tool} is not installed (Debian package {package})")


def first_screen_commands() -> list[str]:
    """The shell lines of the README code block that shows the three ways in."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"Three ways in.*?```sh\n(.*?)```", text, re.S)
    assert block, "the README's first screen lost its 'three ways in' block"
    lines, joined = [], ""
    for line in block.group(1).splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        joined += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            lines.append(joined.strip())
            joined = ""
    return lines


@pytest.mark.slow
def test_the_first_screen_works_as_printed(tmp_path: Path) -> None:
    _need("storescu", "dcmtk")
    _need("curl", "curl")
    commands = first_screen_commands()
    assert [c.split()[0] for c in commands] == ["storescu", "cp", "echo", ".venv/bin/python", "curl"]
    # Given a fresh folder with the example config, and a study folder with a README beside the images
    shutil.copy(REPO / "config.example.toml", tmp_path / "config.example.toml")
    (tmp_path / ".venv").symlink_to(VENV_BIN.parent)
    studies = {}
    for way, seed in (("dicom", 101), ("drop", 102), ("http", 103)):
        folder = tmp_path / way
        write_study(generate_study(seed, series=1, instances_per_series=2, study_description="demo"), folder)
        (folder / "README.txt").write_text("MR of the knee, two series\n")
        studies[way] = folder
    dicom_port, http_port = free_port(), free_port()
    log = open(tmp_path / "serve.log", "wb")
    serve = subprocess.Popen(
        [str(VENV_BIN / "dicomd"), "serve", "--config", "config.example.toml", "--dicom-port", str(dicom_port),
         "--http-port", str(http_port)], cwd=tmp_path, stdout=log, stderr=log)
    try:
        wait_for(lambda: "Ctrl-C to stop" in (tmp_path / "serve.log").read_text(errors="replace")
                 or serve.poll() is not None, timeout=60)
        assert serve.poll() is None, (tmp_path / "serve.log").read_text()
        # When every command runs as printed (ports and study folders substituted)
        for command in commands:
            way = {"storescu": "dicom", "cp": "drop"}.get(command.split()[0], "http")
            line = (command.replace("11112", str(dicom_port)).replace("8080", str(http_port))
                    .replace("path/to/study/", f"{studies[way]}/").replace("path/to/study", str(studies[way])))
            done = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                                  env={**os.environ, "PATH": SHELL_PATH})
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
            if command.startswith("curl"):
                assert "/data/prearchive/projects/demo/" in done.stdout, done.stdout
        # Then each way in shows its two instances in dicomd status
        def last_hour() -> dict:
            done = subprocess.run([str(VENV_BIN / "dicomd"), "status", "--config", "config.example.toml", "--json"],
                                  cwd=tmp_path, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)["last_hour"]

        arrived = wait_for(lambda: (n := last_hour()) and all(n[w]["instances"] == 2 for w in ("DICOM", "DROP", "HTTP"))
                           and n, timeout=60)
        assert arrived["DROP"]["quarantined"] == 1  # the drop folder keeps the README in the quarantine
        assert not any((tmp_path / "dicomd-data" / "incoming").rglob("*.dcm"))
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        log.close()
