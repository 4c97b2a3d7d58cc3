"""Receiver processes that share a port (``receiver_processes > 1``, asyncio engine) even out
their associations: a process hands a new connection to the sibling serving fewer
(dicomd.engine.balance), and a hand-over that is not a TCP connection of the daemon's user is
dropped without harm."""

from __future__ import annotations

import array
import os
import socket
from pathlib import Path
from typing import Callable

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomd.daemon import Daemon
from tests.conftest import wait_for, write_config


def _served_by(pids: list[int], port: int) -> dict[int, int]:
    """How many established TCP connections to ``port`` each process holds (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(f"socket:[{fields[9]}]")
    counts = {}
    for pid in pids:
        links = []
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                links.append(str(fd.readlink()))
            except OSError:
                pass
        counts[pid] = sum(1 for link in links if link in inodes)
    return counts


def test_associations_are_spread_evenly_over_the_processes(make_daemon: Callable[..., Daemon],
                                                           tmp_path: Path) -> None:
    """The kernel spreads a shared port's connections by a hash; the asyncio engine hands a new
    connection to the sibling process that serves fewer, so 8 associations are served 4 + 4."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("min_free_bytes = 0", "min_free_bytes = 0\nreceiver_processes = 2"))
    daemon = make_daemon(path)
    port = daemon.dicom_port()
    pids = [os.getpid(), *daemon.workers.pids()]  # the daemon runs in this test process
    # a local process that passes something other than a TCP connection is refused, harmlessly
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    channel.connect(f"\0dicomd-receiver-{pids[1]}-{port}")
    one, other = socket.socketpair()
    channel.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [one.fileno()]))])
    channel.close()
    ae = AE(ae_title="SPREAD")
    ae.add_requested_context(Verification)
    try:
        for _round in range(3):  # by the kernel's hash alone, 8 land 4 + 4 about a quarter of the time
            assocs = []
            try:
                for _ in range(8):
                    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMD")
                    assert assoc.is_established
                    assocs.append(assoc)
                counts = wait_for(lambda: (c := _served_by(pids, port)) and sum(c.values()) == 8 and c,
                                  message="not every association is served")
                assert sorted(counts.values()) == [4, 4], counts
                assert all(a.send_c_echo().Status == 0 for a in assocs)
            finally:
                for assoc in assocs:
                    assoc.release()
            wait_for(lambda: sum(_served_by(pids, port).values()) == 0, message="associations not closed")
    finally:
        one.close()
        other.close()
