"""The routing-header read, done on the bytes of a data set as they stream past.

`HeaderScanner` walks the element headers of a C-STORE data set (Implicit or Explicit VR Little
Endian, which covers every encapsulated syntax), keeps the ~16 values ingest needs and checks on
the way that every element ends inside the data (dicomd.header's wholeness check). It never
guesses: whenever it meets anything that dicomd.header (pydicom) might read differently — another
encoding, a value that is not plain printable ASCII, a multi-valued or very long value, elements out
of order, an undefined-length UN, a data set that ends inside an element — it gives up and
`result()` returns None; the receiver then reads the spool file with dicomd.header.read_header,
which decides (and words the refusal) exactly as for every other receiver. Whenever it does return
a HeaderInfo, that is byte for byte what read_header returns for the same file: property-tested
against it on every pydicom test file and on hypothesis-made and mutated data sets
(tests/engine/test_codecs.py).
"""

from __future__ import annotations

import re
import struct

from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian

from dicomd.header import ROUTING_TAGS, HeaderInfo

_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
UNDEFINED = 0xFFFFFFFF
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
                        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
MAX_VALUE = 1024  # longer wanted values: leave it to the reference reader
MAX_ELEMENTS = 100_000
MAX_DEPTH = 64

SOP_CLASS, SOP_INSTANCE = 0x00080016, 0x00080018
STUDY_DATE, STUDY_TIME, MODALITY, SERIES_DESCRIPTION = 0x00080020, 0x00080030, 0x00080060, 0x0008103E
STUDY_UID, SERIES_UID, SERIES_NUMBER = 0x0020000D, 0x0020000E, 0x00200011
WANTED = frozenset({SOP_CLASS, SOP_INSTANCE, STUDY_DATE, STUDY_TIME, MODALITY, SERIES_DESCRIPTION,
                    STUDY_UID, SERIES_UID, SERIES_NUMBER, *ROUTING_TAGS})
_PLAIN = re.compile(rb"[\x20-\x5b\x5d-\x7e]*")  # printable ASCII without the value separator '\'
_INTEGER = re.compile(r"[+-]?[0-9]{1,12}")

# Parser states
_ELEMENT, _ITEMS, _VALUE, _SKIP = 0, 1, 2, 3


class _GiveUp(Exception):
    pass


