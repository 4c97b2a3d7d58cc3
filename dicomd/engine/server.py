"""The asyncio receive engine: one event loop per process, one coroutine per association.

`EngineLoop` owns the process's event loop (uvloop when installed) on one thread, the small pool
of threads that commit received instances through dicomd.ingest, and the group data sync they
share. `AsyncReceiver` is one configured receiver (AE title, port, bind address) on that loop,
with the same start/stop face as dicomd.scp.Receiver; receiver processes share its port with
SO_REUSEPORT exactly as they do for the pynetdicom engine.

Connections are accepted by the receiver itself (not asyncio.start_server) so that, when
receiver processes share the port, each new connection can first be offered to a sibling that
serves fewer (dicomd.engine.balance); the one that keeps it then opens it, TLS included.

Association slots: a connection holds one only once its association is accepted, so peers that
never finish negotiating cannot use up ``max_associations``. They are dropped when ARTIM
(``acse_timeout``) runs out, and when more than MAX_PENDING are negotiating at once the oldest
is dropped to make room for the newest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import ipaddress
import logging
import socket
import ssl
import threading
import time
from typing import Any, Coroutine, TypeVar

from pydicom.uid import UID
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.presentation import build_context

from dicomd.allowlist import Allowlist
from dicomd.config import ReceiverConfig
from dicomd.engine import dimse
from dicomd.engine.association import Association, Peer
from dicomd.engine.balance import Balancer
from dicomd.engine.durable import GroupSync
from dicomd.engine.spool import Spool
from dicomd import storage
from dicomd.errors import ConfigError, DicomdError, ListenFailure
from dicomd.ingest import Ingest, Source, note_refused
from dicomd.logsafe import escape
from dicomd.scp import TRANSFER_SYNTAXES, Listening, store_status
from dicomd.scp import Association as LastAssociation
from dicomd.spool import sweep_spool


logger = logging.getLogger(__name__)
T = TypeVar("T")

SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700
MAX_PENDING = 64  # connections still negotiating, per receiver
STREAM_LIMIT = 1024 * 1024
ACCEPT_BURST = 16  # connections accepted per wake-up of the listening socket
_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
VERIFICATION = "1.2.840.10008.1.1"


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but the engine runs without it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()  # type: ignore[no-any-return]


class EngineLoop:
    """The event loop thread of one process, shared by its asyncio receivers."""

    def __init__(self, *, commit_threads: int = 32) -> None:
        self.loop = new_event_loop()
        self.pool = concurrent.futures.ThreadPoolExecutor(commit_threads, thread_name_prefix="engine-commit")
        self.group_sync = GroupSync()
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30) -> T:
        """Run ``coro`` on the loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.pool.shutdown(wait=True)
        self.loop.close()


def tls_context(config: ReceiverConfig) -> ssl.SSLContext | None:
    """DICOM TLS (PS3.15 B.1) when a certificate is configured; with tls_ca, senders must present
    a certificate that CA signed (as dicomd.scp does for the pynetdicom engine)."""
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
        if config.tls_ca:
            context.load_verify_locations(config.tls_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"receiver {config.ae_title}: cannot load its TLS files: {exc}") from exc
    return context


