"""Several receiver processes share one port (SO_REUSEPORT) over one catalog."""

import threading
from pathlib import Path

import pytest

from dicomd.catalog import PREARCHIVE
from dicomd.testing.generator import generate_study
from tests.conftest import send, wait_for, write_config

pytestmark = pytest.mark.both_engines


def test_two_processes_one_port_one_session(make_daemon, tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("min_free_bytes = 0", "min_free_bytes = 0\nreceiver_processes = 2"))
    daemon = make_daemon(path)
    assert daemon.workers is not None
    for pid in daemon.workers.pids():  # the lean entry point: no HTTP stack, no NumPy/pandas/Pillow
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert not [name for name in ("fastapi", "pydantic_core", "numpy", "pandas", "PIL") if f"/{name}/" in maps]
        assert b"dicomd.receivermain" in Path(f"/proc/{pid}/cmdline").read_bytes()
    study = generate_study(5, series=3, instances_per_series=6, study_description="demo")
    chunks = [study[i::6] for i in range(6)]
    results = [[] for _ in chunks]

    def sender(i):
        results[i] = send(daemon.dicom_port(), chunks[i], ae_title=f"S{i}")

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(len(chunks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(results, []) == [0] * 18
    rows = wait_for(lambda: daemon.stores.catalog.sessions(PREARCHIVE, status="READY"))
    assert len(daemon.stores.catalog.sessions(PREARCHIVE)) == 1
    assert rows[0].instances == 18 and rows[0].scans == 3
    sources = {i.source for i in daemon.stores.catalog.instances(rows[0].id)}
    assert len(sources) == 6
    daemon.stop()
    assert daemon.workers is None
