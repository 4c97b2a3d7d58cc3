"""GroupSync, the receive engine's batched durability: every caller returns once its file is
synced; a batch is synced the way that measured cheaper (syncfs, or file by file), and the other
way is tried now and then to keep both measurements current."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from dicomd.engine.durable import PROBE_EVERY, GroupSync


def _write(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(os.urandom(4096))
    return path


def test_concurrent_callers_are_synced_in_shared_batches(tmp_path: Path) -> None:
    group = GroupSync()
    errors: list[BaseException] = []

    def caller(k: int) -> None:
        try:
            for j in range(25):
                group(_write(tmp_path, f"{k}-{j}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and group.files == 200
    assert group.batches < 200  # callers that waited together were synced together
    assert group.seconds_per_syncfs is not None and group.seconds_per_file is not None  # both ways measured


def test_the_cheaper_way_is_taken_and_the_other_one_probed(tmp_path: Path) -> None:
    group = GroupSync()
    group(_write(tmp_path, "first"))
    group(_write(tmp_path, "second"))
    assert group.synced_by_syncfs == 1  # each way once while either is unknown
    # When syncfs is measured far dearer than a file: file by file, but for one probe per PROBE_EVERY
    for n in range(2 * PROBE_EVERY):
        group.seconds_per_syncfs, group.seconds_per_file = 1.0, 1e-6
        group(_write(tmp_path, f"cheap-files-{n}"))
    assert group.synced_by_syncfs == 1 + 2
    # When syncfs is far cheaper: syncfs, but for one probe per PROBE_EVERY
    before = group.synced_by_syncfs
    for n in range(2 * PROBE_EVERY):
        group.seconds_per_syncfs, group.seconds_per_file = 1e-6, 1.0
        group(_write(tmp_path, f"cheap-syncfs-{n}"))
    assert group.synced_by_syncfs - before == 2 * PROBE_EVERY - 2


def test_without_syncfs_every_batch_goes_file_by_file(tmp_path: Path) -> None:
    group = GroupSync(use_syncfs=False)
    for n in range(5):
        group(_write(tmp_path, str(n)))
    assert group.synced_by_syncfs == 0 and group.seconds_per_syncfs is None


def test_a_file_that_cannot_be_synced_fails_its_own_caller(tmp_path: Path) -> None:
    group = GroupSync(use_syncfs=False)
    try:
        group(tmp_path / "gone")
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("a missing file was reported durable")
    group(_write(tmp_path, "fine"))  # and the next caller is served
