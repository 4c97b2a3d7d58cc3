"""Guarantee 5 (part): a sender that stalls mid-instance is dropped after the network timeout;
its partial instance is discarded, its complete instances are kept; the daemon keeps serving."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest
from pynetdicom import AE, StoragePresentationContexts

from dicomd.catalog import PREARCHIVE
from dicomd.daemon import Daemon
from dicomd.testing.generator import generate_study
from tests.conftest import send, wait_for, write_config
from tests.reliability.harness import echo

pytestmark = pytest.mark.both_engines


@pytest.fixture(autouse=True)
def _restore_tempdir() -> Iterator[None]:
    before = tempfile.tempdir
    yield
    tempfile.tempdir = before


def test_a_stalled_sender_is_dropped_and_its_partial_instance_discarded(
        tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = make_daemon(write_config(tmp_path, receiver="network_timeout = 1\nmax_pdu_size = 16384\n"))
    port = daemon.dicom_port()
    study = generate_study(12, series=1, instances_per_series=3, rows=256, cols=256)  # ~130 KB each
    ae = AE(ae_title="STALLER")
    ae.requested_contexts = StoragePresentationContexts[:100]
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMD")
    assert assoc.is_established
    assert [int(assoc.send_c_store(ds).Status) for ds in study[:2]] == [0, 0]
    # The third instance: stop sending after a few of its ~8 PDUs, as a hung sender would
    release = threading.Event()
    sock = assoc.dul.socket
    real_send = sock.send
    calls = {"n": 0}

    def stalling_send(data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            release.wait(30)
            return
        real_send(data)

    sock.send = stalling_send  # type: ignore[method-assign]
    sender = threading.Thread(target=lambda: assoc.send_c_store(study[2]), daemon=True)
    sender.start()
    tmp = daemon.config.data_dir / "tmp"
    wait_for(lambda: any(tmp.iterdir()), timeout=10)  # the partial instance is being spooled
    wait_for(lambda: not any(tmp.iterdir()), timeout=15)  # dropped after ~1 s: partial data discarded
    release.set()
    sender.join(timeout=30)
    catalog = daemon.stores.catalog  # type: ignore[union-attr]
    uids = {i.sop_instance_uid for s in catalog.sessions(PREARCHIVE) for i in catalog.instances(s.id)}
    assert uids == {str(ds.SOPInstanceUID) for ds in study[:2]}  # the complete ones are kept
    assert echo(port)
    assert send(port, study[2:]) == [0]
