"""The engine's per-instance codecs, byte for byte against pydicom and pynetdicom: the command
set parse, the response encode, P-DATA-TF framing, the spool file's File Meta Information and the
streaming routing-header read (hypothesis, plus every pydicom test file)."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dimse_messages import C_ECHO_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dsutils import create_file_meta, encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from dicomd.engine import dimse, pdu
from dicomd.engine.headscan import HeaderScanner
from dicomd.errors import InvalidInput
from dicomd.header import read_header
from tests.reliability.badinput import pydicom_test_files

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
uids = st.from_regex(r"[1-9][0-9]{0,5}(\.[0-9]{1,10}){1,6}", fullmatch=True).filter(lambda u: len(u) <= 64)
us = st.integers(0, 0xFFFF)


def _command_bytes(message) -> bytes:  # type: ignore[no-untyped-def]
    """The command set exactly as pynetdicom sends it (encode_msg sets the group length)."""
    fragments = b""
    for primitive in message.encode_msg(1, 0):
        for _cx, value in primitive.presentation_data_value_list:
            if value[0] & 0x01:
                fragments += value[1:]
    return fragments


@SETTINGS
@given(sop_class=uids, sop_instance=uids, message_id=us, priority=st.sampled_from([0, 1, 2]))
def test_command_parse_matches_pynetdicom(sop_class: str, sop_instance: str, message_id: int, priority: int) -> None:
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop_instance
    primitive.Priority = priority
    primitive.DataSet = io.BytesIO(b"\x08\x00\x18\x00\x00\x00\x00\x00")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    command = dimse.parse_command(_command_bytes(message))
    assert (command.command_field, command.message_id, command.priority) == (0x0001, message_id, priority)
    assert (command.affected_sop_class, command.affected_sop_instance) == (sop_class, sop_instance)
    assert command.has_dataset


@SETTINGS
@given(data=st.binary(max_size=200))
def test_command_parse_refuses_garbage_cleanly(data: bytes) -> None:
    try:
        dimse.parse_command(data)
    except dimse.DimseError:
        pass


@SETTINGS
@given(sop_class=uids, sop_instance=uids, message_id=us, status=us, max_pdu=st.sampled_from([0, 16, 64, 4096]))
def test_store_response_matches_pynetdicom(sop_class: str, sop_instance: str, message_id: int, status: int,
                                           max_pdu: int) -> None:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop_instance
    primitive.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    theirs = _command_bytes(message)
    ours = dimse.encode_response(0x0001, message_id, status, sop_class, sop_instance)
    assert ours == theirs
    pdus = b"".join(P_DATA_TF(p).encode() for p in message.encode_msg(3, max_pdu))
    assert pdu.encode_p_data(3, ours, command=True, max_pdu=max_pdu) == pdus


@SETTINGS
@given(sop_class=uids, message_id=us)
def test_echo_response_matches_pynetdicom(sop_class: str, message_id: int) -> None:
    primitive = C_ECHO()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.Status = 0
    message = C_ECHO_RSP()
    message.primitive_to_message(primitive)
    assert dimse.encode_response(0x0030, message_id, 0, sop_class) == _command_bytes(message)


@SETTINGS
@given(data=st.binary(min_size=0, max_size=3000), max_pdu=st.sampled_from([0, 7, 100, 1024]),
       command=st.booleans())
def test_p_data_framing_matches_pynetdicom(data: bytes, max_pdu: int, command: bool) -> None:
    ours = pdu.encode_p_data(5, data, command=command, max_pdu=max_pdu)
    # decode our PDUs with pynetdicom: every fragment comes back, flagged as we meant
    offset, seen = 0, b""
    while offset < len(ours):
        _kind, _r, length = pdu.HEADER.unpack_from(ours, offset)
        decoded = P_DATA_TF()
        decoded.decode(ours[offset:offset + 6 + length])
        for item in decoded.presentation_data_value_items:
            assert item.presentation_context_id == 5
            header = item.presentation_data_value[0]
            assert header & 0x01 == int(command)
            seen += item.presentation_data_value[1:]
            last = offset + 6 + length >= len(ours)
            assert bool(header & 0x02) == last
        if max_pdu:
            assert length <= max(max_pdu, 7)
        offset += 6 + length
    assert seen == data
    if data:  # and pynetdicom frames the same bytes the same way
        primitive = P_DATA()
        room = (max_pdu - 6) if max_pdu else len(data)
        flag = 0x01 if command else 0x00
        pieces = [data[i:i + room] for i in range(0, len(data), room)]
        theirs = b""
        for i, piece in enumerate(pieces):
            primitive = P_DATA()
            primitive.presentation_data_value_list = [[5, bytes([flag | (2 if i == len(pieces) - 1 else 0)]) + piece]]
            theirs += P_DATA_TF(primitive).encode()
        if max_pdu == 0 or max_pdu > 6:
            assert ours == theirs


@SETTINGS
@given(sop_class=uids, sop_instance=uids,
       syntax=st.sampled_from([ExplicitVRLittleEndian, ImplicitVRLittleEndian, "1.2.840.10008.1.2.4.50",
                               "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.1.99"]))
def test_file_meta_matches_pynetdicom_spool(sop_class: str, sop_instance: str, syntax: str) -> None:
    buf = io.BytesIO()
    buf.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buf, create_file_meta(sop_class_uid=sop_class, sop_instance_uid=sop_instance,
                                               transfer_syntax=syntax))
    assert dimse.file_meta(sop_class, sop_instance, syntax) == buf.getvalue()


# ---------------------------------------------------------------- the routing-header read


def _reference(data: bytes, syntax: str, sop_class: str, sop_instance: str, folder: Path):  # type: ignore[no-untyped-def]
    """read_header on the spool file the engine would write for ``data``; or the InvalidInput."""
    path = folder / "spool.dcm"
    path.write_bytes(dimse.file_meta(sop_class, sop_instance, syntax) + data)
    try:
        return read_header(path)
    except InvalidInput as exc:
        return exc


def _scan(data: bytes, syntax: str, cuts: list[int]):  # type: ignore[no-untyped-def]
    scanner = HeaderScanner(syntax)
    previous = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts) + [len(data)]:
        scanner.feed(data[previous:cut])
        previous = cut
    return scanner.result()


def _agrees(data: bytes, syntax: str, folder: Path, cuts: list[int], sop_instance: str = "2.25.1") -> bool:
    """The scanner says nothing, or exactly what read_header says. True when it said something."""
    ours = _scan(data, syntax, cuts)
    if ours is None:
        return False
    theirs = _reference(data, syntax, "1.2.840.10008.5.1.4.1.1.7", sop_instance, folder)
    assert not isinstance(theirs, Exception), f"scanner accepted what read_header refuses: {theirs}"
    assert ours == theirs
    return True


def test_every_pydicom_test_file(tmp_path: Path) -> None:
    fast = total = 0
    for sample in pydicom_test_files():
        total += 1
        for cuts in ([], [1, 7, 131], list(range(0, len(sample.data), 997))):
            said = _agrees(sample.data, sample.transfer_syntax, tmp_path, cuts, sample.sop_instance_uid)
        fast += said
    assert total > 50 and fast > total // 3, (fast, total)


text = st.one_of(st.just(""), st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
                 st.text(max_size=8))


@st.composite
def datasets(draw: st.DrawFn) -> tuple[bytes, str]:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    if draw(st.integers(0, 9)):
        ds.SOPInstanceUID = draw(uids)
    if draw(st.integers(0, 9)):
        ds.StudyInstanceUID = draw(uids)
    ds.SeriesInstanceUID = draw(uids)
    for keyword in ("PatientName", "PatientID", "StudyDescription", "AccessionNumber", "PatientComments",
                    "SeriesDescription", "Modality", "StudyDate", "StudyTime", "AdditionalPatientHistory"):
        if draw(st.booleans()):
            setattr(ds, keyword, draw(text))
    if draw(st.booleans()):
        ds.SeriesNumber = draw(st.one_of(st.integers(-5, 10**6), st.sampled_from(["", " 7", "012"])))
    if draw(st.booleans()):
        item = Dataset()
        item.CodeValue = draw(text)
        inner = Dataset()
        inner.CodeMeaning = "x"
        item.ConceptNameCodeSequence = Sequence([inner])
        ds.ReferencedImageSequence = Sequence([item] * draw(st.integers(0, 3)))
    if draw(st.booleans()):
        ds.add_new(0x00091010, "LO", "private")
        ds.add_new(0x00090010, "LO", "CREATOR")
    ds.BitsAllocated = 8
    ds.add_new(0x7FE00010, "OB", draw(st.binary(max_size=64)))
    syntax = draw(st.sampled_from([ExplicitVRLittleEndian, ImplicitVRLittleEndian]))
    data = encode(ds, syntax == ImplicitVRLittleEndian, True)
    assume(data is not None)
    return data, syntax


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(made=datasets(), cuts=st.lists(st.integers(0, 10**6), max_size=5))
def test_generated_data_sets(made: tuple[bytes, str], cuts: list[int], tmp_path: Path) -> None:
    data, syntax = made
    _agrees(data, syntax, tmp_path, cuts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(made=datasets(), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.one_of(st.none(), st.integers(0, 10**6)))
def test_mutated_data_sets(made: tuple[bytes, str], flips: list[tuple[int, int]], cut: int | None,
                           tmp_path: Path) -> None:
    data, syntax = made
    raw = bytearray(data)
    for where, value in flips:
        raw[where % len(raw)] = value
    if cut is not None:
        raw = raw[: cut % (len(raw) + 1)]
    assume(raw)
    _agrees(bytes(raw), syntax, tmp_path, [len(raw) // 2])


def test_read_header_accepts_a_deflated_instance() -> None:
    """Offsets in a deflated data set are in the inflated stream: not a truncation (was refused)."""
    path = Path(pydicom.__file__).parent / "data" / "test_files" / "image_dfl.dcm"
    assert read_header(path).transfer_syntax == "1.2.840.10008.1.2.1.99"
