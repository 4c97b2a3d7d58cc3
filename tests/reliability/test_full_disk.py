"""Guarantee 3: a full disk. Below the free-space floor C-STOREs get 0xA700 before anything is
stored; a real ENOSPC (a 3 MB tmpfs, or an injected write failure when mounting is not possible)
also gives 0xA700; data already stored is untouched and service resumes when space returns."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from dicomd.catalog import PREARCHIVE
from dicomd.config import load
from dicomd.daemon import Daemon
from dicomd.testing.generator import generate_study
from dicomd.storecheck import check_store, tree_files
from dicomd.engine import durable
from tests.conftest import send, write_config
from tests.reliability.harness import SendResult, echo, send_tracking, wait_for

pytestmark = pytest.mark.both_engines

OUT_OF_RESOURCES = 0xA700


def _config(tmp_path: Path, data_dir: Path, floor: int) -> Path:
    path = write_config(tmp_path)
    text = path.read_text().replace("min_free_bytes = 0", f"min_free_bytes = {floor}")
    text = text.replace('data_dir = "data"', f'data_dir = "{data_dir}"')
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def _restore_tempdir() -> Iterator[None]:
    """The daemon points the process-wide temp folder into its data dir; put it back afterwards."""
    before = tempfile.tempdir
    yield
    tempfile.tempdir = before


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs; skips (loudly) when this process may not mount."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"FULL-DISK TMPFS TEST SKIPPED: cannot mount a tmpfs ({proc.stderr.strip()}); "
                    "the injected-ENOSPC test covers the storage boundary instead")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _study(seed: int, n: int, size: int = 16) -> list:
    return generate_study(seed, series=1, instances_per_series=n, rows=size, cols=size, study_description="DEMO")


def _uids(daemon: Daemon) -> set[str]:
    cat = daemon.stores.catalog
    return {i.sop_instance_uid for s in cat.sessions(PREARCHIVE) for i in cat.instances(s.id)}


def test_below_the_floor_nothing_is_written(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    data = tmp_path / "data"
    first = make_daemon(_config(tmp_path, data, 0))
    assert send(first.dicom_port(), _study(1, 3)) == [0, 0, 0]
    first.stop()
    before = tree_files(data / "prearchive")
    floor = shutil.disk_usage(tmp_path).free + 2**40  # a terabyte more than there is
    daemon = make_daemon(_config(tmp_path, data, floor))
    assert send(daemon.dicom_port(), _study(2, 4)) == [OUT_OF_RESOURCES] * 4
    assert echo(daemon.dicom_port())  # still serving
    assert tree_files(data / "prearchive") == before  # existing data untouched, nothing new
    assert not any((data / "tmp").iterdir())  # the received temp files are gone too
    assert not daemon.stores.catalog.quarantine()  # a full disk is not the sender's fault
    assert len(_uids(daemon)) == 3


def test_enospc_on_a_small_tmpfs(tmp_path: Path, small_disk: Path, make_daemon: Callable[..., Daemon]) -> None:
    """A really full disk (no floor): each failing store is refused (0xA700) or, when the disk fills
    while pynetdicom spools the incoming data, its association is aborted; never acknowledged
    and lost. Repeated failures do not use up the association slots; space returns, service resumes."""
    data = small_disk / "data"
    daemon = make_daemon(_config(tmp_path, data, 0))
    port = daemon.dicom_port()
    assert send(port, _study(1, 2)) == [0, 0]
    stored = tree_files(data / "prearchive")
    ballast = small_disk / "ballast"
    free = shutil.disk_usage(small_disk).free
    with open(ballast, "wb") as fh:  # leave about 150 KB
        fh.write(b"\0" * max(0, free - 150 * 1024))
    study = _study(2, 12, size=96)  # ~18 KB each: the disk fills part-way through
    result = send_tracking(port, study, SendResult(), timeout=3)
    assert result.unanswered or result.refused, result
    assert set(result.refused.values()) <= {OUT_OF_RESOURCES}, result.refused
    for _ in range(12):  # more failing associations than max_associations (10)
        again = send_tracking(port, study[-1:], SendResult(), timeout=3)
        assert not again.acknowledged
    for rel, info in stored.items():  # what was there before is untouched
        assert tree_files(data / "prearchive")[rel] == info
    ballast.unlink()  # space returns: service resumes without a restart
    assert echo(port)
    assert send(port, _study(3, 3)) == [0, 0, 0]
    assert set(result.acknowledged) <= _uids(daemon)
    # Spool files of receive threads killed by ENOSPC: swept by the next association once they
    # are older than any live association could be (back-dated here instead of waiting).
    old = time.time() - 3600
    for leftover in (data / "tmp").iterdir():
        os.utime(leftover, (old, old))
    assert echo(port)
    wait_for(lambda: not any((data / "tmp").iterdir()), timeout=10)
    wait_for(lambda: not [s for s in daemon.stores.catalog.sessions(PREARCHIVE) if s.status in ("RECEIVING", "BUILDING")])
    daemon.stop()
    report = check_store(*_stores(data))
    assert report.ok, report.describe()


def _stores(data: Path):  # type: ignore[no-untyped-def]
    from dicomd.catalog import Catalog
    from dicomd.layout import Layout

    return Layout(data), Catalog(Layout(data).catalog)


def test_injected_enospc_at_the_storage_boundary(tmp_path: Path, make_daemon: Callable[..., Daemon],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a small file system: the OS call that makes a staged file durable fails with ENOSPC."""
    data = tmp_path / "data"
    daemon = make_daemon(_config(tmp_path, data, 0))
    port = daemon.dicom_port()
    assert send(port, _study(1, 2)) == [0, 0]
    stored = tree_files(data / "prearchive")
    real = os.fdatasync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", full)
    monkeypatch.setattr(os, "fsync", full)
    monkeypatch.setattr(durable, "syncfs", full)  # the asyncio engine's batched sync
    assert send(port, _study(2, 3)) == [OUT_OF_RESOURCES] * 3
    monkeypatch.setattr(os, "fdatasync", real)
    monkeypatch.undo()
    assert echo(port)
    assert tree_files(data / "prearchive") == stored
    assert send(port, _study(3, 2)) == [0, 0]
    daemon.stop()
    report = check_store(*_stores(data))
    assert report.ok, report.describe()


