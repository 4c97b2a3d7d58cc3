"""Writing a de-identified dataset: the bytes of pydicom's ``dcmwrite(ds, enforce_file_format=False)``,
with their SHA-256 computed as they are written (the file is not read back).

Most elements of a de-identified instance were never decoded (kept as received, pixel data
included). pydicom writes each of those through a scratch buffer per element; here an element
still in its raw form is copied straight after its header; a decoded one that pydicom writes
without its character set (empty, UIDs, code strings, dates given as text) is encoded here as
pydicom's ``write_string`` does; every other element goes through pydicom's own
``write_data_element``, so the bytes are pydicom's. Sequences are written here too, the same way pydicom writes them (defined
item lengths, undefined ones kept), so that their items' raw elements are copied as well.

Anything unusual goes to pydicom whole, through memory: no File Meta or no preamble, a big
endian, deflated, private or unknown transfer syntax, command or file meta elements in the
dataset, and a dataset (or item) whose encoding or character set differs from what it was read
with (pydicom then decodes and corrects every element). tests/anonymize/test_encode.py checks
the bytes against pydicom's on every kind of file the tests have.
"""

from __future__ import annotations

import hashlib
import io
import logging
import struct
from typing import BinaryIO

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import write_data_element, writers
from pydicom.multival import MultiValue
from pydicom.filebase import DicomBytesIO
from pydicom.tag import tag_in_exception
from pydicom.uid import DeflatedExplicitVRLittleEndian
from pydicom.valuerep import AMBIGUOUS_VR, EXPLICIT_VR_LENGTH_32

logger = logging.getLogger(__name__)

_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)  # explicit VR: reserved 2 bytes + 32-bit length
_TAG = struct.Struct("<HH")
_US = struct.Struct("<H")
_UL = struct.Struct("<L")
_UNDEFINED = 0xFFFFFFFF
_ITEM = _TAG.pack(0xFFFE, 0xE000)
_ITEM_END = _TAG.pack(0xFFFE, 0xE00D) + _UL.pack(0)
_SEQUENCE_END = _TAG.pack(0xFFFE, 0xE0DD) + _UL.pack(0)
_STRING_VRS = {"AE": " ", "AS": " ", "CS": " ", "UR": " ", "DA": " ", "DT": " ", "TM": " ", "UI": "\x00"}
_BYTES_VRS = frozenset({"OB", "OW"})  # decoded: written by pydicom as they are, padded to even length
_GROUP_LENGTH = _TAG.pack(0x0002, 0x0000) + b"UL" + _US.pack(4)


class _Sink:
    """Where the encoded bytes go: a file and a running SHA-256 (or, for a sequence, memory)."""

    def __init__(self, out: BinaryIO | None = None) -> None:
        self.out = out
        self.parts: list[bytes] = []
        self.digest = hashlib.sha256() if out is not None else None
        self.size = 0

    def write(self, data: bytes) -> None:
        if self.out is None:
            self.parts.append(data)
        else:
            self.out.write(data)
            self.digest.update(data)  # type: ignore[union-attr]
        self.size += len(data)

    def hexdigest(self) -> str:
        assert self.digest is not None
        return self.digest.hexdigest()


def write_file(ds: Dataset, out: BinaryIO) -> tuple[str, int]:
    """Write ``ds`` to ``out`` as ``ds.save_as(out, enforce_file_format=False)`` would;
    returns (sha256 hex, size) of what was written."""
    sink = _Sink(out)
    implicit = _plain_encoding(ds)
    if implicit is None:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=False)
        sink.write(buffer.getvalue())
        return sink.hexdigest(), sink.size
    syntax = ds.file_meta.TransferSyntaxUID
    if "PixelData" in ds:  # as dcmwrite: encapsulated pixel data has an undefined length, native not
        ds["PixelData"].is_undefined_length = syntax.is_compressed
    sink.write(ds.preamble + b"DICM")
    sink.write(_file_meta(ds))
    _write_dataset(sink, ds, implicit, default_encoding)
    return sink.hexdigest(), sink.size


