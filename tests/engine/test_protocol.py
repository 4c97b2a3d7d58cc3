"""The asyncio engine's upper layer and DIMSE, one conformance point per test, with raw peers and
pynetdicom's SCU: negotiation (reject reasons, max PDU, implementation, asynchronous operations,
role selection, user identity, extended negotiation), P-DATA fragmentation, release, abort, the
timeouts, max_associations, C-ECHO, refusals of other services; and the two attacks that locked
out or blew up the pynetdicom receiver."""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path
from typing import Callable

import pydicom
import pytest
from pynetdicom import AE, AllStoragePresentationContexts, build_role
from pynetdicom.pdu_primitives import (
    AsynchronousOperationsWindowNegotiation,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityNegotiation,
)
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from dicomd.daemon import Daemon
from dicomd.engine import dimse
from dicomd.engine.association import IMPLEMENTATION_CLASS_UID
from dicomd.testing.generator import generate_study, instance_bytes
from tests.conftest import send, wait_for, write_config
from tests.engine.rawpeer import EXPLICIT, RELEASE_RQ, RawPeer, associate_rq, p_data, pdv, store_command
from tests.reliability.harness import echo


def _daemon(tmp_path: Path, make_daemon: Callable[..., Daemon], receiver: str = "") -> Daemon:
    return make_daemon(write_config(tmp_path, receiver=receiver, engine="asyncio"))


def _dataset(seed: int = 1, size: int = 16) -> tuple[bytes, str]:
    """A data set (no file meta) as a sender puts it in its C-STORE, and its SOP Instance UID."""
    ds = generate_study(seed, series=1, instances_per_series=1, rows=size, cols=size, study_description="demo")[0]
    raw = instance_bytes(ds)
    offset = 132 + 12 + int.from_bytes(raw[140:144], "little")
    return raw[offset:], str(ds.SOPInstanceUID)


def _status(reply) -> int:  # type: ignore[no-untyped-def]
    assert reply is not None and reply.kind == 4, reply
    return dimse_status(reply.body)


def dimse_status(body: bytes) -> int:
    value = body[6:]
    index = value.find(b"\x00\x00\x00\x09\x02\x00\x00\x00")
    assert index >= 0
    return int.from_bytes(value[index + 8:index + 10], "little")


# ---------------------------------------------------------------- negotiation


@pytest.mark.parametrize("kwargs, expected", [
    ({"called": "SOMEONE"}, (1, 1, 7)),
    ({"calling": "EVIL"}, (1, 1, 3)),
    ({"app_context": "1.2.3"}, (1, 1, 2)),
])
def test_reject_reasons(tmp_path: Path, make_daemon: Callable[..., Daemon], kwargs: dict, expected: tuple) -> None:
    daemon = _daemon(tmp_path, make_daemon, 'allowed = ["RAWPEER", "SCANNER"]')
    peer = RawPeer(daemon.dicom_port())
    peer.send(associate_rq(**kwargs))
    reply = peer.read()
    assert reply is not None and reply.kind == 3
    assert (reply.fields["result"], reply.fields["source"], reply.fields["reason"]) == expected
    assert peer.closed_within(5)