def test_a_failed_copy_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomd import storage
    from dicomd.errors import StorageFull

    src = tmp_path / "in.dcm"
    src.write_bytes(b"x" * 5000)
    dst = tmp_path / "store" / "out.dcm"

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", full)
    with pytest.raises(StorageFull):
        storage.install_file(src, dst, move=False)
    assert list(dst.parent.iterdir()) == [] and src.exists()


def test_below_the_floor_uploads_get_507_and_dropped_files_stay(tmp_path: Path, make_daemon: Callable[..., Daemon],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("dicomd.http.server")
    import httpx

    from dicomd.auth import Auth
    from dicomd.testing.generator import instance_bytes, write_study

    drop = tmp_path / "drop"
    floor = shutil.disk_usage(tmp_path).free + 2**40
    path = _config(tmp_path, tmp_path / "data", floor)
    text = path.read_text().replace("[http]\nenabled = false\n", "[http]\nenabled = true\nport = 0\n")
    path.write_text(text + f'\n[[drop_folders]]\npath = "{drop}"\nproject = "demo"\nstable_seconds = 0.1\n')
    daemon = make_daemon(path)
    Auth(daemon.stores.catalog).add_user("admin", "correct-horse-1", admin=True)  # type: ignore[union-attr]
    server = next(s for s in daemon.services if type(s).__name__ == "HttpServer")
    study = _study(5, 2)
    reply = httpx.post(f"{server.url}/data/services/import", params={"project": "demo"},
                       content=instance_bytes(study[0]), auth=("admin", "correct-horse-1"), timeout=30)
    assert reply.status_code == 507, reply.text
    files = write_study(study, tmp_path / "staging")
    for file in files:
        file.rename(drop / file.name)
    wait_for(lambda: any("left in place" in r.getMessage() for r in caplog.records), timeout=20)
    assert sorted(p.name for p in drop.iterdir()) == sorted(f.name for f in files)  # nothing taken, nothing lost
    assert not _uids(daemon) and not daemon.stores.catalog.quarantine()  # type: ignore[union-attr]