class AsyncReceiver:
    """One (AE title, port, bind address) receiver on the process's event loop."""

    def __init__(self, index: int, config: ReceiverConfig, ingest: Ingest, engine: EngineLoop) -> None:
        self.index = index
        self.config = config
        self.ingest = ingest
        self.engine = engine
        self.allowlist = Allowlist.parse(config.allowed)
        self.supported_contexts = [build_context(cx.abstract_syntax, TRANSFER_SYNTAXES)
                                   for cx in AllStoragePresentationContexts]
        self.supported_contexts.append(build_context(VERIFICATION, TRANSFER_SYNTAXES[:3]))
        self._storage = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}
        self._listener: socket.socket | None = None
        self._tls: ssl.SSLContext | None = None
        self._balancer: Balancer | None = None
        self._opening: set[asyncio.Task[None]] = set()  # connections whose TLS handshake runs
        self._serving = 0  # connections this process serves (accepted here or handed over), for balancing
        self._tasks: dict[asyncio.Task[None], Association | None] = {}
        self._negotiating: dict[Association, asyncio.Task[None]] = {}
        self._active: set[Association] = set()
        self._in_flight: set[str] = set()  # spool files being received or committed
        self._lock = threading.Lock()
        self.received = 0  # instances stored since start (this process), for /xapi/dicomscp
        self.last_association: LastAssociation | None = None
        ingest.barrier = engine.group_sync

    # ------------------------------------------------------------------ start / stop

    def start(self, *, port: int | None = None, shared: bool = False) -> Listening:
        self._tls = tls_context(self.config)
        sock = self._socket(self.config.port if port is None else port, shared)
        host, bound = sock.getsockname()[:2]
        if shared:
            balancer = Balancer(self.ingest.layout.root, bound)
            self._balancer = balancer if balancer.join() else None
        self._listener = sock
        self.engine.call(self._listen())
        logger.info("receiver %s listening on %s:%d (asyncio engine)", self.config.ae_title, host, bound)
        return Listening(self.config.ae_title, host, bound)

    def _socket(self, port: int, shared: bool) -> socket.socket:
        family = socket.AF_INET6 if ipaddress.ip_address(self.config.bind).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((self.config.bind, port))
        except OSError as exc:
            sock.close()
            raise ListenFailure(f"receiver {self.config.ae_title} cannot listen on "
                                f"{self.config.bind}:{port}: {exc.strerror or exc}") from exc
        sock.listen(128)
        sock.setblocking(False)
        return sock

    async def _listen(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        loop.add_reader(self._listener.fileno(), self._accept)
        if self._balancer is not None:
            self._balancer.attach(loop, self._open)

    def stop(self) -> None:
        if self._listener is not None and not self.engine.loop.is_closed():
            self.engine.call(self._close())
        self._listener = None

    async def _close(self) -> None:
        loop = asyncio.get_running_loop()
        listener, self._listener = self._listener, None
        if listener is not None:
            loop.remove_reader(listener.fileno())
            listener.close()
        balancer, self._balancer = self._balancer, None
        if balancer is not None:
            balancer.detach()
            balancer.leave()
        tasks = [*self._opening, *self._tasks]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)

    # ------------------------------------------------------------------ accepting

    def _accept(self) -> None:
        """The listening socket is readable: accept, and keep or hand over each connection."""
        for _ in range(ACCEPT_BURST):
            if self._listener is None:
                return
            try:
                conn, _address = self._listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_FILES:
                    self._pause_accepting(exc)
                else:
                    logger.warning("receiver %s: accept failed: %s", self.config.ae_title, exc.strerror or exc)
                return
            conn.setblocking(False)
            if self._balancer is not None and self._balancer.place(conn, self._serving):
                conn.close()  # a sibling receiver process serves it
                continue
            self._open(conn)

    def _pause_accepting(self, exc: OSError) -> None:
        listener = self._listener
        assert listener is not None
        logger.error("receiver %s cannot accept connections (%s): trying again in 1 s",
                     self.config.ae_title, exc.strerror or exc)
        loop = asyncio.get_running_loop()
        loop.remove_reader(listener.fileno())

        def resume() -> None:
            if self._listener is listener:
                loop.add_reader(listener.fileno(), self._accept)

        loop.call_later(1.0, resume)

    def _open(self, conn: socket.socket) -> None:
        self._serving += 1
        if self._balancer is not None:
            self._balancer.publish(self._serving)
        task = asyncio.get_running_loop().create_task(self._opened(conn))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    async def _opened(self, conn: socket.socket) -> None:
        """Make a kept connection an asyncio stream (after the TLS handshake, if any), which
        starts `_connected`; a failed handshake ends it here."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, self._connected, loop=loop)
        try:
            await loop.connect_accepted_socket(lambda: protocol, conn, ssl=self._tls,
                                               ssl_handshake_timeout=self.config.acse_timeout if self._tls else None)
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            logger.warning("receiver %s: connection dropped before its association: %s", self.config.ae_title,
                           escape(str(exc) or type(exc).__name__))
            conn.close()
            self._connection_ended()
        except asyncio.CancelledError:
            conn.close()
            self._connection_ended()
            raise

    def _connection_ended(self) -> None:
        self._serving = max(0, self._serving - 1)
        if self._balancer is not None:
            self._balancer.publish(self._serving)

    # ------------------------------------------------------------------ connections

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peername = writer.get_extra_info("peername") or ("", 0)
        raw = writer.get_extra_info("socket")
        if raw is not None:
            try:
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        assoc = Association(self, reader, writer, Peer(str(peername[0]), int(peername[1])))
        self._tasks[task] = assoc
        if len(self._negotiating) >= MAX_PENDING:  # make room: drop the peer that has waited longest
            oldest = next(iter(self._negotiating))
            logger.warning("%d connections still negotiating: dropping the oldest, from %s",
                           len(self._negotiating), oldest.peer.address)
            self._negotiating.pop(oldest).cancel()
        self._negotiating[assoc] = task
        self._sweep_spool()
        try:
            await assoc.run()
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.pop(task, None)
            self._negotiating.pop(assoc, None)
            self._connection_ended()

    def claim_slot(self, assoc: Association) -> bool:
        """Take an association slot for an accepted association (False: all are taken)."""
        self._negotiating.pop(assoc, None)
        if len(self._active) >= self.config.max_associations:
            return False
        self._active.add(assoc)
        self.last_association = LastAssociation(time.time(), assoc.peer.ae_title, assoc.peer.address)
        return True

    def release_slot(self, assoc: Association) -> None:
        self._negotiating.pop(assoc, None)
        self._active.discard(assoc)

    def discard_spool(self, spool: Spool) -> None:
        spool.discard()
        with self._lock:
            self._in_flight.discard(str(spool.path))

    def is_storage(self, abstract_syntax: str) -> bool:
        return abstract_syntax in self._storage

    def _sweep_spool(self) -> None:
        """Spool files older than any live association could leave (see dicomd.spool.sweep_spool)."""
        age = 2 * max(self.config.network_timeout, self.config.dimse_timeout) + 5
        with self._lock:
            keep = set(self._in_flight)
        sweep_spool(self.ingest.layout.tmp, time.time() - age, keep)

    # ------------------------------------------------------------------ C-STORE

    def open_spool(self, command: dimse.Command, transfer_syntax: str) -> Spool:
        refusal = ""
        try:
            storage.check_free(self.ingest.layout.root, self.ingest.config.min_free_bytes)
        except DicomdError as exc:
            refusal = str(exc)
        spool = Spool(self.ingest.layout.tmp, command.affected_sop_class, command.affected_sop_instance,
                      transfer_syntax, limit=self.config.max_instance_bytes, refusal=refusal)
        with self._lock:
            self._in_flight.add(str(spool.path))
        return spool

    async def store(self, spool: Spool, command: dimse.Command, peer: Peer) -> int:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.engine.pool, self._store, spool, command, peer)

    def _store(self, spool: Spool, command: dimse.Command, peer: Peer) -> int:
        """Commit one received instance through ingest; the DIMSE status (this edge's translation)."""
        source = Source(kind="DICOM", ae_title=peer.ae_title, address=peer.address, receiver=self.index,
                        fixed_project=self.config.project, prevent_anon=self.config.prevent_anon)
        try:
            if spool.refusal:
                logger.warning("C-STORE from %s refused: %s", source.describe(), escape(spool.refusal))
                note_refused(self.ingest.catalog, source, "refused while receiving")
                return OUT_OF_RESOURCES

            def stage() -> None:
                digest = spool.finish()
                self.ingest.stage(spool.path, source, move=True, header=spool.scanner.result(), digest=digest)

            status = store_status(self.ingest, spool.path, source,
                                  lambda: str(UID(command.affected_sop_instance or "")), stage)
            if status == SUCCESS:
                with self._lock:
                    self.received += 1
            return status
        finally:
            self.discard_spool(spool)  # gone already when staged or quarantined