class HeaderScanner:
    """Feed the data set's bytes in any pieces with `feed`; then `result()`."""

    def __init__(self, transfer_syntax: str) -> None:
        self.transfer_syntax = transfer_syntax
        self.implicit = transfer_syntax == ImplicitVRLittleEndian
        self.failed = transfer_syntax in (ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian)
        self._pending = bytearray()
        self._skip = 0
        self._state = _ELEMENT
        self._stack: list[int] = []  # per open undefined-length level: _ITEMS (a sequence) or _ELEMENT (an item)
        self._want_tag = 0
        self._want_length = 0
        self._last_tag = -1
        self._count = 0
        self.values: dict[int, bytes] = {}

    def feed(self, data: bytes | memoryview) -> None:
        if self.failed:
            return
        try:
            self._feed(memoryview(data))
        except (_GiveUp, struct.error):
            self.failed = True
            self._pending = bytearray()

    def _feed(self, data: memoryview) -> None:
        offset, end = 0, len(data)
        while offset < end:
            state = self._state
            if state == _SKIP:
                step = min(self._skip, end - offset)
                self._skip -= step
                offset += step
                if self._skip == 0:
                    self._state = self._top()
                continue
            if state == _VALUE:
                need = self._want_length - len(self._pending)
                if not self._pending and need <= end - offset:  # the whole value is in this piece
                    self.values[self._want_tag] = bytes(data[offset:offset + need])
                    offset += need
                    self._state = self._top()
                    continue
                self._pending += data[offset:offset + need]
                offset += min(need, end - offset)
                if len(self._pending) == self._want_length:
                    self.values[self._want_tag] = bytes(self._pending)
                    self._pending = bytearray()
                    self._state = self._top()
                continue
            if not self._pending:  # an element or item header, read where it lies in this piece
                used = self._header(data, offset, end)
                if used:
                    offset += used
                else:  # it goes on in the next piece
                    self._pending += data[offset:end]
                    offset = end
                continue
            # a header begun in an earlier piece: complete it from this one (at most 12 bytes)
            before = len(self._pending)
            self._pending += data[offset:offset + 12 - before]
            used = self._header(self._pending, 0, len(self._pending))
            if used == 0:
                offset = min(end, offset + 12 - before)
                continue
            offset += used - before  # used > before: the previous piece could not complete it
            self._pending = bytearray()

    def _top(self) -> int:
        return self._stack[-1] if self._stack else _ELEMENT

    def _header(self, buf: bytearray | memoryview, at: int, end: int) -> int:
        """Consume one header from ``buf[at:end]``; returns its size, or 0 when that is too short."""
        if end - at < 8:
            return 0
        group, element = _TAG.unpack_from(buf, at)
        tag = (group << 16) | element
        in_sequence = self._state == _ITEMS
        if group == 0xFFFE:
            length = _U32.unpack_from(buf, at + 4)[0]
            self._delimiter(tag, length, in_sequence)
            return 8
        if in_sequence:
            raise _GiveUp
        top_level = not self._stack
        if self.implicit:
            vr = b""
            length = _U32.unpack_from(buf, at + 4)[0]
            size = 8
        else:
            vr = bytes(buf[at + 4:at + 6])
            if vr in _LONG_VRS:
                if end - at < 12:
                    return 0
                length = _U32.unpack_from(buf, at + 8)[0]
                size = 12
            elif vr in _SHORT_VRS:
                length = _U16.unpack_from(buf, at + 6)[0]
                size = 8
            else:
                raise _GiveUp  # an unknown VR: pydicom has its own ways with those
        if top_level:
            if tag <= self._last_tag or group in (0x0000, 0x0002):
                raise _GiveUp
            self._last_tag = tag
            self._count += 1
            if self._count > MAX_ELEMENTS:
                raise _GiveUp
        if length == UNDEFINED:
            if vr == b"UN" or (vr not in (b"", b"SQ") and tag != 0x7FE00010):
                raise _GiveUp  # implicit-VR content inside, or an odd undefined length
            if top_level and tag in WANTED:
                raise _GiveUp
            if len(self._stack) >= MAX_DEPTH:
                raise _GiveUp
            self._stack.append(_ITEMS)
            self._state = _ITEMS
            return size
        if top_level and tag in WANTED:
            if length > MAX_VALUE:
                raise _GiveUp
            self._want_tag, self._want_length = tag, length
            self._state = _VALUE if length else self._top()
            if not length:
                self.values[tag] = b""
            return size
        self._skip = length
        self._state = _SKIP if length else self._top()
        return size

    def _delimiter(self, tag: int, length: int, in_sequence: bool) -> None:
        if in_sequence and tag == ITEM:
            if length == UNDEFINED:
                self._stack.append(_ELEMENT)
                self._state = _ELEMENT
            else:
                self._skip = length
                self._state = _SKIP if length else _ITEMS
            return
        if in_sequence and tag == SEQUENCE_END:
            self._stack.pop()
            self._state = self._top()
            return
        if not in_sequence and self._stack and tag == ITEM_END:
            self._stack.pop()
            self._state = self._top()
            return
        raise _GiveUp

    def result(self) -> HeaderInfo | None:
        """The header, or None when the reference reader must decide."""
        if self.failed or self._stack or self._pending or self._state != _ELEMENT or not self._count:
            return None
        try:
            text = {tag: _text(raw) for tag, raw in self.values.items()}
        except _GiveUp:
            return None
        number = text.get(SERIES_NUMBER, "")
        if number and not _INTEGER.fullmatch(number):
            return None
        sop_uid, study_uid = text.get(SOP_INSTANCE, ""), text.get(STUDY_UID, "")
        if not sop_uid or not study_uid or not text.get(SOP_CLASS):
            return None  # missing UIDs: the reference reader takes them from the file meta or refuses
        return HeaderInfo(
            sop_instance_uid=sop_uid,
            sop_class_uid=text[SOP_CLASS],
            study_instance_uid=study_uid,
            series_instance_uid=text.get(SERIES_UID, ""),
            series_number=number,
            series_description=text.get(SERIES_DESCRIPTION, "")[:256],
            modality=text.get(MODALITY, "")[:16],
            study_date=text.get(STUDY_DATE, "")[:8],
            study_time=text.get(STUDY_TIME, "")[:16],
            transfer_syntax=self.transfer_syntax,
            has_preamble=True,
            routing={tag: text.get(tag, "") for tag in ROUTING_TAGS},
        )


def _text(raw: bytes) -> str:
    value = raw.rstrip(b"\x00 ")
    if not _PLAIN.fullmatch(value):
        raise _GiveUp
    return value.decode("ascii").strip()
