"""A tiny DIMSE command-set codec: parse any request's command set, encode C-STORE/C-ECHO/refusal
responses, and write the File Meta Information that heads each spool file.

Command sets are always Implicit VR Little Endian group 0000 elements (PS3.7 6.3.1), a handful
of fixed-type values: parsing them with pydicom's general reader and encoding responses with its
writer costs more CPU per instance than the rest of the receive path, so these few lines do it.
Both directions are property-tested byte for byte against pydicom's and pynetdicom's encoders
(tests/engine/test_codecs.py).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

# (0000,0100) Command Field values
C_STORE_RQ = 0x0001
C_ECHO_RQ = 0x0030
C_CANCEL_RQ = 0x0FFF
NO_DATASET = 0x0101

_HEADER = struct.Struct("<HHI")
_US = struct.Struct("<H")


class DimseError(ValueError):
    """A command set that cannot be decoded: the association is aborted."""


@dataclass(frozen=True)
class Command:
    """The command-set values dicomd acts on (absent values are '' or -1)."""

    command_field: int
    message_id: int
    has_dataset: bool
    affected_sop_class: str = ""
    affected_sop_instance: str = ""
    requested_sop_class: str = ""
    priority: int = -1


_US_TAGS = {0x0100: "command_field", 0x0110: "message_id", 0x0700: "priority", 0x0800: "data_set_type"}
_UI_TAGS = {0x0002: "affected_sop_class", 0x0003: "requested_sop_class", 0x1000: "affected_sop_instance"}


def parse_command(data: bytes) -> Command:
    """Decode an Implicit VR Little Endian command set; raise DimseError when it is not one."""
    values: dict[str, object] = {}
    view = memoryview(data)
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < 8:
            raise DimseError("command set ends inside an element header")
        group, element, length = _HEADER.unpack_from(view, offset)
        offset += 8
        if group != 0x0000:
            raise DimseError(f"command set holds a ({group:04X},{element:04X}) element")
        if length > end - offset:
            raise DimseError(f"command element (0000,{element:04X}) is longer than the command set")
        if element in _US_TAGS:
            if length != 2:
                raise DimseError(f"command element (0000,{element:04X}) must be 2 bytes, is {length}")
            values[_US_TAGS[element]] = _US.unpack_from(view, offset)[0]
        elif element in _UI_TAGS:
            values[_UI_TAGS[element]] = _uid(view[offset:offset + length])
        offset += length
    if "command_field" not in values:
        raise DimseError("command set has no Command Field (0000,0100)")
    data_set_type = values.pop("data_set_type", None)
    if data_set_type is None:
        raise DimseError("command set has no Command Data Set Type (0000,0800)")
    return Command(
        has_dataset=data_set_type != NO_DATASET,
        message_id=int(values.pop("message_id", -1)),  # type: ignore[call-overload]
        **values,  # type: ignore[arg-type]
    )


def _uid(raw: memoryview) -> str:
    try:
        return bytes(raw).decode("ascii").rstrip("\x00 ").lstrip(" ")
    except UnicodeDecodeError:
        raise DimseError("a UID in the command set is not ASCII") from None


def _element_ui(element: int, value: str) -> bytes:
    raw = value.encode("ascii")
    if len(raw) % 2:
        raw += b"\x00"
    return _HEADER.pack(0, element, len(raw)) + raw


def _element_us(element: int, value: int) -> bytes:
    return _HEADER.pack(0, element, 2) + _US.pack(value)


def encode_response(command_field: int, message_id: int, status: int, sop_class: str,
                    sop_instance: str = "") -> bytes:
    """A response command set (no data set) as pydicom writes it: Implicit VR LE, ascending tags,
    Command Group Length first. ``command_field`` is the request's; the response sets bit 15."""
    body = b"".join((
        _element_ui(0x0002, sop_class) if sop_class else b"",
        _element_us(0x0100, command_field | 0x8000),
        _element_us(0x0120, message_id),
        _element_us(0x0800, NO_DATASET),
        _element_us(0x0900, status),
        _element_ui(0x1000, sop_instance) if sop_instance else b"",
    ))
    return _HEADER.pack(0, 0x0000, 4) + struct.pack("<I", len(body)) + body


# ---------------------------------------------------------------- File Meta Information

_EXPLICIT = struct.Struct("<HH2sH")
PREAMBLE = b"\x00" * 128 + b"DICM"


def _meta_ui(element: int, value: str) -> bytes:
    raw = value.encode("ascii")
    if len(raw) % 2:
        raw += b"\x00"
    return _EXPLICIT.pack(2, element, b"UI", len(raw)) + raw


def _meta_sh(element: int, value: str) -> bytes:
    raw = value.encode("ascii")
    if len(raw) % 2:
        raw += b" "
    return _EXPLICIT.pack(2, element, b"SH", len(raw)) + raw


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """Preamble, 'DICM' and the File Meta Information that pynetdicom writes at the head of its
    chunked C-STORE spool (pydicom's write_file_meta_info of pynetdicom's create_file_meta)."""
    body = b"".join((
        _EXPLICIT.pack(2, 0x0001, b"OB", 0) + struct.pack("<I", 2) + b"\x00\x01",
        _meta_ui(0x0002, sop_class),
        _meta_ui(0x0003, sop_instance),
        _meta_ui(0x0010, transfer_syntax),
        _meta_ui(0x0012, PYNETDICOM_IMPLEMENTATION_UID),
        _meta_sh(0x0013, PYNETDICOM_IMPLEMENTATION_VERSION),
    ))
    return PREAMBLE + _EXPLICIT.pack(2, 0x0000, b"UL", 4) + struct.pack("<I", len(body)) + body
