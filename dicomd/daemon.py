"""`Daemon(config)` owns everything: stores, catalog, receivers, the session watcher, the HTTP API.

Start-up order: folders -> catalog -> recovery (reconcile disk and catalog) -> receivers -> watcher
-> HTTP. Stop is the reverse. Nothing lives at module level; tests run several daemons side by side.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from dicomd.config import Config
from dicomd.dropfolder import DropFolders
from dicomd.http.server import HttpServer
from dicomd.pipeline import SessionWatcher
from dicomd.engine.receivers import ReceiverGroup
from dicomd.layout import Layout
from dicomd.receiverset import ReceiverSet
from dicomd.runlock import RunLock
from dicomd.scp import Listening, configure_pynetdicom
from dicomd.stores import Role, Stores
from dicomd.workers import ReceiverProcesses

logger = logging.getLogger(__name__)


class Service(Protocol):
    """Something the daemon starts and stops (drop folder watcher, HTTP server, ...)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Daemon:
    config: Config
    stores: Stores | None = None
    receivers: list[Any] = field(default_factory=list)
    group: ReceiverGroup | None = None
    listening: list[Listening] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    watcher: SessionWatcher | None = None
    recovered: list[str] = field(default_factory=list)
    workers: ReceiverProcesses | None = None
    receiver_set: ReceiverSet | None = None
    _stopped: threading.Event = field(default_factory=threading.Event)
    _run_lock: RunLock | None = None

    def start(self) -> "Daemon":
        """Start every part; when one cannot start (a port taken, say), stop what did and re-raise."""
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> "Daemon":
        self._run_lock = RunLock.serving(Layout(self.config.data_dir))  # no catalog migration meanwhile
        stores = Stores.open(self.config, Role.DAEMON)
        self.stores = stores
        configure_pynetdicom(stores.layout.tmp)
        node = stores.node
        if node is not None:
            node.start(http_port=self.config.http.port if self.config.http.enabled else None)
        # with other live nodes: only the work no live node holds (see dicomd.cluster)
        self.recovered = stores.archiver.recover() + stores.prearchive.recover()
        shared = self.config.receiver_processes > 1
        self.group = ReceiverGroup(stores.ingest)
        for index, receiver_config in enumerate(self.config.receivers):
            self.listening.append(self.group.start(index, receiver_config, shared=shared))
        self.receivers = list(self.group.receivers)
        if node is not None:
            node.start([item.port for item in self.listening], node.http_port)
        if shared and self.receivers:
            self.workers = ReceiverProcesses(self.config, [item.port for item in self.listening])
            self.workers.start(self.config.receiver_processes - 1)
        # receivers added over /xapi/dicomscp (stored in the catalog): this process only
        self.receiver_set = ReceiverSet(stores.ingest, list(zip(self.receivers, self.listening)))
        self.receiver_set.start(stores.catalog.receivers())
        self.watcher = SessionWatcher(self.config, stores.catalog, stores.prearchive, stores.archiver, node)
        self.watcher.start()
        for service in self._optional_services(stores):
            service.start()
            self.services.append(service)
        logger.info(
            "dicomd started: data in %s, catalog %s (%s), %d receiver(s), session idle %ss",
            self.config.data_dir, stores.catalog.url.masked, stores.catalog.dialect, len(self.receivers),
            self.config.session_idle_seconds,
        )
        return self

    def _optional_services(self, stores: Stores) -> list[Service]:
        services: list[Service] = []
        if self.config.drop_folders:
            services.append(DropFolders(self.config, stores))
        if self.config.http.enabled:
            services.append(HttpServer(self.config, stores, self.receiver_set))
        return services

    def stop(self) -> None:
        for service in reversed(self.services):
            try:
                service.stop()
            except Exception:
                logger.exception("stopping %s failed", type(service).__name__)
        self.services.clear()
        if self.workers is not None:
            self.workers.stop()
            self.workers = None
        if self.receiver_set is not None:
            self.receiver_set.stop()
            self.receiver_set = None
        if self.group is not None:
            self.group.stop()
            self.group = None
        self.receivers.clear()
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        if self.stores is not None:
            self.stores.close()
            self.stores = None
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None
        self._stopped.set()
        logger.info("dicomd stopped")

    def dicom_port(self, index: int = 0) -> int:
        return self.listening[index].port

    def run_forever(self) -> None:
        """Serve until SIGINT or SIGTERM."""

        def on_signal(signum: int, _frame: Any) -> None:
            logger.info("signal %d: stopping", signum)
            self._stopped.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            while not self._stopped.wait(1.0):
                pass
        finally:
            self.stop()

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

