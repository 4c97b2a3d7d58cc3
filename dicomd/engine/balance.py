"""Even out associations between the receiver processes that share a port.

With ``receiver_processes > 1`` every process listens on the same port (SO_REUSEPORT) and the
kernel picks the listener of each new connection by a hash of its addresses, blind to how busy
each process is. Four associations land 2+2 only about a third of the time; 3+1 or 4+0 leave one
process (one interpreter lock, one core) with most of the work. Measured on 2 cores with four
dcmtk senders: about 960 MR instances/s when they landed 2+2 and about 715/s when they landed 3+1.

So a process that accepts a connection while a sibling serves fewer hands it over before reading
a byte of it: the accepted socket is passed (SCM_RIGHTS) to that sibling, which serves it as if it
had accepted it (TLS included: the handshake has not begun).

- The table: one small file per data directory and port on this machine (in /dev/shm, else the
  temporary folder; owner-only, refused when another user owns it), one slot per process: its
  pid and how many connections it serves. Every change is made under an exclusive lock on the
  file. Each process writes its own true count whenever it changes; a process that hands a
  connection over adds one to its target's count at once, so a burst of connections is spread
  before the target has adopted them, and the target's next write corrects any guess.
- The hand-over: each process listens on an abstract Unix socket named by its pid and port. The
  sender checks that the listener is the slot's pid and of its own user; the receiver closes,
  unread, a connection from another user (the kernel then drops any descriptor in it), waits on
  the event loop (never blocking it, at most HAND_OVER_WAIT seconds, at most MAX_WAITING channels)
  for the descriptor of a channel accepted before its sender wrote, closes anything that is not
  one TCP socket, and never lowers a count on a peer's say-so.
- Failures: a hand-over that cannot be made (the sibling is gone, its backlog is full, the table
  cannot be read) leaves the connection with the process that accepted it, so balancing can cost
  a connection nothing. A sibling that is gone loses its slot. Once a hand-over is sent the sender
  closes its copy: if the target dies before adopting it, the peer sees the connection close
  before any association (nothing of it was acknowledged) and connects again.
"""

from __future__ import annotations

import array
import errno
import fcntl
import hashlib
import logging
import os
import socket
import asyncio
import stat
import struct
import tempfile
from pathlib import Path
from typing import Callable

logger = logging.getLogger(__name__)

SLOTS = 64
_SLOT = struct.Struct("<qq")  # pid, connections served
_CREDENTIALS = struct.Struct("iII")  # struct ucred: pid, uid, gid
_SHARED_MEMORY = Path("/dev/shm")
HAND_OVER_WAIT = 5.0  # seconds a hand-over channel may take to deliver its socket
MAX_WAITING = 64  # hand-over channels waited on at once (the oldest is dropped for a new one)


def table_path(data_dir: Path, port: int) -> Path:
    """The table of the receiver processes of ``data_dir`` on ``port``, on this machine."""
    key = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    folder = _SHARED_MEMORY if _SHARED_MEMORY.is_dir() else Path(tempfile.gettempdir())
    return folder / f"dicomd-balance-{os.getuid()}-{key}-{port}"


