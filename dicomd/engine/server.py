"""The asyncio receive engine: one event loop per process, one coroutine per association.

`EngineLoop` owns the process's event loop (uvloop when installed) on one thread, the small pool
of threads that commit received instances through dicomd.ingest, and the group data sync they
share. `AsyncReceiver` is one configured receiver (AE title, port, bind address) on that loop,
with the same start/stop face as dicomd.scp.Receiver; receiver processes share its port with
SO_REUSEPORT exactly as they do for the pynetdicom engine.

Association slots: a connection holds one only once its association is accepted, so peers that
never finish negotiating cannot use up ``max_associations``. They are dropped when ARTIM
(``acse_timeout``) runs out, and when more than MAX_PENDING are negotiating at once the oldest
is dropped to make room for the newest.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
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
        self._server: asyncio.AbstractServer | None = None
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
        tls = tls_context(self.config)
        sock = self._socket(self.config.port if port is None else port, shared)
        self._server = self.engine.call(self._serve(sock, tls))
        host, bound = sock.getsockname()[:2]
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

    async def _serve(self, sock: socket.socket, tls: ssl.SSLContext | None) -> asyncio.AbstractServer:
        return await asyncio.start_server(self._connected, sock=sock, ssl=tls, limit=STREAM_LIMIT,
                                          ssl_handshake_timeout=self.config.acse_timeout if tls else None)

    def stop(self) -> None:
        if self._server is not None and not self.engine.loop.is_closed():
            self.engine.call(self._close())
        self._server = None

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        await self._server.wait_closed()

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
