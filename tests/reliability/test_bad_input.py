"""Guarantee 4: bad input never stops the daemon. Every object is either staged or refused with
0xC000 and a quarantine entry that says why; afterwards an echo and a good store still succeed."""

from __future__ import annotations

import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import pytest

from dicomd.catalog import Catalog
from dicomd.daemon import Daemon
from dicomd.testing.generator import generate_study
from dicomd.layout import Layout
from dicomd.storecheck import check_store
from tests.conftest import send
from tests.reliability.badinput import RawSender, Sample, all_samples, chunked_send
from tests.reliability.harness import echo

pytestmark = pytest.mark.both_engines

SUCCESS, CANNOT_UNDERSTAND = 0x0000, 0xC000


@pytest.fixture(autouse=True)
def _restore_tempdir() -> Iterator[None]:
    before = tempfile.tempdir
    yield
    tempfile.tempdir = before


def test_hostile_cstores_are_staged_or_quarantined(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon()
    port = daemon.dicom_port()
    samples = all_samples()
    assert len({s.name for s in samples}) == len(samples)
    outcomes: dict[str, int] = {}

    def run(part: list[Sample], folder: Path) -> None:
        folder.mkdir()
        sender = RawSender(port, folder)
        try:
            for sample in part:
                outcomes[sample.name] = sender.send(sample)
        finally:
            sender.close()

    senders = [threading.Thread(target=run, args=(samples[i::3], tmp_path / f"s{i}")) for i in range(3)]
    with chunked_send():
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(timeout=120)
    assert len(outcomes) == len(samples)
    unexpected = {name: hex(s) for name, s in outcomes.items() if s not in (SUCCESS, CANNOT_UNDERSTAND)}
    assert not unexpected, unexpected
    refused = [name for name, s in outcomes.items() if s == CANNOT_UNDERSTAND]
    catalog = daemon.stores.catalog
    held = catalog.quarantine()
    assert len(held) == len(refused)
    assert all(entry.reason.strip() for entry in held)
    # the daemon still serves
    assert echo(port)
    assert send(port, generate_study(3, series=1, instances_per_series=2, rows=8, cols=8)) == [0, 0]
    # the obviously broken ones are refused, not staged
    broken = ("zero-length", "zeros-", "4GB-", "no-study-uid", "random", "deep-nesting-5000", "truncated:CT_small.dcm@0.6")
    for name, status in outcomes.items():
        if name.startswith(broken):
            assert status == CANNOT_UNDERSTAND, name
    counts = Counter("staged" if s == SUCCESS else "quarantined" for s in outcomes.values())
    print(f"{len(samples)} hostile objects: {dict(counts)}")
    data = daemon.config.data_dir
    daemon.stop()
    report = check_store(Layout(data), Catalog(Layout(data).catalog))
    assert report.ok, report.describe()
    assert not (data.parent / "etc").exists()
