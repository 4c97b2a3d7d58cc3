"""The baseline: a bare single-process pynetdicom C-STORE SCP that writes the received bytes.

No parsing, no fsync, no catalog: the ceiling of the library on this machine. With ``--chunked``
pynetdicom streams each dataset to a temporary file (STORE_RECV_CHUNKED_DATASET) that the handler
renames into place, so memory stays flat whatever the instance size.
With ``--processes N`` N processes share the port (SO_REUSEPORT), as dicomd's receiver_processes
do: the ceiling of that design. Run as
``python -m bench.bare_scp --port N --out DIR [--pdu BYTES] [--chunked] [--processes N]``;
stops on SIGTERM (the extra processes are in its process group)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.transport import ThreadedAssociationServer

logger = logging.getLogger(__name__)


class _SharedPort(ThreadedAssociationServer):
    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


def _handler(out: Path, counter: list[int], lock: threading.Lock):
    def on_store(event: evt.Event) -> int:
        with lock:
            counter[0] += 1
            n = counter[0]
        dest = out / f"{os.getpid()}-{n:08d}.dcm"
        if _config.STORE_RECV_CHUNKED_DATASET:
            os.replace(event.dataset_path, dest)  # already a Part-10 file in the temp folder
            return 0x0000
        with dest.open("wb") as fp:
            fp.write(event.encoded_dataset(include_meta=True))
        return 0x0000

    return on_store


def serve(port: int, out: Path, pdu: int, shared: bool, ae_title: str = "BARE") -> None:
    ae = AE(ae_title=ae_title)
    ae.supported_contexts = AllStoragePresentationContexts
    ae.maximum_pdu_size = pdu
    ae.maximum_associations = 32
    ae.network_timeout = ae.dimse_timeout = 120
    handlers = [(evt.EVT_C_STORE, _handler(out, [0], threading.Lock()))]
    server = ae.make_server(("127.0.0.1", port), evt_handlers=handlers,
                            server_class=_SharedPort if shared else ThreadedAssociationServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--pdu", type=int, default=16382)
    parser.add_argument("--chunked", action="store_true", help="stream datasets to temp files")
    parser.add_argument("--processes", type=int, default=1, help="processes sharing the port")
    parser.add_argument("--shared", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _config.STORE_RECV_CHUNKED_DATASET = args.chunked
    args.out.mkdir(parents=True, exist_ok=True)
    for _ in range(args.processes - 1):
        subprocess.Popen([sys.executable, "-m", "bench.bare_scp", "--port", str(args.port), "--out", str(args.out),
                          "--pdu", str(args.pdu), "--shared"] + (["--chunked"] if args.chunked else []))
    serve(args.port, args.out, args.pdu, shared=args.shared or args.processes > 1)


if __name__ == "__main__":
    main()