class Balancer:
    """One process's membership in the balancing group of one port."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.port = port
        self.path = table_path(data_dir, port)
        self.pid = os.getpid()
        self._fd = -1
        self._slot = -1
        self.listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._adopt: Callable[[socket.socket], None] | None = None
        self._waiting: dict[socket.socket, asyncio.TimerHandle] = {}  # channels accepted, not yet read

    # ------------------------------------------------------------------ joining and leaving

    def join(self) -> bool:
        """Take a slot and open the hand-over socket; False (balancing off for this process) when
        either cannot be had."""
        try:
            self._open_table()
            with self._locked():  # the last process out may have removed the file: use the one there now
                if os.stat(self.path).st_ino != os.fstat(self._fd).st_ino:
                    os.close(self._fd)
                    self._fd = -1
                    self._open_table()
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
            listener.bind(_address(self.pid, self.port))
            listener.listen(64)
            self.listener = listener
            with self._locked():
                table = self._read()
                mine = [i for i, (pid, _load) in enumerate(table) if pid == self.pid]
                free = mine or [i for i, (pid, _load) in enumerate(table) if pid == 0 or not _alive(pid)]
                if not free:
                    raise OSError(errno.ENOSPC, f"all {SLOTS} slots are taken")
                self._slot = free[0]
                self._write(self._slot, self.pid, 0)
        except OSError as exc:
            logger.warning("receiver on port %d: cannot balance associations with its sibling processes: %s",
                           self.port, exc.strerror or exc)
            self.leave()
            return False
        return True

    def _open_table(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        info = os.fstat(fd)
        if info.st_uid != os.getuid() or not stat.S_ISREG(info.st_mode) or info.st_mode & 0o077:
            os.close(fd)
            raise OSError(errno.EPERM, f"{self.path} is not this user's own file")
        self._fd = fd

    def leave(self) -> None:
        """Give up the slot (no more hand-overs come here) and close the hand-over socket."""
        if self._fd >= 0:
            try:
                if self._slot >= 0:
                    with self._locked():
                        self._write(self._slot, 0, 0)
                        if not any(pid for pid, _load in self._read()):
                            self.path.unlink(missing_ok=True)  # the last one out (a joiner re-checks the inode)
            except OSError as exc:
                logger.debug("balance table: %s", exc)
            os.close(self._fd)
            self._fd = -1
        self._slot = -1
        if self.listener is not None:
            self.listener.close()
            self.listener = None

    # ------------------------------------------------------------------ connections

    def place(self, conn: socket.socket, serving: int) -> bool:
        """Decide who serves a connection this process just accepted while it serves ``serving``:
        True when a sibling now has it (the caller closes its copy), False when it stays here."""
        try:
            with self._locked():
                table = self._read()
                siblings = [(load, i) for i, (pid, load) in enumerate(table) if pid and i != self._slot]
                target = min(siblings, default=None)
                if target is None or target[0] >= serving:
                    return False
                load, slot = target
                target_pid = table[slot][0]
                self._write(slot, target_pid, load + 1)  # counted for its target at once
            if _hand_over(conn, target_pid, self.port):
                return True
            with self._locked():  # not taken: undo; a sibling that is not listening loses its slot
                pid, load = self._read()[slot]
                if pid == target_pid:
                    listening = _alive(pid) and _listening(pid, self.port)
                    self._write(slot, pid if listening else 0, max(0, load - 1) if listening else 0)
        except OSError as exc:
            logger.debug("balance table: %s; the connection stays here", exc)
        return False

    def publish(self, serving: int) -> None:
        """This process now serves ``serving`` connections (its own and handed-over ones)."""
        if self._slot < 0:
            return
        try:
            with self._locked():
                self._write(self._slot, self.pid, serving)
        except OSError as exc:
            logger.debug("balance table: %s", exc)

    def attach(self, loop: asyncio.AbstractEventLoop, adopt: Callable[[socket.socket], None]) -> None:
        """Receive hand-overs on ``loop`` (its thread only); ``adopt`` serves each TCP socket."""
        if self.listener is None:
            return
        self._loop, self._adopt = loop, adopt
        loop.add_reader(self.listener.fileno(), self._accept_channels)

    def detach(self) -> None:
        """Stop receiving hand-overs (on the loop's thread); channels still waited on are closed."""
        loop = self._loop
        if loop is None:
            return
        if self.listener is not None:
            loop.remove_reader(self.listener.fileno())
        for channel in list(self._waiting):
            self._drop(channel)  # removes its reader from the loop before closing it
        self._loop = None

    def _accept_channels(self) -> None:
        for _ in range(64):
            if self.listener is None:
                return
            try:
                channel, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                logger.debug("hand-over socket: %s", exc)
                return
            channel.setblocking(False)
            try:
                _pid, uid = _credentials(channel)
            except OSError:
                uid = -1
            if uid != os.getuid():
                logger.warning("refused a hand-over from uid %d", uid)
                channel.close()  # unread: the kernel drops whatever it carried
                continue
            self._read_channel(channel)

    def _read_channel(self, channel: socket.socket) -> None:
        """Take the socket ``channel`` carries, or wait (on the loop) until it arrives."""
        try:
            sockets = _take(channel)
        except BlockingIOError:  # accepted before its sender wrote: wait for it
            if channel not in self._waiting:
                self._wait_for(channel)
            return
        self._drop(channel)
        if self._adopt is not None:
            for sock in sockets:
                self._adopt(sock)

    def _wait_for(self, channel: socket.socket) -> None:
        loop = self._loop
        assert loop is not None
        if len(self._waiting) >= MAX_WAITING:
            self._drop(next(iter(self._waiting)))
        self._waiting[channel] = loop.call_later(HAND_OVER_WAIT, self._drop, channel)
        loop.add_reader(channel.fileno(), self._read_channel, channel)

    def _drop(self, channel: socket.socket) -> None:
        timer = self._waiting.pop(channel, None)
        if timer is not None:
            timer.cancel()
            if self._loop is not None:
                self._loop.remove_reader(channel.fileno())
        channel.close()

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


def _listening(pid: int, port: int) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        probe.connect(_address(pid, port))
    except (BlockingIOError, InterruptedError):
        return True  # a full backlog: someone listens
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _credentials(sock: socket.socket) -> tuple[int, int]:
    pid, uid, _gid = _CREDENTIALS.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size))
    return pid, uid


def _hand_over(conn: socket.socket, target_pid: int, port: int) -> bool:
    """Pass ``conn`` to the sibling ``target_pid`` without waiting; True once it was sent."""
    try:
        channel = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    except OSError as exc:
        logger.debug("no socket for a hand-over: %s", exc)
        return False
    try:
        channel.connect(_address(target_pid, port))
        pid, uid = _credentials(channel)
        if pid != target_pid or uid != os.getuid():
            logger.warning("the hand-over socket of receiver process %d is held by process %d (uid %d): not used",
                           target_pid, pid, uid)
            return False
        channel.sendmsg([b"c"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [conn.fileno()]))])
        return True
    except OSError as exc:  # gone (ECONNREFUSED), backlog or buffer full (EAGAIN), ...
        logger.debug("could not hand a connection to process %d: %s", target_pid, exc)
        return False
    finally:
        channel.close()


def _take(channel: socket.socket) -> list[socket.socket]:
    """The TCP socket a sibling sent over ``channel`` (BlockingIOError: nothing there yet)."""
    try:
        _data, ancillary, _flags, _addr = channel.recvmsg(
            1, socket.CMSG_SPACE(4 * 4), socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
    except BlockingIOError:
        raise
    except OSError as exc:
        logger.debug("hand-over not received: %s", exc)
        return []
    fds: list[int] = []
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", data[:len(data) - len(data) % 4]))
    taken: list[socket.socket] = []
    for n, fd in enumerate(fds):
        try:
            sock = socket.socket(fileno=fd)
        except OSError:  # not a socket
            os.close(fd)
            continue
        if n or sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            logger.warning("dropped a hand-over that is not one TCP connection")
            sock.close()
            continue
        sock.setblocking(False)
        taken.append(sock)
    return taken
