"""Finding dcmtk's command-line tools (not pynetdicom's apps of the same name in .venv/bin)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def dcmtk_tool(name: str) -> str | None:
    """Path of dcmtk's ``name`` on PATH, skipping same-named programs that are not dcmtk."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK) and _is_dcmtk(candidate):
            return str(candidate)
    return None


def _is_dcmtk(path: Path) -> bool:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "dcmtk" in (out.stdout + out.stderr).lower()


def dcmtk_version() -> str | None:
    tool = dcmtk_tool("storescp")
    if not tool:
        return None
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10)
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].strip("$ ") if first else "dcmtk"
