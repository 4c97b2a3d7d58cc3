"""Drop folders with a real watchdog observer, in a real daemon."""

from __future__ import annotations

import io
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Callable

import pytest
from pydicom.data import get_testdata_file

from dicomd.catalog import PREARCHIVE
from dicomd.daemon import Daemon
from dicomd.testing.generator import generate_study, write_study
from tests.conftest import wait_for, write_config


def drop_config(tmp_path: Path, *, stable: float = 0.3, processed: bool = False, project: str = "demo") -> Path:
    extra = f"""
[[drop_folders]]
path = "{tmp_path / 'drop'}"
project = "{project}"
stable_seconds = {stable}
processed = {'true' if processed else 'false'}
"""
    return write_config(tmp_path, extra)


def instances(daemon: Daemon) -> int:
    assert daemon.stores is not None
    return sum(s.instances for s in daemon.stores.catalog.sessions(PREARCHIVE))


def held(daemon: Daemon) -> list:
    assert daemon.stores is not None
    return daemon.stores.catalog.quarantine()


def study(tmp_path: Path, seed: int = 1, count: int = 3) -> list[Path]:
    datasets = generate_study(seed=seed, series=1, instances_per_series=count, rows=16, cols=16)
    return write_study(datasets, tmp_path / f"study{seed}")


