"""Receiver processes that share a port (``receiver_processes > 1``, asyncio engine) even out
their associations: a process hands a new connection to the sibling serving fewer
(dicomd.engine.balance), and a hand-over that is not a TCP connection of the daemon's user is
dropped without harm: the table of counts is the processes' own (dicomd.engine.balance)."""

from __future__ import annotations

import array
import os
import socket
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomd.daemon import Daemon
from dicomd.engine.balance import _SLOT, table_path
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


def _table(daemon: Daemon, port: int) -> dict[int, int]:
    """pid -> connections served, as the receiver processes published them."""
    raw = table_path(daemon.config.data_dir, port).read_bytes()
    slots = [_SLOT.unpack_from(raw, i * _SLOT.size) for i in range(len(raw) // _SLOT.size)]
    return {pid: load for pid, load in slots if pid}


def _hand(pid: int, port: int, fd: int) -> None:
    """What a local process could do: pass ``fd`` to a receiver process's hand-over socket."""
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        channel.connect(f"\0dicomd-receiver-{pid}-{port}")
        channel.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))])
    finally:
        channel.close()


def _holds_accepted_channel(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds an accepted (connected) socket of its hand-over address."""
    name = f"@dicomd-receiver-{pid}-{port}"
    connected = {fields[6] for fields in (line.split() for line in Path("/proc/net/unix").read_text().splitlines()[1:])
                 if len(fields) >= 8 and fields[7] == name and fields[5] == "03"}
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = str(fd.readlink())
        except OSError:
            continue
        if link.startswith("socket:["):
            held.add(link[8:-1])
    return bool(connected & held)


def _open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def test_associations_are_spread_evenly_over_the_processes(make_daemon: Callable[..., Daemon],
                                                           tmp_path: Path) -> None:
    """The kernel spreads a shared port's connections by a hash; the asyncio engine hands a new
    connection to the sibling process that serves fewer, so 8 associations are served 4 + 4,
    and the published counts return to zero when they end."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("min_free_bytes = 0", "min_free_bytes = 0\nreceiver_processes = 2"))
    daemon = make_daemon(path)
    port = daemon.dicom_port()
    pids = [os.getpid(), *daemon.workers.pids()]  # the daemon runs in this test process
    assert set(_table(daemon, port)) == set(pids)
    ae = AE(ae_title="SPREAD")
    ae.add_requested_context(Verification)
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
            assert _table(daemon, port) == counts
            assert all(a.send_c_echo().Status == 0 for a in assocs)
        finally:
            for assoc in assocs:
                assoc.release()
        wait_for(lambda: sum(_served_by(pids, port).values()) == 0, message="associations not closed")
        wait_for(lambda: set(_table(daemon, port).values()) == {0}, message="counts did not return to zero")


def test_hand_overs_that_are_not_a_tcp_connection_are_dropped(make_daemon: Callable[..., Daemon],
                                                              tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("min_free_bytes = 0", "min_free_bytes = 0\nreceiver_processes = 2"))
    daemon = make_daemon(path)
    port = daemon.dicom_port()
    worker = daemon.workers.pids()[0]
    before = _open_fds(worker)
    # Given a local process of the same user passing a Unix socket and pipes
    one, other = socket.socketpair()
    read_end, write_end = os.pipe()
    try:
        _hand(worker, port, one.fileno())
        for _ in range(20):
            _hand(worker, port, read_end)
        # and a process of another user passing pipes (root can be another user here)
        if os.geteuid() == 0:
            script = ("import array, os, socket, sys\n"
                      "r, w = os.pipe()\n"
                      "for _ in range(20):\n"
                      "    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
                      "    c.connect('\\0' + sys.argv[1])\n"
                      "    c.sendmsg([b'c'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [r]))])\n"
                      "    c.close()\n")
            subprocess.run([shutil.which("python3", path="/usr/bin:/bin") or sys.executable, "-c", script,
                            f"dicomd-receiver-{worker}-{port}"], check=True, cwd="/",
                           timeout=60, user=65534, group=65534)
        # Then the receiver process holds none of them, counts nothing for them, and still serves
        wait_for(lambda: _open_fds(worker) <= before, message="the receiver process kept handed descriptors")
        assert _table(daemon, port)[worker] == 0
        ae = AE(ae_title="AFTER")
        ae.add_requested_context(Verification)
        assocs = [ae.associate("127.0.0.1", port, ae_title="DICOMD") for _ in range(4)]
        try:
            assert all(a.is_established and a.send_c_echo().Status == 0 for a in assocs)
        finally:
            for assoc in assocs:
                assoc.release()
    finally:
        for fd in (read_end, write_end):
            os.close(fd)
        one.close()
        other.close()


def test_a_hand_over_written_after_its_channel_was_accepted_is_served(make_daemon: Callable[..., Daemon],
                                                                     tmp_path: Path) -> None:
    """The receiving process may accept a hand-over channel before its sender has written the
    socket into it: it waits for it on its event loop instead of dropping the connection."""
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("min_free_bytes = 0", "min_free_bytes = 0\nreceiver_processes = 2"))
    daemon = make_daemon(path)
    port = daemon.dicom_port()
    worker = daemon.workers.pids()[0]
    # Given a TCP connection of a DICOM sender, accepted by us (as by a sibling receiver process)
    listener = socket.create_server(("127.0.0.1", 0))
    ae = AE(ae_title="LATE")
    ae.add_requested_context(Verification)
    result: list[object] = []
    sender = threading.Thread(target=lambda: result.append(
        ae.associate("127.0.0.1", listener.getsockname()[1], ae_title="DICOMD")))
    sender.start()
    conn, _ = listener.accept()
    # When the hand-over channel is accepted by the worker first, and the socket written only then
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    channel.connect(f"\0dicomd-receiver-{worker}-{port}")
    wait_for(lambda: _holds_accepted_channel(worker, port), message="the worker did not keep the channel open")
    channel.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [conn.fileno()]))])
    channel.close()
    conn.close()
    listener.close()
    # Then the worker serves the association
    sender.join(30)
    assoc = result[0]
    try:
        assert assoc.is_established  # type: ignore[attr-defined]
        assert assoc.send_c_echo().Status == 0  # type: ignore[attr-defined]
    finally:
        assoc.release()  # type: ignore[attr-defined]