def test_protocol_version_is_checked(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = _daemon(tmp_path, make_daemon)
    rq = bytearray(associate_rq())
    rq[6:8] = b"\x00\x02"
    peer = RawPeer(daemon.dicom_port())
    peer.send(bytes(rq))
    reply = peer.read()
    assert reply is not None and reply.kind == 3 and (reply.fields["source"], reply.fields["reason"]) == (2, 2)


def test_accept_carries_our_limits_and_answers_items(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = _daemon(tmp_path, make_daemon, "max_pdu_size = 65536")
    ae = AE(ae_title="SCU")
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = 5
    window.maximum_number_operations_performed = 5
    identity = UserIdentityNegotiation()
    identity.user_identity_type = 2
    identity.primary_field = b"user"
    identity.secondary_field = b"secret"
    identity.positive_response_requested = False
    extended = SOPClassExtendedNegotiation()
    extended.sop_class_uid = CTImageStorage
    extended.service_class_application_information = b"\x01\x02"
    common = SOPClassCommonExtendedNegotiation()
    common.sop_class_uid = CTImageStorage
    common.service_class_uid = "1.2.840.10008.4.2"
    role = build_role(CTImageStorage, scu_role=True, scp_role=True)
    assoc = ae.associate("127.0.0.1", daemon.dicom_port(), ae_title="DICOMD",
                         ext_neg=[window, identity, extended, common, role])
    assert assoc.is_established
    try:
        acceptor = assoc.acceptor
        assert acceptor.maximum_length == 65536
        assert acceptor.implementation_class_uid == IMPLEMENTATION_CLASS_UID
        assert acceptor.implementation_version_name == "DICOMD_ENGINE_1"
        assert acceptor.asynchronous_operations == (1, 1)
        assert acceptor.role_selection == {}  # no reply item: the default roles, we only ever act as SCP
        ct = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == CTImageStorage)
        assert (ct.as_scu, ct.as_scp) == (True, False)
        assert int(assoc.send_c_echo().Status) == 0
    finally:
        assoc.release()


def test_many_contexts_and_a_storage_class_we_do_not_know(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = _daemon(tmp_path, make_daemon)
    contexts = [(2 * i + 1, cx.abstract_syntax, [EXPLICIT]) for i, cx in enumerate(AllStoragePresentationContexts[:120])]
    contexts.append((241, "1.2.3.4.5.6.7", [EXPLICIT]))
    peer = RawPeer(daemon.dicom_port())
    reply = peer.establish(contexts=contexts)
    results = {cx.context_id: cx.result for cx in reply.fields["primitive"].presentation_context_definition_results_list}
    assert len(results) == 121 and results[241] == 3 and all(results[c] == 0 for c, _a, _t in contexts[:-1])
    peer.send(RELEASE_RQ)
    reply = peer.read()
    assert reply is not None and reply.kind == 6


def test_max_associations_counts_established_ones(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = _daemon(tmp_path, make_daemon, "max_associations = 2")
    port = daemon.dicom_port()
    held = [RawPeer(port) for _ in range(2)]
    for peer in held:
        peer.establish()
    third = RawPeer(port)
    third.send(associate_rq())
    reply = third.read()
    assert reply is not None and reply.kind == 3 and (reply.fields["result"], reply.fields["source"],
                                                     reply.fields["reason"]) == (2, 3, 2)
    held[0].send(RELEASE_RQ)
    assert held[0].read().kind == 6  # type: ignore[union-attr]
    wait_for(lambda: echo(port), timeout=10)


# ---------------------------------------------------------------- the two attacks


def test_stalled_negotiators_do_not_lock_out_senders_and_are_dropped(tmp_path: Path,
                                                                     make_daemon: Callable[..., Daemon]) -> None:
    """12 unauthenticated connections send 20 bytes of an A-ASSOCIATE-RQ and stall: a sender still
    gets in at once, and the stalled ones are dropped when ARTIM (acse_timeout) runs out."""
    daemon = _daemon(tmp_path, make_daemon, "max_associations = 10\nacse_timeout = 3\nnetwork_timeout = 60")
    port = daemon.dicom_port()
    stalled = [RawPeer(port) for _ in range(12)]
    for peer in stalled:
        peer.send(associate_rq()[:20])
    started = time.monotonic()
    assert send(port, generate_study(3, series=1, instances_per_series=2, rows=8, cols=8)) == [0, 0]
    assert time.monotonic() - started < 2.5  # served while all 12 still hang on
    for peer in stalled:
        reply = peer.read(timeout=10)  # an A-ABORT, then the close
        assert reply is None or reply.kind == 7
        assert peer.closed_within(5)


def test_a_pdu_over_the_negotiated_maximum_is_aborted_before_it_is_buffered(
        tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    """A PDU that declares 0xFFFFFFFF bytes (4 such peers took a pynetdicom receiver to 4 GB) is
    aborted on its 6-byte header: no byte of its body needs to be sent."""
    daemon = _daemon(tmp_path, make_daemon, "max_pdu_size = 16384")
    port = daemon.dicom_port()
    peers = [RawPeer(port) for _ in range(4)]
    for i, peer in enumerate(peers):
        if i % 2:
            peer.send(b"\x01\x00\xff\xff\xff\xff")  # an association request of 4 GiB
        else:
            peer.establish()
            peer.send(b"\x04\x00\xff\xff\xff\xff")  # a P-DATA-TF of 4 GiB
    for peer in peers:
        reply = peer.read(timeout=5)
        assert reply is not None and reply.kind == 7, reply
        assert peer.closed_within(5)
    assert echo(port)


# ---------------------------------------------------------------- P-DATA, DIMSE


def _fragments(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(0, 12))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]


@pytest.mark.parametrize("seed", range(6))
def test_any_fragmentation_of_command_and_data_set(tmp_path: Path, make_daemon: Callable[..., Daemon],
                                                   seed: int) -> None:
    daemon = _daemon(tmp_path, make_daemon)
    rng = random.Random(seed)
    peer = RawPeer(daemon.dicom_port())
    peer.establish()
    for n in range(3):
        data, uid = _dataset(100 * seed + n)
        command = store_command(uid, message_id=n + 1)
        items = [pdv(1, 0x01 | (2 if i == len(parts) - 1 else 0), part)
                 for parts in [_fragments(command, rng)] for i, part in enumerate(parts)]
        items += [pdv(1, 0x00 | (2 if i == len(parts) - 1 else 0), part)
                  for parts in [_fragments(data, rng)] for i, part in enumerate(parts)]
        stream = b""
        while items:  # several PDVs per PDU, PDUs cut anywhere on the wire
            take = rng.randint(1, 4)
            stream += p_data(*items[:take])
            items = items[take:]
        for piece in _fragments(stream, rng):
            peer.send(piece)
        assert _status(peer.read()) == 0
        stored = [p for p in daemon.config.data_dir.joinpath("prearchive").rglob(f"{uid}.dcm")]
        assert len(stored) == 1 and stored[0].read_bytes().endswith(data)
        assert pydicom.dcmread(stored[0]).SOPInstanceUID == uid
    peer.send(RELEASE_RQ + os.urandom(300))  # garbage after the release is ignored
    assert peer.read().kind == 6  # type: ignore[union-attr]
    assert peer.closed_within(5)


def test_other_services_are_refused_and_echo_answers(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = _daemon(tmp_path, make_daemon)
    peer = RawPeer(daemon.dicom_port())
    peer.establish()
    find = bytearray(store_command("2.25.5"))
    find[find.find(b"\x00\x00\x00\x01\x02\x00\x00\x00") + 8] = 0x20  # C-FIND-RQ instead of C-STORE-RQ
    peer.send(p_data(pdv(1, 0x03, bytes(find)), pdv(1, 0x02, b"\x08\x00\x52\x00\x06\x00\x00\x00STUDY ")))
    reply = peer.read()
    assert _status(reply) == 0x0211
    assert dimse.parse_command(reply.body[6:]).command_field == 0x8020  # type: ignore[union-attr]
    echo_rq = bytearray(store_command("2.25.6"))
    echo_rq[echo_rq.find(b"\x00\x00\x00\x01\x02\x00\x00\x00") + 8] = 0x30
    at = echo_rq.find(b"\x00\x00\x00\x08\x02\x00\x00\x00")
    echo_rq[at + 8:at + 10] = b"\x01\x01"  # no data set
    peer.send(p_data(pdv(3, 0x03, bytes(echo_rq))))
    assert _status(peer.read()) == 0


def test_data_for_an_unaccepted_context_aborts_that_peer_only(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = _daemon(tmp_path, make_daemon)
    peer = RawPeer(daemon.dicom_port())
    peer.establish()
    peer.send(p_data(pdv(9, 0x03, store_command("2.25.7"))))
    reply = peer.read()
    assert reply is not None and reply.kind == 7 and reply.fields["source"] == 2
    assert echo(daemon.dicom_port())


def test_peer_abort_mid_instance_discards_it(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = _daemon(tmp_path, make_daemon)
    tmp = daemon.config.data_dir / "tmp"
    peer = RawPeer(daemon.dicom_port())
    peer.establish()
    data, uid = _dataset(3)
    peer.send(p_data(pdv(1, 0x03, store_command(uid)), pdv(1, 0x00, data[:500])))
    wait_for(lambda: any(tmp.iterdir()), timeout=5)
    peer.send(b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00")
    assert peer.closed_within(5)
    wait_for(lambda: not any(tmp.iterdir()), timeout=5)
    assert not list(daemon.config.data_dir.joinpath("prearchive").rglob("*.dcm"))


def test_dimse_timeout_drops_a_half_sent_message(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = _daemon(tmp_path, make_daemon, "dimse_timeout = 1\nnetwork_timeout = 60")
    peer = RawPeer(daemon.dicom_port())
    peer.establish()
    data, uid = _dataset(4)
    peer.send(p_data(pdv(1, 0x03, store_command(uid)), pdv(1, 0x00, data[:100])))
    reply = peer.read(timeout=10)
    assert reply is not None and reply.kind == 7
    wait_for(lambda: not any((daemon.config.data_dir / "tmp").iterdir()), timeout=5)


def test_network_timeout_drops_an_idle_association(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = _daemon(tmp_path, make_daemon, "network_timeout = 1")
    peer = RawPeer(daemon.dicom_port())
    peer.establish()
    reply = peer.read(timeout=10)
    assert reply is not None and reply.kind == 7
    assert peer.closed_within(5)


def test_over_max_instance_bytes_is_refused_without_filling_the_disk(tmp_path: Path,
                                                                     make_daemon: Callable[..., Daemon]) -> None:
    daemon = _daemon(tmp_path, make_daemon, "max_instance_bytes = 2000")
    peer = RawPeer(daemon.dicom_port())
    peer.establish()
    data, uid = _dataset(5, size=64)
    assert len(data) > 4000
    peer.send(p_data(pdv(1, 0x03, store_command(uid)), pdv(1, 0x00, data[:2500])))
    wait_for(lambda: not any((daemon.config.data_dir / "tmp").iterdir()), timeout=5)  # stopped writing at once
    peer.send(p_data(pdv(1, 0x02, data[2500:])))
    assert _status(peer.read()) == 0xA700
    thread_ok = []
    t = threading.Thread(target=lambda: thread_ok.append(echo(daemon.dicom_port())))
    t.start()
    t.join(10)
    assert thread_ok == [True]
