"""Concurrency soak: 8 C-STORE associations (one of them re-sending another's instances), a drop
folder and HTTP uploads at once for a bounded time; then every acknowledged SOP Instance UID is in
the archive exactly once and the store is consistent."""

from __future__ import annotations

import io
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from dicomd.catalog import Catalog
from dicomd.daemon import Daemon
from dicomd.testing.generator import generate_study, write_study
from dicomd.layout import Layout
from dicomd.storecheck import check_store
from tests.conftest import write_config
from tests.reliability.harness import SendResult, send_tracking, wait_for

pytestmark = pytest.mark.both_engines

SECONDS = 4.0
ASSOCIATIONS = 8
PROJECTS = """
[projects.auto]
auto_archive = 4
overwrite = "append"
"""


@pytest.fixture(autouse=True)
def _restore_tempdir() -> Iterator[None]:
    before = tempfile.tempdir
    yield
    tempfile.tempdir = before


def _study(seed: int) -> list:
    return generate_study(seed, series=1, instances_per_series=3, rows=8, cols=8, study_description="auto")


def test_soak(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    drop = tmp_path / "drop"
    path = write_config(tmp_path, f"""
[[drop_folders]]
path = "{drop}"
project = "auto"
stable_seconds = 0.2
""", projects=PROJECTS)
    path.write_text(path.read_text().replace("[http]\nenabled = false\n", "[http]\nenabled = true\nport = 0\n")
                    .replace('log_level = "DEBUG"', 'log_level = "INFO"'))
    daemon = make_daemon(path)
    port = daemon.dicom_port()
    deadline = time.monotonic() + SECONDS
    acked: list[str] = []
    lock = threading.Lock()
    errors: list[str] = []
    sent_by_first: list = []

    def dicom(worker: int) -> None:
        seed = 10_000 * (worker + 1)
        while time.monotonic() < deadline:
            if worker == ASSOCIATIONS - 1:  # re-sends what worker 0 sent: duplicates racing archiving
                with lock:
                    study = list(sent_by_first[-3:])
                if not study:
                    time.sleep(0.05)
                    continue
            else:
                study = _study(seed)
                seed += 1
            result = send_tracking(port, study, SendResult(), ae_title=f"SOAK{worker}", timeout=30)
            with lock:
                acked.extend(result.acknowledged)
                if worker == 0:
                    sent_by_first.extend(study)
                if result.refused or result.error or result.unanswered:
                    errors.append(f"worker {worker}: {result.refused} {result.error} {len(result.unanswered)}")

    dropped: list[str] = []

    def dropper() -> None:
        seed = 900_000
        while time.monotonic() < deadline:
            study = _study(seed)
            seed += 1
            staging = tmp_path / f"staging{seed}"
            for file in write_study(study, staging):
                file.rename(drop / file.name)  # atomic appearance in the drop folder
            dropped.extend(str(ds.SOPInstanceUID) for ds in study)
            time.sleep(0.2)  # a modality writing a study now and then

    uploaded: list[str] = []
    server = next((s for s in daemon.services if type(s).__name__ == "HttpServer"), None)

    def uploader() -> None:
        from dicomd.auth import Auth

        Auth(daemon.stores.catalog).add_user("soak", "correct-horse-1", admin=True)  # type: ignore[union-attr]
        seed = 800_000
        with httpx.Client(base_url=server.url, auth=("soak", "correct-horse-1"), timeout=30) as client:
            while time.monotonic() < deadline:
                study = _study(seed)
                seed += 1
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w") as zf:
                    for file in write_study(study, tmp_path / f"up{seed}"):
                        zf.write(file, file.name)
                reply = client.post("/data/services/import", params={"project": "auto"}, content=buf.getvalue(),
                                    headers={"Content-Type": "application/zip"})
                if reply.status_code == 200:
                    uploaded.extend(str(ds.SOPInstanceUID) for ds in study)
                else:
                    errors.append(f"upload: {reply.status_code} {reply.text[:200]}")

    drop.mkdir(exist_ok=True)
    threads = [threading.Thread(target=dicom, args=(w,)) for w in range(ASSOCIATIONS)]
    threads.append(threading.Thread(target=dropper))
    if server is not None:
        threads.append(threading.Thread(target=uploader))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SECONDS + 60)
    assert not errors, errors[:5]
    catalog = daemon.stores.catalog  # type: ignore[union-attr]
    wait_for(lambda: not any(drop.iterdir()), timeout=60, message="drop folder not emptied")
    wait_for(lambda: not catalog.sessions("prearchive"), timeout=60,
             message=f"prearchive not drained: {[(s.ref, s.status, s.reason) for s in catalog.sessions('prearchive')]}")
    data = daemon.config.data_dir
    daemon.stop()
    report = check_store(Layout(data), Catalog(Layout(data).catalog))
    assert report.ok, report.describe()
    everything = set(acked) | set(dropped) | set(uploaded)
    wrong = {uid: report.archive_uids[uid] for uid in everything if report.archive_uids[uid] != 1}
    assert not wrong, f"{len(wrong)} acknowledged instances not exactly once in the archive"
    assert len(acked) >= ASSOCIATIONS and dropped and (uploaded or server is None)
    print(f"soak {SECONDS}s: {len(acked)} C-STOREs ({len(set(acked))} distinct), {len(dropped)} dropped, "
          f"{len(uploaded)} uploaded; archive holds {len(report.archive_uids)} instances")


@pytest.mark.slow
def test_same_instance_with_different_content_on_parallel_associations(tmp_path: Path,
                                                                       make_daemon: Callable[..., Daemon]) -> None:
    """Four senders race the same SOP Instance UID with different bytes: whichever wins, the
    file on disk and its catalog row must describe the same bytes."""
    daemon = make_daemon(write_config(tmp_path))
    port = daemon.dicom_port()
    base = generate_study(21, series=1, instances_per_series=1, rows=16, cols=16)[0]
    variants = []
    for i in range(4):
        ds = base.copy()
        ds.ImageComments = "x" * (1 + 997 * i)  # a different size for each sender
        variants.append(ds)
    results = [SendResult() for _ in variants]

    def run(i: int) -> None:
        send_tracking(port, [variants[i]] * 15, results[i], ae_title=f"RACE{i}", timeout=30)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(variants))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(len(r.acknowledged) == 15 for r in results), results
    data = daemon.config.data_dir
    daemon.stop()
    report = check_store(Layout(data), Catalog(Layout(data).catalog))
    assert report.ok, report.describe()
    assert report.prearchive_uids[str(base.SOPInstanceUID)] == 1
