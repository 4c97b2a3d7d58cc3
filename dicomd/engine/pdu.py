"""Upper-layer PDU framing (PS3.8 9.3): the 6-byte header, P-DATA-TF presentation data values,
and the association PDUs, which pynetdicom's own PDU classes decode and encode.

The header is read before anything else, so a PDU longer than we negotiated (or an association
request longer than any real one) is refused before a byte of its body is buffered.
"""

from __future__ import annotations

import struct
from typing import Iterator

from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ABORT, A_ASSOCIATE, A_P_ABORT

ASSOCIATE_RQ = 0x01
ASSOCIATE_AC = 0x02
ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
RELEASE_RQ = 0x05
RELEASE_RP = 0x06
ABORT = 0x07
NAMES = {1: "A-ASSOCIATE-RQ", 2: "A-ASSOCIATE-AC", 3: "A-ASSOCIATE-RJ", 4: "P-DATA-TF",
         5: "A-RELEASE-RQ", 6: "A-RELEASE-RP", 7: "A-ABORT"}

HEADER = struct.Struct(">BBI")
PDV_HEADER = struct.Struct(">IBB")  # item length, presentation context ID, message control header
MAX_ASSOCIATE_RQ = 256 * 1024  # 200 contexts with every syntax and a SAML identity fit many times

# A-ABORT provider reasons (PS3.8 Table 9-26)
REASON_NOT_SPECIFIED = 0x00
UNRECOGNIZED_PDU = 0x01
UNEXPECTED_PDU = 0x02
UNRECOGNIZED_PARAMETER = 0x04
UNEXPECTED_PARAMETER = 0x05
INVALID_PARAMETER = 0x06

RELEASE_RP_BYTES = HEADER.pack(RELEASE_RP, 0, 4) + b"\x00" * 4


class ProtocolError(ValueError):
    """The peer broke the upper-layer protocol; ``reason`` is the A-ABORT provider reason."""

    def __init__(self, message: str, reason: int = INVALID_PARAMETER) -> None:
        super().__init__(message)
        self.reason = reason


def decode_associate_rq(pdu: bytes) -> A_ASSOCIATE:
    """The A-ASSOCIATE primitive of a whole A-ASSOCIATE-RQ PDU (header included)."""
    try:
        rq = A_ASSOCIATE_RQ()
        rq.decode(pdu)
        primitive = rq.to_primitive()
    except Exception as exc:  # noqa: BLE001 - pynetdicom raises many kinds on hostile bytes
        raise ProtocolError(f"undecodable A-ASSOCIATE-RQ: {type(exc).__name__}", INVALID_PARAMETER) from None
    if not primitive.presentation_context_definition_list:
        raise ProtocolError("A-ASSOCIATE-RQ without presentation contexts", INVALID_PARAMETER)
    return primitive


def encode_associate_ac(primitive: A_ASSOCIATE) -> bytes:
    return bytes(A_ASSOCIATE_AC(primitive).encode())


def encode_associate_rj(result: int, source: int, diagnostic: int) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.result = result
    primitive.result_source = source
    primitive.diagnostic = diagnostic
    return bytes(A_ASSOCIATE_RJ(primitive).encode())


def encode_abort(reason: int | None) -> bytes:
    """A-ABORT from the service provider with ``reason``, or from the service user (None)."""
    primitive: A_ABORT | A_P_ABORT
    if reason is None:
        primitive = A_ABORT()
        primitive.abort_source = 0x00
    else:
        primitive = A_P_ABORT()
        primitive.provider_reason = reason
    return bytes(A_ABORT_RQ(primitive).encode())


def encode_p_data(context_id: int, message: bytes, *, command: bool, max_pdu: int) -> bytes:
    """``message`` (a command set or a data set) as P-DATA-TF PDUs of at most ``max_pdu`` bytes
    of PDV items each (0 = unlimited), one fragment per PDU, the last one flagged."""
    room = (max_pdu - 6) if max_pdu else len(message) or 1  # an item's own header is 6 bytes
    room = max(room, 1)
    out = []
    flag = 0x01 if command else 0x00
    for start in range(0, max(len(message), 1), room):
        fragment = message[start:start + room]
        last = start + room >= len(message)
        header = flag | (0x02 if last else 0x00)
        out.append(HEADER.pack(P_DATA_TF, 0, len(fragment) + 6))
        out.append(PDV_HEADER.pack(len(fragment) + 2, context_id, header))
        out.append(fragment)
    return b"".join(out)


def iter_pdvs(body: bytes | memoryview) -> Iterator[tuple[int, int, memoryview]]:
    """(context ID, message control header, fragment) of each PDV item in a P-DATA-TF body."""
    view = memoryview(body)
    offset, end = 0, len(view)
    if end == 0:
        raise ProtocolError("P-DATA-TF without presentation data values", INVALID_PARAMETER)
    while offset < end:
        if end - offset < 6:
            raise ProtocolError("P-DATA-TF ends inside a PDV item header", INVALID_PARAMETER)
        length, context_id, control = PDV_HEADER.unpack_from(view, offset)
        if length < 2 or length > end - offset - 4:
            raise ProtocolError(f"PDV item length {length} does not fit its P-DATA-TF", INVALID_PARAMETER)
        yield context_id, control, view[offset + 6: offset + 4 + length]
        offset += 4 + length
