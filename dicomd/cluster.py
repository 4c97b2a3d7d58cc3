"""This process as a node of the cluster: its row in the catalog, its heartbeat, the work it claims.

Several `dicomd serve` processes (on one machine or many) share one catalog and one data
directory. Work that must happen once cluster-wide (building an idle session, archiving it, moving
or deleting it, finishing what a dead node left, the start-up scan of the whole data directory) is
claimed first with :meth:`Node.claim`: one conditional upsert in the catalog that succeeds for one
node only. A node heartbeats its row every ``cluster.heartbeat_seconds``; one silent for
``cluster.claim_expiry_seconds`` has expired and its claims may be taken over. On the same machine
(same kernel boot and PID namespace) a node whose process is gone has expired at once, so a single
node restarted after a crash recovers straight away, as it always did.

Claims are re-entrant on the thread that holds them (an archive inside a build's claim) and
exclude the node's other threads. A CLI command registers as a node (role ``cli``) only when it
first claims something, and heartbeats while it runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from dicomd import __version__
from dicomd.catalog import Catalog, ClaimRow, NodeRow
from dicomd.config import ClusterConfig
from dicomd.errors import DicomdError, InvalidState

logger = logging.getLogger(__name__)

SESSION = "session"  # a prearchive session's build, archive job, move, delete, or their recovery
SCAN = "scan"  # the start-up reconciliation of the whole data directory (item "data")


@dataclass(frozen=True)
class NodeState:
    """A node as `dicomd status` shows it."""

    row: NodeRow
    alive: bool
    heartbeat_age: float
    claims: tuple[ClaimRow, ...]

    @property
    def state(self) -> str:
        if self.row.stopped_at is not None:
            return "stopped"
        return "alive" if self.alive else "expired"


def _process_key(pid: int) -> str:
    """``boot/pidns/pid/starttime``: names a process uniquely on this kernel; '' if unknown."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        pidns = os.readlink("/proc/self/ns/pid")
        stat = Path(f"/proc/{pid}/stat").read_text()
        start = stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""
    return f"{boot}/{pidns}/{pid}/{start}"


def gone_locally(process: str, mine: str) -> bool:
    """True when ``process`` (a _process_key) ran on this kernel and PID namespace and has ended."""
    if not process or not mine:
        return False
    boot, pidns, pid, _start = process.split("/", 3)
    my_boot, my_pidns, _pid, _start2 = mine.split("/", 3)
    if (boot, pidns) != (my_boot, my_pidns):
        return False
    return _process_key(int(pid)) != process


