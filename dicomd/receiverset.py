"""`ReceiverSet`: the daemon's DICOM receivers at run time, the config file's and those added over the
API (stored in the catalog), with their state and counts.

The daemon starts the config file's receivers itself (with the extra receiver processes when
`receiver_processes > 1`) and hands them here to be reported; the catalog's receivers are started,
changed and stopped here, in this process only (extra receiver processes serve the config file's).
A receiver that cannot listen (its port is taken) is reported `failed` with the reason; the daemon
keeps running.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from typing import Sequence

from dicomd.catalog import ReceiverRow
from dicomd.config import ReceiverConfig
from dicomd.errors import ListenFailure, Conflict, DicomdError
from dicomd.ingest import Ingest
from dicomd.scp import Association, Listening, Receiver

logger = logging.getLogger(__name__)


def receiver_config(row: ReceiverRow) -> ReceiverConfig:
    """The settings a stored receiver runs with (the rest are ReceiverConfig's defaults)."""
    return dataclasses.replace(ReceiverConfig(), ae_title=row.ae_title, port=row.port, bind=row.bind,
                               allowed=row.allowed, project=row.project, prevent_anon=row.prevent_anon)


@dataclass(frozen=True)
class ReceiverState:
    """One receiver as it is now."""

    running: bool
    port: int | None  # the port it listens on (port 0 in its settings picks one)
    error: str  # why it is not running, when it should be
    received: int  # instances stored since it started (by this process)
    last_association: Association | None


class ReceiverSet:
    """Thread-safe; owned by the daemon, read and changed by the HTTP API."""

    def __init__(self, ingest: Ingest, configured: Sequence[tuple[Receiver, Listening]] = ()) -> None:
        self.ingest = ingest
        self.configured = list(configured)
        self._running: dict[int, tuple[Receiver, Listening]] = {}
        self._errors: dict[int, str] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------ state

    def configured_state(self, index: int) -> ReceiverState:
        receiver, listening = self.configured[index]
        return _state(receiver, listening)

    def state(self, receiver_id: int) -> ReceiverState:
        with self._lock:
            running = self._running.get(receiver_id)
            if running is None:
                return ReceiverState(False, None, self._errors.get(receiver_id, ""), 0, None)
            return _state(*running)

    def ports(self, *, besides: int = 0) -> dict[int, str]:
        """Ports listened on now -> which receiver (``besides``: a stored receiver's id to leave out)."""
        found = {listening.port: f"config receiver {receiver.config.ae_title}" for receiver, listening in self.configured}
        with self._lock:
            for rid, (receiver, listening) in self._running.items():
                if rid != besides:
                    found[listening.port] = f"receiver {rid} ({receiver.config.ae_title})"
        return found

    # ------------------------------------------------------------ starting and stopping

    def start(self, rows: Sequence[ReceiverRow]) -> None:
        """Start the enabled stored receivers (at daemon start); one that cannot listen is reported."""
        for row in rows:
            if row.enabled:
                try:
                    self.apply(row.id, row)
                except DicomdError as exc:
                    logger.error("receiver %d (%s) not started: %s", row.id, row.ae_title, exc)

    def apply(self, receiver_id: int, row: ReceiverRow | None) -> None:
        """Make the running receiver ``receiver_id`` match ``row`` (None or disabled: stopped).
        Conflict when the new settings cannot listen; the old receiver then keeps running."""
        with self._lock:
            old = self._running.pop(receiver_id, None)
            if old is not None:
                old[0].stop()
            self._errors.pop(receiver_id, None)
            if row is None or not row.enabled:
                return
            try:
                self._running[receiver_id] = self._listen(receiver_id, row)
            except DicomdError as exc:
                self._errors[receiver_id] = str(exc)
                if old is not None:
                    self._running[receiver_id] = self._listen(receiver_id, None, old[0].config)
                raise

    def _listen(self, receiver_id: int, row: ReceiverRow | None, settings: ReceiverConfig | None = None
                ) -> tuple[Receiver, Listening]:
        settings = settings or receiver_config(row)  # type: ignore[arg-type]
        receiver = Receiver(None, settings, self.ingest)
        try:
            listening = receiver.start()
        except ListenFailure as exc:
            raise Conflict(str(exc)) from None
        logger.info("receiver %d (%s) listening on port %d", receiver_id, settings.ae_title, listening.port)
        return receiver, listening

    def stop(self) -> None:
        with self._lock:
            for receiver, _listening in self._running.values():
                receiver.stop()
            self._running.clear()


def _state(receiver: Receiver, listening: Listening) -> ReceiverState:
    return ReceiverState(True, listening.port, "", receiver.received, receiver.last_association)
