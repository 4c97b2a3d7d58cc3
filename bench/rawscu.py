"""A minimal single-threaded C-STORE sender on a plain socket (DICOM PS3.8 upper layer).

The fallback sender when dcmtk's storescu is missing: pynetdicom's SCU hands every PDU between
threads that poll with 1 ms sleeps, so it sends only ~100-150 instances/s per association and
would be the bottleneck. This one sends each file's data set bytes as they are on disk (after the
File Meta Information) on one association, proposing exactly the (SOP class, transfer syntax) pairs
the files have, with TCP_NODELAY.

``python -m bench.rawscu --port N --aet AE FILE...`` speaks the same protocol as bench.scu: prints
``ready``, waits for a line on stdin, sends, prints one JSON line (monotonic t0/t1, ok, failed)."""

from __future__ import annotations

import argparse
import json
import logging
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
IMPLEMENTATION_UID = b"2.25.276497402513453622330932916186442519611"
OUR_MAX_PDU = 1 << 20


@dataclass(frozen=True)
class Instance:
    sop_class: str
    sop_instance: str
    syntax: str
    path: Path
    offset: int  # where the data set starts (after the File Meta Information)


def _uid(raw: bytes) -> str:
    return raw.rstrip(b"\x00 ").decode("ascii")


def read_meta(path: Path) -> Instance:
    """The few File Meta Information values a C-STORE needs, and where the data set starts."""
    with path.open("rb") as fh:
        head = fh.read(132 + 12)
        if head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
            raise ValueError(f"{path}: not a Part-10 file with a group length")
        meta_len = struct.unpack("<I", head[140:144])[0]
        meta = fh.read(meta_len)
    values, pos = {}, 0
    while pos + 8 <= len(meta):
        group, elem = struct.unpack("<HH", meta[pos:pos + 4])
        vr = meta[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN"):
            length = struct.unpack("<I", meta[pos + 8:pos + 12])[0]
            start = pos + 12
        else:
            length = struct.unpack("<H", meta[pos + 6:pos + 8])[0]
            start = pos + 8
        values[(group, elem)] = meta[start:start + length]
        pos = start + length
    return Instance(_uid(values[(2, 2)]), _uid(values[(2, 3)]), _uid(values[(2, 0x10)]), path,
                    132 + 12 + meta_len)


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def _pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBI", kind, 0, len(body)) + body


def _even(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def associate_rq(calling: str, called: str, contexts: list[tuple[str, str]]) -> bytes:
    body = struct.pack(">HH", 1, 0) + called.encode().ljust(16) + calling.encode().ljust(16) + bytes(32)
    body += _item(0x10, APPLICATION_CONTEXT)
    for n, (sop_class, syntax) in enumerate(contexts):
        sub = _item(0x30, sop_class.encode()) + _item(0x40, syntax.encode())
        body += _item(0x20, struct.pack(">BBBB", 2 * n + 1, 0, 0, 0) + sub)
    user = _item(0x51, struct.pack(">I", OUR_MAX_PDU)) + _item(0x52, IMPLEMENTATION_UID)
    return _pdu(0x01, body + _item(0x50, user))


def _element(group: int, elem: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, elem, len(value)) + value


def store_command(message_id: int, inst: Instance) -> bytes:
    """A C-STORE-RQ command set, implicit VR little endian, with its group length."""
    body = (_element(0, 0x0002, _even(inst.sop_class)) + _element(0, 0x0100, struct.pack("<H", 0x0001))
            + _element(0, 0x0110, struct.pack("<H", message_id & 0xFFFF))
            + _element(0, 0x0700, struct.pack("<H", 0)) + _element(0, 0x0800, struct.pack("<H", 0x0000))
            + _element(0, 0x1000, _even(inst.sop_instance)))
    return _element(0, 0x0000, struct.pack("<I", len(body))) + body


def _status(command: bytes) -> int | None:
    pos = 0
    while pos + 8 <= len(command):
        group, elem, length = struct.unpack("<HHI", command[pos:pos + 8])
        if (group, elem) == (0, 0x0900):
            return int(struct.unpack("<H", command[pos + 8:pos + 10])[0])
        pos += 8 + length
    return None


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=300)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("peer closed the connection")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_pdu(self) -> tuple[int, bytes]:
        kind, _, length = struct.unpack(">BBI", self._read(6))
        return kind, self._read(length)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


def accepted(body: bytes) -> tuple[dict[int, bool], int]:
    """From an A-ASSOCIATE-AC body: context id -> accepted, and the peer's max PDU (0 = no limit)."""
    result, max_pdu, pos = {}, 0, 68
    while pos + 4 <= len(body):
        kind, _, length = struct.unpack(">BBH", body[pos:pos + 4])
        item = body[pos + 4:pos + 4 + length]
        if kind == 0x21:
            result[item[0]] = item[2] == 0
        elif kind == 0x50:
            sub = 0
            while sub + 4 <= len(item):
                sk, _, sl = struct.unpack(">BBH", item[sub:sub + 4])
                if sk == 0x51:
                    max_pdu = struct.unpack(">I", item[sub + 4:sub + 8])[0]
                sub += 4 + sl
        pos += 4 + length
    return result, max_pdu


def _send_pdvs(conn: Connection, context_id: int, payload: bytes, command: bool, max_pdu: int) -> None:
    room = (max_pdu or OUR_MAX_PDU) - 6
    flags = 0x01 if command else 0x00
    for start in range(0, max(len(payload), 1), room):
        chunk = payload[start:start + room]
        last = 0x02 if start + room >= len(payload) else 0x00
        pdv = struct.pack(">IBB", len(chunk) + 2, context_id, flags | last) + chunk
        conn.send(_pdu(0x04, pdv))


def _read_response(conn: Connection) -> int | None:
    command = b""
    while True:
        kind, body = conn.read_pdu()
        if kind != 0x04:
            raise ConnectionError(f"expected P-DATA-TF, got PDU type {kind:#x}")
        pos = 0
        while pos < len(body):
            length, _ctx, flags = struct.unpack(">IBB", body[pos:pos + 6])
            command += body[pos + 6:pos + 4 + length]
            pos += 4 + length
            if flags & 0x03 == 0x03:
                return _status(command)


def send(port: int, aet: str, instances: list[Instance]) -> dict[str, float | int]:
    pairs = sorted({(i.sop_class, i.syntax) for i in instances})
    context_of = {pair: 2 * n + 1 for n, pair in enumerate(pairs)}
    t0 = time.monotonic()
    conn = Connection("127.0.0.1", port)
    conn.send(associate_rq("BENCHSCU", aet, pairs))
    kind, body = conn.read_pdu()
    if kind != 0x02:
        return {"t0": t0, "t1": time.monotonic(), "ok": 0, "failed": len(instances), "refused": 1}
    ok_contexts, max_pdu = accepted(body)
    ok = failed = 0
    for n, inst in enumerate(instances, start=1):
        ctx = context_of[(inst.sop_class, inst.syntax)]
        if not ok_contexts.get(ctx):
            failed += 1
            continue
        with inst.path.open("rb") as fh:
            fh.seek(inst.offset)
            data = fh.read()
        _send_pdvs(conn, ctx, store_command(n, inst), True, max_pdu)
        _send_pdvs(conn, ctx, data, False, max_pdu)
        if _read_response(conn) == 0x0000:
            ok += 1
        else:
            failed += 1
    t1 = time.monotonic()
    conn.send(_pdu(0x05, bytes(4)))
    try:
        conn.read_pdu()
    finally:
        conn.sock.close()
    return {"t0": t0, "t1": t1, "ok": ok, "failed": failed, "refused": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--aet", default="ANY-SCP")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args()
    instances = [read_meta(p) for p in args.files]
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(send(args.port, args.aet, instances)), flush=True)


if __name__ == "__main__":
    main()
