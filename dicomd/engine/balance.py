"""Even out associations between the receiver processes that share a port.

With ``receiver_processes > 1`` every process listens on the same port (SO_REUSEPORT) and the
kernel picks the listener of each new connection by a hash of its addresses, blind to how busy
each process is. Four associations land 2+2 only about a third of the time; 3+1 or 4+0 leave one
process (one interpreter lock, one core) with most of the work. Measured on 2 cores with four
dcmtk senders: about 960 MR instances/s when they landed 2+2 and about 715/s when they landed 3+1.

So a process that accepts a connection while a sibling serves fewer hands it over before reading
a byte of it: the accepted socket is passed (SCM_RIGHTS) to that sibling, which serves it as if it
had accepted it (TLS included: the handshake has not begun). The siblings of a port find each
other in a small table in ``data/tmp`` (one slot per process: its pid and how many connections it
serves); every change to it is made under an exclusive lock on the file, so a hand-over counts
for its target at once. Each process receives hand-overs on an abstract Unix socket named by its
pid and port; both ends check the other's credentials (same user; the target's pid must be the
slot's), and a process only adopts TCP sockets. Whatever fails (a sibling that died, a full
socket buffer) leaves the connection with the process that accepted it, so balancing can cost a
connection nothing. A connection is handed over at most once.
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import socket
import struct
from pathlib import Path

logger = logging.getLogger(__name__)

SLOTS = 64
_SLOT = struct.Struct("<qq")  # pid, connections served
_CREDENTIALS = struct.Struct("iII")  # struct ucred: pid, uid, gid


class Balancer:
    """One process's membership in the balancing group of one port."""

    def __init__(self, folder: Path, port: int) -> None:
        self.port = port
        self.path = folder / f"balance-{port}"
        self.pid = os.getpid()
        self._fd = -1
        self._slot = -1
        self.listener: socket.socket | None = None

    # ------------------------------------------------------------------ joining and leaving

    def join(self) -> bool:
        """Take a slot and open the hand-over socket; False (balancing off for this process) when
        either cannot be had."""
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(_address(self.pid, self.port))
            listener.listen(64)
            listener.setblocking(False)
        except OSError as exc:
            logger.warning("receiver on port %d: cannot balance associations with its siblings: %s",
                           self.port, exc.strerror or exc)
            self.leave()
            return False
        self.listener = listener
        with self._locked():
            table = self._read()
            free = [i for i, (pid, _load) in enumerate(table) if pid == 0 or not _alive(pid)]
            if not free:
                self.leave()
                return False
            self._slot = free[0]
            self._write(self._slot, self.pid, 0)
        return True

    def leave(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self._fd >= 0:
            if self._slot >= 0:
                try:
                    with self._locked():
                        self._write(self._slot, 0, 0)
                except OSError:
                    pass
            os.close(self._fd)
            self._fd = -1
        self._slot = -1

    # ------------------------------------------------------------------ connections

    def place(self, conn: socket.socket) -> bool:
        """Decide who serves a connection this process just accepted: True when a sibling now
        has it (the caller closes its copy), False when this process keeps it (counted)."""
        with self._locked():
            table = self._read()
            mine = table[self._slot][1]
            siblings = [(load, i) for i, (pid, load) in enumerate(table) if pid and i != self._slot]
            target = min(siblings, default=None)
            if target is None or target[0] >= mine:
                self._write(self._slot, self.pid, mine + 1)
                return False
            target_pid = table[target[1]][0]
            self._write(target[1], target_pid, target[0] + 1)  # counted for its target at once
        if _hand_over(conn, target_pid, self.port):
            return True
        with self._locked():  # not taken: undo (a sibling that is gone loses its slot); keep it here
            table = self._read()
            pid, load = table[target[1]]
            if pid == target_pid:
                alive = _alive(pid)
                self._write(target[1], pid if alive else 0, max(0, load - 1) if alive else 0)
            self._write(self._slot, self.pid, table[self._slot][1] + 1)
        return False

    def ended(self) -> None:
        """A connection this process served (its own or handed over) has ended."""
        if self._slot < 0:
            return
        with self._locked():
            load = self._read()[self._slot][1]
            self._write(self._slot, self.pid, max(0, load - 1))

    def receive(self) -> list[socket.socket]:
        """The TCP sockets siblings have handed over since the last call (already counted)."""
        adopted: list[socket.socket] = []
        if self.listener is None:
            return adopted
        while True:
            try:
                channel, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return adopted
            except OSError as exc:
                logger.debug("hand-over socket: %s", exc)
                return adopted
            with channel:
                taken = _take(channel)
            if taken:
                adopted.extend(taken)
            else:  # the sibling counted a hand-over that did not arrive whole
                self.ended()

    # ------------------------------------------------------------------ the table

    def _locked(self) -> "_FileLock":
        return _FileLock(self._fd)

    def _read(self) -> list[tuple[int, int]]:
        raw = os.pread(self._fd, _SLOT.size * SLOTS, 0).ljust(_SLOT.size * SLOTS, b"\0")
        return [_SLOT.unpack_from(raw, i * _SLOT.size) for i in range(SLOTS)]

    def _write(self, slot: int, pid: int, load: int) -> None:
        os.pwrite(self._fd, _SLOT.pack(pid, load), slot * _SLOT.size)


class _FileLock:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *_: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


def _address(pid: int, port: int) -> str:
    return f"\0dicomd-receiver-{pid}-{port}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _credentials(sock: socket.socket) -> tuple[int, int]:
    pid, uid, _gid = _CREDENTIALS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size))
    return pid, uid


def _hand_over(conn: socket.socket, target_pid: int, port: int) -> bool:
    """Pass ``conn`` to the sibling ``target_pid``; True once it holds it."""
    channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        channel.settimeout(0.5)
        channel.connect(_address(target_pid, port))
        pid, uid = _credentials(channel)
        if pid != target_pid or uid != os.getuid():
            logger.warning("hand-over socket of process %d is held by process %d (uid %d): not used",
                           target_pid, pid, uid)
            return False
        channel.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [conn.fileno()]))])
        return True
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            logger.debug("could not hand a connection to process %d: %s", target_pid, exc)
        return False
    finally:
        channel.close()


def _take(channel: socket.socket) -> list[socket.socket]:
    """The TCP sockets a sibling sent over ``channel`` (anything else is closed and dropped)."""
    try:
        _pid, uid = _credentials(channel)
        channel.settimeout(0.5)
        _data, ancillary, _flags, _addr = channel.recvmsg(1, socket.CMSG_SPACE(4 * 4))
    except OSError as exc:
        logger.debug("hand-over not received: %s", exc)
        return []
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            fds.extend(array.array("i", data[:usable]))
    taken: list[socket.socket] = []
    for fd in fds[1:]:  # one socket per hand-over: anything more is not ours to serve
        os.close(fd)
    for fd in fds[:1]:
        sock = socket.socket(fileno=fd)
        if uid != os.getuid() or sock.family not in (socket.AF_INET, socket.AF_INET6) \
                or sock.type != socket.SOCK_STREAM:
            logger.warning("dropped a hand-over that is not a TCP connection of this user")
            sock.close()
            continue
        sock.setblocking(False)
        taken.append(sock)
    return taken

