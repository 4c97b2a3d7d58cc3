"""The C-STORE SCP: pynetdicom receivers that hand every instance to ingest.

This is one of the three edges where domain errors are translated, here into DIMSE statuses:
  InvalidInput (not DICOM, truncated, missing UIDs)  -> 0xC000 Cannot understand (+ quarantine)
  StorageFull / StorageFailure / anything unexpected -> 0xA700 Out of resources
The handler answers as soon as the file is durable and recorded; it never waits on building,
anonymization or archiving.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydicom.uid import UID
import socket

from pynetdicom import AE, AllStoragePresentationContexts, _config, evt
from pynetdicom.transport import ThreadedAssociationServer
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomd.allowlist import Allowlist
from dicomd.config import ReceiverConfig
from dicomd.errors import ConfigError, DicomdError, InvalidInput, ListenFailure
from dicomd.ingest import Ingest, Source, note_refused, quarantine
from dicomd.logsafe import demote_loggers, escape, escape_loggers
from dicomd.spool import discard_partial_spool, sweep_spool

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700

# Transfer syntaxes we accept (stored as received, never transcoded).
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.92",
    "1.2.840.10008.1.2.4.93",
    "1.2.840.10008.1.2.4.100",  # MPEG2
    "1.2.840.10008.1.2.4.101",
    "1.2.840.10008.1.2.4.102",  # MPEG-4
    "1.2.840.10008.1.2.4.103",
    "1.2.840.10008.1.2.4.104",
    "1.2.840.10008.1.2.4.105",
    "1.2.840.10008.1.2.4.106",
    "1.2.840.10008.1.2.4.107",
    "1.2.840.10008.1.2.4.108",
    "1.2.840.10008.1.2.4.201",  # HTJ2K
    "1.2.840.10008.1.2.4.202",
    "1.2.840.10008.1.2.4.203",
    "1.2.840.10008.1.2.5",  # RLE Lossless
]


def configure_pynetdicom(tmp_dir: Path) -> None:
    """Process-wide pynetdicom settings: stream received datasets to files in ``tmp_dir``, and
    escape what pynetdicom and pydicom log (see dicomd.logsafe).

    pynetdicom writes each incoming dataset to a NamedTemporaryFile; pointing the temp folder at
    the data directory keeps it on the same file system, so staging is a rename, not a copy.
    """
    _config.STORE_RECV_CHUNKED_DATASET = True
    _config.LOG_HANDLER_LEVEL = "none"
    tempfile.tempdir = str(tmp_dir)
    escape_loggers("pynetdicom", "pydicom")  # they log peer strings (AE titles, UIDs) as they are
    demote_loggers("pydicom")  # its warnings quote data values: DEBUG only


class SharedPortServer(ThreadedAssociationServer):
    """An association server whose port other receiver processes may bind too (SO_REUSEPORT);
    the kernel spreads incoming associations across the processes."""

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()


@dataclass(frozen=True)
class Listening:
    ae_title: str
    address: str
    port: int


@dataclass(frozen=True)
class Association:
    """The last association a receiver accepted: when, from which AE title and address."""

    at: float
    calling_ae_title: str
    address: str


class Receiver:
    """One (AE title, port, bind address) receiver."""

    def __init__(self, index: int | None, config: ReceiverConfig, ingest: Ingest) -> None:
        self.index = index  # into config.receivers (its routing rules); None for a receiver added over the API
        self.config = config
        self.ingest = ingest
        self.allowlist = Allowlist.parse(config.allowed)
        self._server: Any = None
        self._active = 0
        self._lock = threading.Lock()
        self._handling: set[str] = set()  # spool files whose C-STORE handler is running
        self.received = 0  # instances stored since start (this process)
        self.last_association: Association | None = None

    def start(self, *, port: int | None = None, shared: bool = False) -> Listening:
        """Listen on the configured port (or ``port``); ``shared`` lets other processes bind it too."""
        ae = AE(ae_title=self.config.ae_title)
        ae.require_called_aet = True  # another called AE title: A-ASSOCIATE-RJ "called AE title not recognised"
        ae.maximum_associations = self.config.max_associations
        ae.maximum_pdu_size = self.config.max_pdu_size
        ae.network_timeout = self.config.network_timeout
        ae.dimse_timeout = self.config.dimse_timeout
        ae.acse_timeout = self.config.acse_timeout
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification, TRANSFER_SYNTAXES[:3])
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_CONN_CLOSE, self._on_closed),
        ]
        address = (self.config.bind, self.config.port if port is None else port)
        try:
            if shared:
                self._server = ae.make_server(
                    address, evt_handlers=handlers, server_class=SharedPortServer, ssl_context=self._tls()
                )
                ae._servers.append(self._server)  # as start_server does, so shutdown() finds it
                threading.Thread(target=self._server.serve_forever, name=f"scp-{self.config.ae_title}",
                                 daemon=True).start()
            else:
                self._server = ae.start_server(address, block=False, evt_handlers=handlers, ssl_context=self._tls())
        except OSError as exc:
            raise ListenFailure(f"receiver {self.config.ae_title} cannot listen on "
                                f"{address[0]}:{address[1]}: {exc.strerror or exc}") from exc
        host, port = self._server.server_address[:2]
        logger.info("receiver %s listening on %s:%d", self.config.ae_title, host, port)
        return Listening(self.config.ae_title, host, port)

    def _tls(self) -> ssl.SSLContext | None:
        """DICOM TLS (PS3.15 B.1) when a certificate is configured; with tls_ca, senders must
        present a certificate that CA signed."""
        if not self.config.tls_cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.config.tls_cert, self.config.tls_key)
            if self.config.tls_ca:
                context.load_verify_locations(self.config.tls_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"receiver {self.config.ae_title}: cannot load its TLS files: {exc}") from exc
        return context

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # ------------------------------------------------------------------ handlers

    def _on_requested(self, event: Any) -> None:
        self._sweep_spool()
        rq = event.assoc.requestor
        calling = (rq.primitive.calling_ae_title or "").strip()
        address = rq.address
        if not self.allowlist.allows(calling, address):
            logger.warning(
                "refused association from %s@%s to %s: not in this receiver's allowlist",
                escape(calling), escape(address), self.config.ae_title,
            )
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)
            return
        with self._lock:
            self.last_association = Association(time.time(), calling, address)

    def _on_closed(self, event: Any) -> None:
        name = discard_partial_spool(event.assoc)
        if name:
            logger.warning("association from %s dropped mid-instance: partial data discarded",
                           event.assoc.requestor.address)

    def _sweep_spool(self) -> None:
        """Spool files older than any live association could leave (see spool.sweep_spool)."""
        folder = tempfile.gettempdir()
        if Path(folder) != self.ingest.layout.tmp:
            return
        age = 2 * max(self.config.network_timeout, self.config.dimse_timeout) + 5
        with self._lock:
            keep = set(self._handling)
        sweep_spool(Path(folder), time.time() - age, keep)

    def _on_echo(self, event: Any) -> int:
        return SUCCESS

    def _on_store(self, event: Any) -> int:
        rq = event.assoc.requestor
        source = Source(
            kind="DICOM",
            ae_title=(rq.ae_title or "").strip(),
            address=rq.address,
            receiver=self.index,
            fixed_project=self.config.project,
            prevent_anon=self.config.prevent_anon,
        )
        path = Path(event.dataset_path)
        with self._lock:
            self._handling.add(str(path))
        try:
            limit = self.config.max_instance_bytes
            if limit and path.stat().st_size > limit:
                logger.warning("C-STORE from %s refused: %d bytes is over max_instance_bytes (%d)",
                               source.describe(), path.stat().st_size, limit)
                path.unlink(missing_ok=True)
                note_refused(self.ingest.catalog, source, "over max_instance_bytes")
                return OUT_OF_RESOURCES
            status = store_status(self.ingest, path, source,
                                  lambda: str(UID(event.request.AffectedSOPInstanceUID or "")),
                                  lambda: self.ingest.stage(path, source, move=True))
            if status == SUCCESS:
                with self._lock:
                    self.received += 1
            return status
        finally:
            with self._lock:
                self._handling.discard(str(path))


def store_status(ingest: Ingest, path: Path, source: Source, sop_uid: Callable[[], str],
                 stage: Callable[[], object]) -> int:
    """The DIMSE status of one received instance, for both engines: the one place this edge
    translates errors. ``stage`` runs ingest on the file at ``path``; data it cannot understand is
    quarantined (0xC000); a full disk, a failing catalog or anything unexpected is 0xA700."""
    try:
        stage()
        return SUCCESS
    except InvalidInput as exc:
        try:
            quarantine(ingest.layout, ingest.catalog, path, source, f"{exc} (SOP {sop_uid()})", move=True)
        except Exception:
            logger.exception("could not quarantine a refused instance from %s", source.describe())
        return CANNOT_UNDERSTAND
    except DicomdError as exc:
        logger.error("C-STORE from %s refused (out of resources): %s", source.describe(), escape(exc))
        note_refused(ingest.catalog, source, type(exc).__name__)
        return OUT_OF_RESOURCES
    except Exception:
        logger.exception("C-STORE from %s failed unexpectedly", source.describe())
        return OUT_OF_RESOURCES
