"""Section 3b: peak RSS of ``dicomd serve`` while it imports one large zip over HTTP.

The zip (stored, not deflated) holds the large multi-frame instance; it is streamed from disk
to ``POST /data/services/import?import-handler=DICOM-zip`` with http.client, as a client would."""

from __future__ import annotations

import base64
import http.client
import logging
import shutil
import time
import zipfile
from pathlib import Path

from bench.memory import MemoryRow
from bench.procs import RssSampler
from bench.receivers import dicomd_cli, start_dicomd

logger = logging.getLogger(__name__)
USER, PASSWORD = "bench", "bench-password-1"
NAME = "dicomd HTTP zip"


def zip_of(big: Path) -> Path:
    """A stored zip holding ``big``, written once next to it."""
    path = big.with_suffix(".zip")
    done = big.parent / f".{path.name}.complete"
    if not done.exists():
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            zf.write(big, arcname=f"study/{big.name}")
        done.touch()
    return path


def _add_user(work: Path) -> None:
    done = dicomd_cli(work, "user", "add", USER, "--admin", "--password-stdin", stdin=PASSWORD + "\n")
    if done.returncode != 0:
        raise RuntimeError(f"dicomd user add failed: {(done.stderr or done.stdout).strip()[-200:]}")


def _post(port: int, path: Path) -> tuple[int, str]:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    try:
        with path.open("rb") as body:  # http.client sends a file object in blocks
            conn.request("POST", "/data/services/import?project=bench&import-handler=DICOM-zip", body=body,
                         headers={"Authorization": f"Basic {token}", "Content-Type": "application/zip",
                                  "Content-Length": str(path.stat().st_size)})
            response = conn.getresponse()
            return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def measure_http_import(big: Path, work: Path, pdu: int, keep: bool) -> MemoryRow:
    archive = zip_of(big)
    size = archive.stat().st_size
    folder = work / "memory-http"
    try:
        running = start_dicomd(folder, pdu, setup=_add_user)
    except (OSError, RuntimeError, TimeoutError) as exc:
        return MemoryRow(NAME, size, None, None, None, None, False, str(exc)[:200])
    try:
        with RssSampler(running.proc.pid) as sampler:
            t0 = time.monotonic()
            status, text = _post(running.http_port, archive)
            seconds = time.monotonic() - t0
        stored = status == 200 and running.received() == 1
    except OSError as exc:
        status, text, seconds, stored = 0, str(exc), None, False
    finally:
        running.stop()
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    peak = sampler.result()
    note = "" if stored else f"HTTP {status}: {text.strip()[:150]}"
    return MemoryRow(NAME, size, peak.start_bytes, peak.tree_peak_bytes, peak.process_hwm_bytes, seconds,
                     stored, note, peak.start_pss_bytes, peak.tree_pss_peak_bytes, peak.largest_process_bytes)
