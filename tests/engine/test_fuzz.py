"""Hostile peers against the asyncio engine: truncated PDUs, lying lengths, gigabyte declared
lengths, PDVs for contexts never accepted, 200 proposed contexts, garbage after release, random
bytes and mutated sessions. Nothing crashes; each bad peer ends with an A-ABORT or A-ASSOCIATE-RJ
(or a clean release); a sender storing all the while is served throughout."""

from __future__ import annotations

import random
import struct
import threading
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicomd.catalog import Catalog
from dicomd.config import load
from dicomd.daemon import Daemon
from dicomd.layout import Layout
from dicomd.storecheck import check_store
from dicomd.testing.generator import generate_study
from tests.conftest import send, write_config
from tests.engine.rawpeer import CT, EXPLICIT, RELEASE_RQ, RawPeer, associate_rq, p_data, pdv, store_command
from tests.engine.test_protocol import _dataset
from tests.reliability.harness import echo

ENDINGS = {3, 7}  # A-ASSOCIATE-RJ, A-ABORT
ALLOWED = {2, 3, 4, 6, 7}  # what an acceptor may send at all


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, list[int]]]:
    """One daemon for the whole module, and a sender that keeps storing until the module is done."""
    tmp = tmp_path_factory.mktemp("fuzz")
    receiver = "acse_timeout = 2\nnetwork_timeout = 2\ndimse_timeout = 2\nmax_pdu_size = 65536\nmax_associations = 4"
    daemon = Daemon(load(write_config(tmp, receiver=receiver, engine="asyncio"))).start()
    statuses: list[int] = []
    stop = threading.Event()

    def keep_storing() -> None:
        seed = 0
        while not stop.is_set():
            seed += 1
            statuses.extend(send(daemon.dicom_port(), generate_study(seed, series=1, instances_per_series=2,
                                                                      rows=8, cols=8)))

    sender = threading.Thread(target=keep_storing, daemon=True)
    sender.start()
    yield daemon, statuses
    stop.set()
    sender.join(60)
    assert statuses and set(statuses) == {0}, "the honest sender was not served throughout"
    assert echo(daemon.dicom_port())
    data = daemon.config.data_dir
    daemon.stop()
    report = check_store(Layout(data), Catalog(Layout(data).catalog))
    assert report.ok, report.describe()


def _exchange(port: int, stream: bytes, pieces: int = 1) -> list[int]:
    """Send ``stream`` (in a few writes), then read every PDU until the receiver closes."""
    peer = RawPeer(port, timeout=10)
    step = max(1, len(stream) // pieces)
    for start in range(0, len(stream), step):
        if not peer.send(stream[start:start + step]):
            break
    kinds = []
    while True:
        reply = peer.read(timeout=8)
        if reply is None:
            break
        kinds.append(reply.kind)
        if reply.kind in (3, 6, 7):
            assert peer.closed_within(5)
            break
    peer.close()
    return kinds


def _check(kinds: list[int]) -> None:
    assert set(kinds) <= ALLOWED, kinds
    if kinds:
        assert kinds[-1] in ENDINGS | {6}, kinds  # ended by a reject, an abort or a release


def _session(seed: int) -> bytes:
    data, uid = _dataset(seed)
    return associate_rq() + p_data(pdv(1, 0x03, store_command(uid)), pdv(1, 0x02, data)) + RELEASE_RQ


def _two_hundred_contexts() -> bytes:
    rq = bytearray(associate_rq(contexts=[(1, CT, [EXPLICIT])]))
    item = rq[74:][: 4 + struct.unpack(">H", rq[76:78])[0]]  # application context item
    rest = rq[74 + len(item):]
    cx_len = struct.unpack(">H", rest[2:4])[0]
    context, user = rest[: 4 + cx_len], rest[4 + cx_len:]
    contexts = b"".join(bytes(context[:4]) + bytes([(2 * i + 1) % 256]) + bytes(context[5:]) for i in range(200))
    body = bytes(rq[6:74]) + bytes(item) + contexts + bytes(user)
    return struct.pack(">BBI", 1, 0, len(body)) + body


CASES = {
    "truncated request": associate_rq()[:50],
    "request shorter than it says": associate_rq()[:-10],
    "request longer than it says": associate_rq() + b"\x00" * 40,
    "gigabyte request": b"\x01\x00\x40\x00\x00\x00" + associate_rq()[6:],
    "gigabyte release": associate_rq() + b"\x05\x00\xff\xff\xff\xf0",
    "gigabyte P-DATA": associate_rq() + b"\x04\x00\xff\xff\xff\xff" + b"\x00" * 100,
    "PDV longer than its PDU": associate_rq() + b"\x04\x00\x00\x00\x00\x10" + struct.pack(">IBB", 0xFFFFFF, 1, 3),
    "PDV for an unaccepted context": associate_rq() + p_data(pdv(77, 0x03, store_command("2.25.1"))),
    "data set before its command": associate_rq() + p_data(pdv(1, 0x02, b"\x08\x00\x18\x00")),
    "garbage command": associate_rq() + p_data(pdv(1, 0x03, b"\xde\xad\xbe\xef" * 5)),
    "200 proposed contexts": _two_hundred_contexts(),
    "P-DATA before association": p_data(pdv(1, 0x03, store_command("2.25.2"))),
    "unknown PDU type": associate_rq() + b"\x55\x00\x00\x00\x00\x04\x00\x00\x00\x00",
    "release then garbage": associate_rq() + RELEASE_RQ + bytes(range(256)) * 20,
    "second request": associate_rq() * 2,
    "abort right away": b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00",
    "empty PDV": associate_rq() + b"\x04\x00\x00\x00\x00\x06" + struct.pack(">IBB", 2, 1, 3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case(served: tuple[Daemon, list[int]], name: str) -> None:
    daemon, _statuses = served
    kinds = _exchange(daemon.dicom_port(), CASES[name], pieces=3)
    _check(kinds)
    if name not in ("abort right away",):
        assert kinds and kinds[-1] in ENDINGS | {6}, (name, kinds)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)), max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 10**9)), junk=st.binary(max_size=64), pieces=st.integers(1, 7))
def test_mutated_sessions(served: tuple[Daemon, list[int]], seed: int, flips: list[tuple[int, int]],
                          cut: int | None, junk: bytes, pieces: int) -> None:
    daemon, _statuses = served
    stream = bytearray(_session(seed % 50))
    rng = random.Random(seed)
    for where, value in flips:  # bias the flips towards the headers, where lengths live
        index = where % (600 if rng.random() < 0.7 else len(stream))
        stream[index % len(stream)] = value
    if cut is not None:
        stream = stream[: cut % (len(stream) + 1)]
    kinds = _exchange(daemon.dicom_port(), bytes(stream) + junk, pieces)
    assert set(kinds) <= ALLOWED, kinds


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=2000))
def test_random_bytes(served: tuple[Daemon, list[int]], data: bytes) -> None:
    daemon, _statuses = served
    kinds = _exchange(daemon.dicom_port(), data)
    _check(kinds)
    assert kinds and kinds[-1] in ENDINGS, kinds
