"""A raw DICOM peer for protocol tests: builds PDUs with pynetdicom's classes (or by hand, when the
point is to lie) and reads what the receiver answers."""

from __future__ import annotations

import io
import socket
import struct
import time
from dataclasses import dataclass, field

from pydicom.uid import UID
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ, A_ABORT_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
from pynetdicom.presentation import build_context

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
VERIFICATION = "1.2.840.10008.1.1"


def associate_rq(*, called: str = "DICOMD", calling: str = "RAWPEER", contexts: list[tuple[int, str, list[str]]] | None = None,
                 max_pdu: int = 16384, items: list | None = None, app_context: str = "1.2.840.10008.3.1.1.1") -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(app_context)
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    cxs = []
    for cid, abstract, syntaxes in contexts or [(1, CT, [EXPLICIT, IMPLICIT]), (3, VERIFICATION, [IMPLICIT])]:
        cx = build_context(abstract, syntaxes)
        cx.context_id = cid
        cxs.append(cx)
    primitive.presentation_context_definition_list = cxs
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = max_pdu
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = UID("1.2.3.4")
    primitive.user_information = [maximum, implementation, *(items or [])]
    return bytes(A_ASSOCIATE_RQ(primitive).encode())


def store_command(sop_instance: str, *, message_id: int = 1, sop_class: str = CT) -> bytes:
    primitive = C_STORE()
    primitive.MessageID = message_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop_instance
    primitive.Priority = 0
    primitive.DataSet = io.BytesIO(b"\x00")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    out = b""
    for p in message.encode_msg(1, 0):
        for _cx, value in p.presentation_data_value_list:
            if value[0] & 1:
                out += value[1:]
    return out


def pdv(context_id: int, control: int, data: bytes) -> bytes:
    return struct.pack(">IBB", len(data) + 2, context_id, control) + data


def p_data(*pdvs: bytes) -> bytes:
    body = b"".join(pdvs)
    return struct.pack(">BBI", 4, 0, len(body)) + body


RELEASE_RQ = struct.pack(">BBI", 5, 0, 4) + b"\x00" * 4


@dataclass
class Reply:
    kind: int
    body: bytes = b""
    fields: dict = field(default_factory=dict)


class RawPeer:
    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise EOFError
            out += chunk
        return out

    def read(self, timeout: float = 10.0) -> Reply | None:
        """The next PDU, or None when the connection closed (or reset) without one."""
        self.sock.settimeout(timeout)
        try:
            header = self._exact(6)
            kind, _r, length = struct.unpack(">BBI", header)
            body = self._exact(length)
        except (EOFError, ConnectionError):
            return None
        reply = Reply(kind, body)
        if kind == 3:
            rj = A_ASSOCIATE_RJ()
            rj.decode(header + body)
            reply.fields = {"result": rj.result, "source": rj.source, "reason": rj.reason_diagnostic}
        elif kind == 7:
            ab = A_ABORT_RQ()
            ab.decode(header + body)
            reply.fields = {"source": ab.source, "reason": ab.reason_diagnostic}
        elif kind == 2:
            ac = A_ASSOCIATE_AC()
            ac.decode(header + body)
            reply.fields = {"primitive": ac.to_primitive()}
        return reply

    def closed_within(self, timeout: float) -> bool:
        """True when the receiver closes the connection (after any last PDUs) within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                if not self.sock.recv(65536):
                    return True
            except socket.timeout:
                return False
            except ConnectionError:
                return True
        return False

    def establish(self, **kwargs) -> Reply:  # type: ignore[no-untyped-def]
        self.send(associate_rq(**kwargs))
        reply = self.read()
        assert reply is not None and reply.kind == 2, reply
        return reply

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