def _plain_encoding(ds: Dataset) -> bool | None:
    """Whether ``ds`` is written in implicit VR (little endian either way), or None when this
    module leaves it to pydicom."""
    meta = getattr(ds, "file_meta", None)
    preamble = getattr(ds, "preamble", None)
    if meta is None or not preamble or len(preamble) != 128:
        return None
    syntax = meta.get("TransferSyntaxUID")
    if (not syntax or syntax.is_private or not syntax.is_transfer_syntax or not syntax.is_little_endian
            or syntax == DeflatedExplicitVRLittleEndian):
        return None
    if any(tag >> 16 in (0, 2) for tag in ds.keys()) or any(tag >> 16 != 2 for tag in meta.keys()):
        return None  # pydicom refuses these: let it say so
    for tag in meta.keys():  # as built by fresh_file_meta: decoded values, no VR to correct
        elem = meta.get_item(tag)
        if elem.is_raw or elem.VR in AMBIGUOUS_VR or (tag == 0x00020000 and type(elem.value) is not int):
            return None
    return bool(syntax.is_implicit_VR)


def _file_meta(ds: Dataset) -> bytes:
    """pydicom's ``write_file_meta_info``: group 0002 in explicit VR little endian, its group
    length (when there is one) counting the bytes after it."""
    meta = ds.file_meta
    buffer = _buffer(False)
    for tag in sorted(meta.keys()):
        if tag != 0x00020000:
            with tag_in_exception(tag):
                write_data_element(buffer, meta.get_item(tag), default_encoding)
    body = buffer.getvalue()
    if 0x00020000 not in meta:
        return body
    return _GROUP_LENGTH + _UL.pack(len(body)) + body


def _write_dataset(sink: _Sink, ds: Dataset, implicit: bool, parent_encoding: str | list[str]) -> None:
    """pydicom's ``write_dataset``: the elements in tag order, group lengths left out."""
    if ds.original_encoding != (implicit, True) or ds.original_character_set != ds._character_set:
        buffer = _buffer(implicit)  # pydicom corrects ambiguous VRs and re-encodes every element
        from pydicom.filewriter import write_dataset

        write_dataset(buffer, ds, parent_encoding)
        sink.write(buffer.getvalue())
        return
    encoding = ds.get("SpecificCharacterSet", parent_encoding)
    for tag in sorted(ds.keys()):
        if not tag & 0xFFFF and tag >> 16 > 6:
            continue
        elem = ds.get_item(tag)
        if elem.is_raw:
            header = _raw_header(elem, implicit)
            if header is not None:
                value = elem.value
                if len(value) > 4096:
                    sink.write(header)
                    sink.write(value)  # a large value goes out as it was read, not copied
                else:
                    sink.write(header + value)
                continue
        elif elem.VR == "SQ":
            with tag_in_exception(tag):
                _write_sequence(sink, elem, implicit, encoding)
            continue
        elif elem.VR in _BYTES_VRS and type(elem.value) is bytes and not elem.is_undefined_length:
            _write_bytes(sink, elem, implicit)  # pixel data: dcmwrite has decoded it (to set its length)
            continue
        else:
            value = _plain_value(elem)
            if value is not None:
                header = _header(elem.tag, elem.VR, len(value), implicit)
                if header is not None:
                    sink.write(header + value)
                    continue
        buffer = _buffer(implicit)
        with tag_in_exception(tag):
            write_data_element(buffer, elem, encoding)
        sink.write(buffer.getvalue())