def test_slow_writer_is_not_read_half_way(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    # Given a drop folder that wants a file stable for one second
    daemon = make_daemon(drop_config(tmp_path, stable=1.0))
    data = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    target = tmp_path / "drop" / "slow.dcm"
    # When a file arrives in small chunks with short pauses
    with open(target, "wb") as out:
        for start in range(0, len(data), 2048):
            out.write(data[start : start + 2048])
            out.flush()
            # Then nothing is staged or quarantined while it grows
            assert instances(daemon) == 0 and held(daemon) == []
            time.sleep(0.05)  # the writer's own pace, not a wait on the daemon
    # And once it is complete it is staged whole and removed
    wait_for(lambda: instances(daemon) == 1)
    wait_for(lambda: not target.exists())
    assert held(daemon) == []


def test_zip_and_nested_folders(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(drop_config(tmp_path))
    drop = tmp_path / "drop"
    # a zip, built elsewhere and renamed in (as careful senders do)
    paths = study(tmp_path, seed=1)
    building = tmp_path / "upload.zip"
    with zipfile.ZipFile(building, "w") as zf:
        for p in paths:
            zf.write(p, f"a/{p.name}")
    building.rename(drop / "upload.zip")
    # a folder tree with a hidden file and a temporary name
    tree = drop / "batch"
    for i, p in enumerate(study(tmp_path, seed=2)):
        sub = tree / f"s{i}" / "deeper"
        sub.mkdir(parents=True)
        (sub / p.name).write_bytes(p.read_bytes())
    (tree / ".hidden").write_bytes(b"x")
    (drop / "copying.dcm.part").write_bytes(paths[0].read_bytes())
    wait_for(lambda: instances(daemon) == 6)
    wait_for(lambda: not (drop / "upload.zip").exists() and not (tree / "s0").exists())
    assert held(daemon) == []
    assert (tree / ".hidden").exists()  # never staged, so never deleted
    assert (drop / "copying.dcm.part").exists()
    assert daemon.stores is not None
    assert {s.project for s in daemon.stores.catalog.sessions(PREARCHIVE)} == {"demo"}


def test_tar_gz_moved_to_processed(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(drop_config(tmp_path, processed=True))
    staging = tmp_path / "t.tgz"
    with tarfile.open(staging, "w:gz") as tf:
        for p in study(tmp_path):
            tf.add(p, p.name)
    staging.rename(tmp_path / "drop" / "study.tgz")
    wait_for(lambda: instances(daemon) == 3)
    wait_for(lambda: (tmp_path / "drop" / "processed" / "study.tgz").exists())
    assert not (tmp_path / "drop" / "study.tgz").exists()


def test_junk_file_is_quarantined_with_a_reason(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(drop_config(tmp_path))
    junk = tmp_path / "drop" / "notes.txt"
    junk.write_bytes(b"this is not DICOM at all")
    entries = wait_for(lambda: held(daemon))
    wait_for(lambda: not junk.exists())
    assert daemon.stores is not None
    data = daemon.stores.layout.root / entries[0].path
    assert data.read_bytes() == b"this is not DICOM at all"
    assert (data.parent / "reason.txt").read_text().strip()
    assert instances(daemon) == 0


def test_archive_with_a_bad_member_is_quarantined_whole(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(drop_config(tmp_path))
    staging = tmp_path / "bad.zip"
    with zipfile.ZipFile(staging, "w") as zf:
        files = study(tmp_path)
        for p in files:
            zf.write(p, p.name)
        zf.writestr("readme.txt", "hello")  # a stray file is skipped, never a reason to refuse
        zf.writestr("cut.dcm", files[0].read_bytes()[:600])
    staging.rename(tmp_path / "drop" / "bad.zip")
    entries = wait_for(lambda: held(daemon))
    assert "cut.dcm" in entries[0].reason and "readme.txt" not in entries[0].reason
    assert instances(daemon) == 0
    assert not (tmp_path / "drop" / "bad.zip").exists()


def test_zip_slip_archive_is_quarantined(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(drop_config(tmp_path))
    staging = tmp_path / "evil.tar"
    data = study(tmp_path)[0].read_bytes()
    with tarfile.open(staging, "w") as tf:
        info = tarfile.TarInfo("../../escaped.dcm")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    staging.rename(tmp_path / "drop" / "evil.tar")
    entries = wait_for(lambda: held(daemon))
    assert "escapes" in entries[0].reason
    assert not (tmp_path / "escaped.dcm").exists() and instances(daemon) == 0


def test_files_dropped_while_down_are_picked_up(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    # Given a daemon that ran and stopped
    config = drop_config(tmp_path)
    make_daemon(config).stop()
    # When files are dropped while it is down
    for p in study(tmp_path, seed=5):
        (tmp_path / "drop" / p.name).write_bytes(p.read_bytes())
    # Then the next start stages them
    daemon = make_daemon(config)
    wait_for(lambda: instances(daemon) == 3)
    wait_for(lambda: not any((tmp_path / "drop").glob("*.dcm")))


def test_folder_moved_to_processed_and_hidden_only_folder_waits(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(drop_config(tmp_path, processed=True))
    drop = tmp_path / "drop"
    # a folder holding only a hidden file is left alone (nothing to stage, nothing quarantined)
    (drop / "waiting").mkdir()
    (drop / "waiting" / ".DS_Store").write_bytes(b"x")
    # a folder of files is staged and its files moved under processed/
    (drop / "series").mkdir()
    for p in study(tmp_path, seed=8):
        (drop / "series" / p.name).write_bytes(p.read_bytes())
    wait_for(lambda: instances(daemon) == 3)
    wait_for(lambda: len(list((drop / "processed" / "series").glob("*.dcm"))) == 3)
    assert held(daemon) == []
    # when a file lands in the waiting folder, it is staged too
    extra = study(tmp_path, seed=9, count=1)[0]
    (drop / "waiting" / extra.name).write_bytes(extra.read_bytes())
    wait_for(lambda: instances(daemon) == 4)
    assert (drop / "waiting" / ".DS_Store").exists() and held(daemon) == []


def test_nothing_is_deleted_when_storage_refuses(
    tmp_path: Path, make_daemon: Callable[..., Daemon], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a daemon whose disk is "full" (free-space floor far above what the disk has)
    import dataclasses
    import logging

    from dicomd.config import load

    caplog.set_level(logging.ERROR, logger="dicomd.dropfolder")
    config = dataclasses.replace(load(drop_config(tmp_path)), min_free_bytes=2**62)
    daemon = make_daemon(config)
    dropped = tmp_path / "drop" / "one.dcm"
    dropped.write_bytes(study(tmp_path)[0].read_bytes())
    # When the drop folder tries to stage the file
    wait_for(lambda: "left in place" in caplog.text)
    # Then the file is still there, and neither staged nor quarantined
    assert dropped.exists() and instances(daemon) == 0 and held(daemon) == []


def test_stop_in_the_middle_of_a_folder_loses_nothing(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    # Given a daemon staging a folder of 200 files
    config = drop_config(tmp_path, stable=0.2)
    daemon = make_daemon(config)
    folder = tmp_path / "drop" / "big"
    staging = study(tmp_path, seed=11, count=200)[0].parent
    staging.rename(folder)
    # When it is stopped as soon as the first instance is staged
    wait_for(lambda: instances(daemon) > 0, interval=0.01)
    daemon.stop()
    # Then the batch is either complete (folder emptied) or rolled back (folder intact)
    from dicomd.config import load
    from dicomd.stores import Stores

    stores = Stores.open(load(config))
    try:
        staged = sum(s.instances for s in stores.catalog.sessions(PREARCHIVE))
    finally:
        stores.close()
    left = len(list(folder.glob("*.dcm"))) if folder.exists() else 0
    assert (staged, left) in ((0, 200), (200, 0))
    # And the next start finishes the job
    again = make_daemon(config)
    wait_for(lambda: instances(again) == 200)
    wait_for(lambda: not folder.exists())