class Node:
    """This process's node: thread-safe; one per Stores."""

    def __init__(self, catalog: Catalog, config: ClusterConfig, *, role: str = "daemon") -> None:
        self.catalog = catalog
        self.config = config
        self.role = role
        self.host = socket.gethostname()
        self.id = f"{self.host}-{os.getpid()}-{secrets.token_hex(3)}"
        self.process = _process_key(os.getpid())
        self.dicom_ports: Sequence[int] = ()
        self.http_port: int | None = None
        self._held: dict[tuple[str, str], tuple[int, int]] = {}  # claim -> (thread, depth)
        self._lock = threading.Lock()
        self._registered = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_beat = 0.0

    # ------------------------------------------------------------------ life

    def start(self, dicom_ports: Sequence[int] = (), http_port: int | None = None) -> "Node":
        """Register (or update) this node's row and start heartbeating."""
        self.dicom_ports, self.http_port = tuple(dicom_ports), http_port
        now = time.time()
        self.catalog.register_node(NodeRow(
            id=self.id, host=self.host, pid=os.getpid(), process=self.process, role=self.role,
            dicom_ports=",".join(str(p) for p in self.dicom_ports), http_port=http_port, version=__version__,
            started_at=now, heartbeat_at=now, stopped_at=None,
        ))
        self._last_beat = now
        if not self._registered:
            self._registered = True
            self._thread = threading.Thread(target=self._beat_loop, name="node-heartbeat", daemon=True)
            self._thread.start()
            logger.info("node %s joined the cluster (%d other live node(s))", self.id, len(self.others_alive()))
        return self

    def stop(self) -> None:
        """Leave: release every claim and mark the row stopped (a crash leaves it to expire)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._registered:
            self._registered = False
            try:
                self.catalog.stop_node(self.id, time.time())
            except DicomdError as exc:
                logger.warning("node %s could not record its stop: %s", self.id, exc)

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.config.heartbeat_seconds):
            try:
                self.beat()
            except DicomdError as exc:  # the catalog is unreachable: tried again next time
                logger.warning("node %s: heartbeat failed: %s", self.id, exc)
            except Exception:  # the heartbeat's one catch-all: a failed beat is retried next time
                logger.exception("node %s: heartbeat failed", self.id)

    def beat(self) -> None:
        now = time.time()
        if now - self._last_beat > self.config.claim_expiry_seconds:
            logger.error("node %s missed its heartbeats for %.0f s: other nodes may have taken its claims",
                         self.id, now - self._last_beat)
        if not self.catalog.heartbeat(self.id, now):
            self.start(self.dicom_ports, self.http_port)  # our row was forgotten: register again
        self._last_beat = now
        self.catalog.forget_nodes(now - max(86400.0, 10 * self.config.claim_expiry_seconds))

    # ------------------------------------------------------------------ who is alive

    def expired(self, rows: Sequence[NodeRow] | None = None, now: float | None = None) -> list[str]:
        """Ids of the other nodes that have expired (silent, stopped, or their process gone here)."""
        now = time.time() if now is None else now
        rows = self.catalog.nodes() if rows is None else rows
        return [row.id for row in rows if row.id != self.id and not self._alive(row, now)]

    def _alive(self, row: NodeRow, now: float) -> bool:
        if row.id == self.id:
            return True
        if row.stopped_at is not None or row.heartbeat_at < now - self.config.claim_expiry_seconds:
            return False
        return not gone_locally(row.process, self.process)

    def others_alive(self) -> list[str]:
        now = time.time()
        return [row.id for row in self.catalog.nodes() if row.id != self.id and self._alive(row, now)]

    def states(self) -> list[NodeState]:
        now = time.time()
        claims = self.catalog.claims()
        return [NodeState(row, self._alive(row, now), max(0.0, now - row.heartbeat_at),
                          tuple(c for c in claims if c.node == row.id))
                for row in self.catalog.nodes()]

    # ------------------------------------------------------------------ claims

    def claim(self, kind: str, item: str | int) -> bool:
        """Take a unit of work for this thread; False when another live node (or another thread of
        this node) holds it. Re-entrant: each successful claim needs one release."""
        key, me = (kind, str(item)), threading.get_ident()
        with self._lock:
            held = self._held.get(key)
            if held is not None:
                if held[0] != me:
                    return False
                self._held[key] = (me, held[1] + 1)
                return True
            self._held[key] = (me, 1)  # reserved for this thread while the catalog answers
        try:
            if not self._registered:
                self.start()
            now = time.time()
            holder = self.catalog.claim(kind, key[1], self.id, now=now,
                                        live_since=now - self.config.claim_expiry_seconds, dead=self.expired(now=now))
        except BaseException:
            with self._lock:
                self._held.pop(key, None)
            raise
        if holder != self.id:
            with self._lock:
                self._held.pop(key, None)
            logger.debug("%s %s is held by node %s", kind, key[1], holder)
            return False
        return True

    def release(self, kind: str, item: str | int) -> None:
        key = (kind, str(item))
        with self._lock:
            held = self._held.get(key)
            if held is None:
                return
            if held[1] > 1:
                self._held[key] = (held[0], held[1] - 1)
                return
            del self._held[key]
        try:
            self.catalog.release(kind, key[1], self.id)
        except DicomdError as exc:  # it expires with this node, or is taken back by it
            logger.warning("could not release %s %s: %s", kind, key[1], exc)

    @contextlib.contextmanager
    def holding(self, kind: str, item: str | int) -> Iterator[None]:
        """Hold the claim for the block; InvalidState when someone else holds it."""
        if not self.claim(kind, item):
            holder = self.catalog.holder(kind, str(item))
            raise InvalidState(f"{kind} {item} is being worked on by node {holder or 'another thread'}; try again later")
        try:
            yield
        finally:
            self.release(kind, item)

    @contextlib.contextmanager
    def trying(self, kind: str, item: str | int) -> Iterator[bool]:
        """Hold the claim for the block if it can be taken; the block gets whether it was."""
        got = self.claim(kind, item)
        try:
            yield got
        finally:
            if got:
                self.release(kind, item)

    def holds(self, kind: str, item: str | int) -> bool:
        """Whether this node holds the claim in the catalog (another may have taken it over)."""
        return self.catalog.holder(kind, str(item)) == self.id
