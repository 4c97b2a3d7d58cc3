"""A pynetdicom C-STORE sender process used when dcmtk's storescu is missing.

``python -m bench.scu --port N --aet AE FILE...``: prints ``ready``, waits for a line on stdin,
then sends every file on one association and prints one JSON line with monotonic start/end
times (CLOCK_MONOTONIC is shared by all processes) and the count of Success statuses."""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
import time

from pydicom import dcmread
from pynetdicom import AE, _config

_config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are, no decode

logger = logging.getLogger(__name__)


def _contexts(files: list[str]) -> set[tuple[str, str]]:
    found = set()
    for path in files:
        meta = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"]).file_meta
        found.add((str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)))
    return found


def send(port: int, aet: str, files: list[str], contexts: set[tuple[str, str]]) -> dict[str, float | int]:
    ae = AE(ae_title="BENCHSCU")
    for sop_class, syntax in sorted(contexts):
        ae.add_requested_context(sop_class, syntax)
    ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = 300
    ok = failed = 0
    t0 = time.monotonic()
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        return {"t0": t0, "t1": time.monotonic(), "ok": 0, "failed": len(files), "refused": 1}
    # Like TCP_NODELAY=1 for dcmtk: without it Nagle holds the data PDU behind the command PDU
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for path in files:
        status = assoc.send_c_store(path)
        if status and status.Status == 0x0000:
            ok += 1
        else:
            failed += 1
    t1 = time.monotonic()
    assoc.release()
    return {"t0": t0, "t1": t1, "ok": ok, "failed": failed, "refused": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--aet", default="ANY-SCP")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    contexts = _contexts(args.files)
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(send(args.port, args.aet, args.files, contexts)), flush=True)


if __name__ == "__main__":
    main()