def _raw_header(elem: RawDataElement, implicit: bool) -> bytes | None:
    """Tag, VR and length of an element still in its raw form, or None when pydicom must write
    it (undefined length, a deferred value, a VR pydicom would change or refuse)."""
    value = elem.value
    if type(value) is not bytes or elem.length == _UNDEFINED:
        return None
    tag = _TAG.pack(elem.tag >> 16, elem.tag & 0xFFFF)
    if implicit:
        return tag + _UL.pack(len(value))
    vr = elem.VR
    if not isinstance(vr, str) or len(vr) != 2:
        return None
    if vr in _LONG_VRS:
        return tag + vr.encode() + b"\x00\x00" + _UL.pack(len(value))
    if len(value) > 0xFFFF:
        return None  # pydicom writes it as UN
    return tag + vr.encode() + _US.pack(len(value))


def _plain_value(elem: DataElement) -> bytes | None:
    """The encoded value of a decoded element that pydicom writes without its character set
    (``write_string``: AE, AS, CS, UR, UI padded with a zero byte, DA / DT / TM given as text),
    or of an empty one; None for anything else."""
    if elem.is_undefined_length or elem.VR not in writers or len(elem.VR) != 2 or elem.VR == "SQ":
        return None
    if elem.is_empty:
        return b""
    padding = _STRING_VRS.get(elem.VR)
    if padding is None:
        return None
    value = elem.value
    if isinstance(value, (MultiValue, list, tuple)):
        if not all(isinstance(v, str) for v in value):
            return None
        value = "\\".join(value)
    elif not isinstance(value, str):
        return None
    if len(value) % 2:
        value += padding
    return value.encode(default_encoding)


def _header(tag: int, vr: str, length: int, implicit: bool) -> bytes | None:
    """Tag, VR and length as pydicom writes them for a defined length (None: over 64 KiB in a
    16-bit length field, which pydicom writes as UN)."""
    packed = _TAG.pack(tag >> 16, tag & 0xFFFF)
    if implicit:
        return packed + _UL.pack(length)
    if vr in _LONG_VRS:
        return packed + vr.encode() + b"\x00\x00" + _UL.pack(length)
    if length > 0xFFFF:
        return None
    return packed + vr.encode() + _US.pack(length)


def _write_bytes(sink: _Sink, elem: DataElement, implicit: bool) -> None:
    """pydicom's ``write_OBvalue`` / ``write_OWvalue`` with the element's header: the value as
    it is, a zero byte after an odd length."""
    value: bytes = elem.value
    pad = b"\x00" if len(value) % 2 else b""
    header = _TAG.pack(elem.tag >> 16, elem.tag & 0xFFFF)
    if not implicit:
        header += elem.VR.encode() + b"\x00\x00"
    sink.write(header + _UL.pack(len(value) + len(pad)))
    sink.write(value)
    if pad:
        sink.write(pad)


def _write_sequence(sink: _Sink, elem: DataElement, implicit: bool, encoding: str | list[str]) -> None:
    """pydicom's ``write_data_element`` for a sequence, with ``write_sequence`` and
    ``write_sequence_item``: each item with its length, or undefined as it was read."""
    items = _Sink()
    encodings = convert_encodings(encoding or [default_encoding])
    if not elem.is_empty:
        for item in elem.value:
            body = _Sink()
            _write_dataset(body, item, implicit, encodings)
            if getattr(item, "is_undefined_length_sequence_item", False):
                items.write(_ITEM + _UL.pack(_UNDEFINED))
                items.parts.extend(body.parts)
                items.write(_ITEM_END)
            else:
                items.write(_ITEM + _UL.pack(body.size))
                items.parts.extend(body.parts)
            items.size += body.size
    undefined = elem.is_undefined_length
    header = _TAG.pack(elem.tag >> 16, elem.tag & 0xFFFF)
    if not implicit:
        header += b"SQ\x00\x00"
    sink.write(header + _UL.pack(_UNDEFINED if undefined else items.size))
    for part in items.parts:
        sink.write(part)
    if undefined:
        sink.write(_SEQUENCE_END)


def _buffer(implicit: bool) -> DicomBytesIO:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = implicit
    return buffer
