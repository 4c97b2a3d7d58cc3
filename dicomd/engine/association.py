"""One association, as one coroutine: negotiation, P-DATA, DIMSE messages, release and abort.

States: connected (ARTIM runs: the whole A-ASSOCIATE-RQ must arrive within ``acse_timeout``; the
peer holds no association slot yet) -> established (a slot is held; C-ECHO and C-STORE are served,
one message at a time) -> released or aborted. Every protocol violation ends in an A-ABORT (or
A-ASSOCIATE-RJ during negotiation) for this peer alone.

Timeouts: ``acse_timeout`` for the association request, ``network_timeout`` for a silent peer
between messages, the smaller of it and ``dimse_timeout`` while a message is half received (and
while the peer does not take our response). Once established, the silence limits are kept by one
watchdog timer per association rather than a timer per read: each read only notes when it began
waiting and how long it may wait; the watchdog looks a few times per limit and cancels the
association's task when a read has waited too long, which ends like any timeout (an A-ABORT).
A data set fragment is read in whole pieces of up to CHUNK bytes (fewer reads and spool writes per
instance than taking whatever has arrived: measured ~8% more MR instances/s at four
associations); each piece must arrive within the limit, i.e. a peer must send at least
CHUNK / ``dimse_timeout`` bytes per second while it sends a data set.
A release collision (PS3.8 7.2) cannot happen: this acceptor never requests a release; an
unexpected A-RELEASE-RP is a protocol error like any other unexpected PDU.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import negotiate_as_acceptor
from pydicom.uid import UID

from dicomd.engine import dimse, pdu
from dicomd.engine.spool import Spool

if TYPE_CHECKING:
    from dicomd.engine.server import AsyncReceiver

logger = logging.getLogger(__name__)

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_CLASS_UID = "2.25.271769874352462335366219311843938429618"  # dicomd's (a UUID-derived UID)
IMPLEMENTATION_VERSION = "DICOMD_ENGINE_1"
MAX_COMMAND = 64 * 1024  # a command set is a few hundred bytes
CHUNK = 256 * 1024
VERIFICATION = "1.2.840.10008.1.1"

SUCCESS = 0x0000
SOP_CLASS_NOT_SUPPORTED = 0x0122
UNRECOGNIZED_OPERATION = 0x0211
CANNOT_UNDERSTAND = 0xC000

# Reject reasons: (result, source, diagnostic), PS3.8 Table 9-21
REJECT_NO_REASON = (0x01, 0x01, 0x01)
REJECT_APPLICATION_CONTEXT = (0x01, 0x01, 0x02)
REJECT_CALLING_AE = (0x01, 0x01, 0x03)
REJECT_CALLED_AE = (0x01, 0x01, 0x07)
REJECT_PROTOCOL_VERSION = (0x01, 0x02, 0x02)
REJECT_BUSY = (0x02, 0x03, 0x02)  # transient, local limit exceeded

SERVICE_NAMES = {0x0001: "C-STORE", 0x0010: "C-GET", 0x0020: "C-FIND", 0x0021: "C-MOVE", 0x0030: "C-ECHO",
                 0x0100: "N-EVENT-REPORT", 0x0110: "N-GET", 0x0120: "N-SET", 0x0130: "N-ACTION",
                 0x0140: "N-CREATE", 0x0150: "N-DELETE"}


class Closed(Exception):
    """The association is over (released, aborted by the peer, or the connection closed)."""


@dataclass
class Peer:
    address: str
    port: int
    ae_title: str = ""


class Association:
    def __init__(self, receiver: "AsyncReceiver", reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, peer: Peer) -> None:
        self.receiver = receiver
        self.config = receiver.config
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.established = False
        self.contexts: dict[int, Any] = {}  # accepted context ID -> PresentationContext
        self.peer_max_pdu = 0
        self.our_max_pdu = self.config.max_pdu_size
        self._command = bytearray()
        self._spool: Spool | None = None
        self._message: dimse.Command | None = None
        self._context_id = 0
        self._waiting_since = 0.0  # loop time at which the pending read began waiting
        self._may_wait = 0.0  # seconds the pending read may wait (0: no read is waiting)
        self._expired = False  # the watchdog ended the association

    # ------------------------------------------------------------------ the whole life

    async def run(self) -> None:
        try:
            if await self._negotiate():
                await self._watched(self._serve())
        except pdu.ProtocolError as exc:
            logger.warning("association from %s aborted: %s", self._who(), exc)
            await self._send(pdu.encode_abort(exc.reason))
        except TimeoutError:
            stage = "its association request" if not self.established else "data"
            logger.warning("association from %s aborted: no %s within the timeout", self._who(), stage)
            await self._send(pdu.encode_abort(None))
        except Closed:
            pass
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            logger.debug("connection from %s lost: %s", self._who(), exc)
        except asyncio.CancelledError:
            await self._send(pdu.encode_abort(None))
            raise
        finally:
            self._discard_partial()
            self.receiver.release_slot(self)
            self.writer.close()

    def _who(self) -> str:
        return f"{self.peer.ae_title or '?'}@{self.peer.address}"

    async def _send(self, data: bytes) -> None:
        try:
            if not self.writer.is_closing():
                self.writer.write(data)
                await asyncio.wait_for(self.writer.drain(), 5)
        except (ConnectionError, OSError, TimeoutError):
            pass

    async def _read(self, n: int) -> bytes:
        try:
            return await self.reader.readexactly(n)
        except asyncio.IncompleteReadError:
            raise Closed from None

    # ------------------------------------------------------------------ silence limits (established)

    async def _watched(self, serving: Any) -> None:
        """Run ``serving`` under the watchdog that keeps the silence limits of its reads."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        limits = (self.config.network_timeout, self.config.dimse_timeout)
        period = min(1.0, max(0.05, min(limits) / 4))
        handle: asyncio.TimerHandle | None = None

        def look() -> None:
            nonlocal handle
            if self._may_wait and loop.time() - self._waiting_since > self._may_wait:
                self._expired = True
                task.cancel()
                return
            handle = loop.call_later(period, look)

        handle = loop.call_later(period, look)
        try:
            await serving
        except asyncio.CancelledError:
            if self._expired and task.uncancel() == 0:
                raise TimeoutError from None  # ends as every timeout does (run: A-ABORT)
            raise
        finally:
            handle.cancel()

    async def _wait_for_peer(self, awaitable: Any, limit: float) -> Any:
        """Await a read (or a drain) that the peer must satisfy within ``limit`` seconds."""
        self._waiting_since = asyncio.get_running_loop().time()
        self._may_wait = limit
        try:
            return await awaitable
        finally:
            self._may_wait = 0.0

    def _in_message_limit(self) -> float:
        return min(self.config.network_timeout, self.config.dimse_timeout)

    # ------------------------------------------------------------------ negotiation

    async def _negotiate(self) -> bool:
        async with asyncio.timeout(self.config.acse_timeout):  # ARTIM: the request must arrive in time
            header = await self._read(6)
            kind, _reserved, length = pdu.HEADER.unpack(header)
            if kind == pdu.ABORT:
                raise Closed
            if kind != pdu.ASSOCIATE_RQ:
                raise pdu.ProtocolError(f"{pdu.NAMES.get(kind, hex(kind))} before an association request",
                                        pdu.UNEXPECTED_PDU if kind in pdu.NAMES else pdu.UNRECOGNIZED_PDU)
            if length > pdu.MAX_ASSOCIATE_RQ or length < 68:
                raise pdu.ProtocolError(f"association request of {length} bytes", pdu.INVALID_PARAMETER)
            body = await self._read(length)
        if body[0:2] != b"\x00\x01":
            return await self._reject(REJECT_PROTOCOL_VERSION, "protocol version not supported")
        rq = pdu.decode_associate_rq(header + body)
        calling = (rq.calling_ae_title or "").strip()
        self.peer.ae_title = calling
        if str(rq.application_context_name) != APPLICATION_CONTEXT:
            return await self._reject(REJECT_APPLICATION_CONTEXT, "unknown application context")
        if (rq.called_ae_title or "").strip() != self.config.ae_title.strip():
            return await self._reject(REJECT_CALLED_AE, "called AE title is not this receiver's")
        if not self.receiver.allowlist.allows(calling, self.peer.address):
            logger.warning("refused association from %s@%s to %s: not in this receiver's allowlist",
                           calling, self.peer.address, self.config.ae_title)
            return await self._reject(REJECT_CALLING_AE, "")
        if not self.receiver.claim_slot(self):
            logger.warning("refused association from %s: %d associations already (max_associations)",
                           self._who(), self.config.max_associations)
            return await self._reject(REJECT_BUSY, "")
        await self._send(pdu.encode_associate_ac(self._accept(rq)))
        self.established = True
        logger.debug("association from %s accepted: %d context(s)", self._who(), len(self.contexts))
        return True

    async def _reject(self, reason: tuple[int, int, int], why: str) -> bool:
        if why:
            logger.warning("refused association from %s: %s", self._who(), why)
        await self._send(pdu.encode_associate_rj(*reason))
        return False

    def _accept(self, rq: A_ASSOCIATE) -> A_ASSOCIATE:
        roles: dict[UID, tuple[bool | None, bool | None]] = {}
        our_items: list[Any] = []
        for item in rq.user_information:
            if isinstance(item, MaximumLengthNotification):
                self.peer_max_pdu = int(item.maximum_length_received or 0)
            elif isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.sop_class_uid:
                roles[UID(item.sop_class_uid)] = (item.scu_role, item.scp_role)
            elif isinstance(item, AsynchronousOperationsWindowNegotiation):
                window = AsynchronousOperationsWindowNegotiation()  # we perform one operation at a time
                window.maximum_number_operations_invoked = 1
                window.maximum_number_operations_performed = 1
                our_items.append(window)
            # user identity: accepted without a response (no positive response is ever sent);
            # SOP class (common) extended negotiation: not answered, i.e. not supported
        results, role_items = negotiate_as_acceptor(
            rq.presentation_context_definition_list, self.receiver.supported_contexts, roles or None
        )
        self.contexts = {cx.context_id: cx for cx in results if cx.result == 0x00}
        maximum = MaximumLengthNotification()
        maximum.maximum_length_received = self.our_max_pdu
        implementation = ImplementationClassUIDNotification()
        implementation.implementation_class_uid = UID(IMPLEMENTATION_CLASS_UID)
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = IMPLEMENTATION_VERSION
        ac = A_ASSOCIATE()
        ac.application_context_name = UID(APPLICATION_CONTEXT)
        ac.calling_ae_title = rq.calling_ae_title
        ac.called_ae_title = rq.called_ae_title
        ac.result = 0x00
        ac.result_source = 0x01
        ac.presentation_context_definition_results_list = results
        ac.user_information = [maximum, implementation, version, *our_items, *role_items]
        return ac

    # ------------------------------------------------------------------ established

    async def _serve(self) -> None:
        while True:
            in_message = self._message is not None or bool(self._command)
            timeout = self._in_message_limit() if in_message else self.config.network_timeout
            header = await self._wait_for_peer(self._read(6), timeout)
            kind, _reserved, length = pdu.HEADER.unpack(header)
            if kind == pdu.P_DATA_TF:
                if self.our_max_pdu and length > self.our_max_pdu:
                    raise pdu.ProtocolError(
                        f"a P-DATA-TF of {length} bytes is over the negotiated maximum of {self.our_max_pdu}",
                        pdu.INVALID_PARAMETER)
                await self._p_data(length)
            elif kind == pdu.RELEASE_RQ:
                if length != 4:
                    raise pdu.ProtocolError(f"A-RELEASE-RQ of {length} bytes", pdu.INVALID_PARAMETER)
                await self._timed(self._read(4))
                if in_message:
                    logger.warning("association from %s released mid-message: partial data discarded", self._who())
                await self._send(pdu.RELEASE_RP_BYTES)
                logger.debug("association from %s released", self._who())
                raise Closed
            elif kind == pdu.ABORT:
                if in_message:
                    logger.warning("association from %s aborted by the peer mid-instance: partial data discarded",
                                   self._who())
                raise Closed
            elif kind in pdu.NAMES:
                raise pdu.ProtocolError(f"unexpected {pdu.NAMES[kind]}", pdu.UNEXPECTED_PDU)
            else:
                raise pdu.ProtocolError(f"unknown PDU type 0x{kind:02X}", pdu.UNRECOGNIZED_PDU)

    async def _timed(self, awaitable: Any) -> Any:
        return await self._wait_for_peer(awaitable, self._in_message_limit())

    async def _p_data(self, length: int) -> None:
        remaining = length
        if remaining < 6:
            raise pdu.ProtocolError("P-DATA-TF without a presentation data value", pdu.INVALID_PARAMETER)
        while remaining > 0:
            if remaining < 6:
                raise pdu.ProtocolError("P-DATA-TF ends inside a PDV item header", pdu.INVALID_PARAMETER)
            item_length, context_id, control = pdu.PDV_HEADER.unpack(await self._timed(self._read(6)))
            if item_length < 2 or item_length + 4 > remaining:
                raise pdu.ProtocolError(f"PDV item length {item_length} does not fit its P-DATA-TF",
                                        pdu.INVALID_PARAMETER)
            remaining -= 4 + item_length
            if context_id not in self.contexts:
                raise pdu.ProtocolError(f"data for presentation context {context_id}, which was not accepted",
                                        pdu.INVALID_PARAMETER)
            size = item_length - 2
            if control & 0x01:
                await self._command_fragment(context_id, size, last=bool(control & 0x02))
            else:
                await self._dataset_fragment(context_id, size, last=bool(control & 0x02))

    async def _command_fragment(self, context_id: int, size: int, *, last: bool) -> None:
        if self._message is not None:
            raise pdu.ProtocolError("a command fragment while a data set was expected", pdu.UNEXPECTED_PARAMETER)
        if self._command and context_id != self._context_id:
            raise pdu.ProtocolError("command fragments on two presentation contexts", pdu.UNEXPECTED_PARAMETER)
        if len(self._command) + size > MAX_COMMAND:
            raise pdu.ProtocolError("a command set longer than 64 KiB", pdu.INVALID_PARAMETER)
        self._context_id = context_id
        self._command += await self._timed(self._read(size))
        if not last:
            return
        try:
            command = dimse.parse_command(bytes(self._command))
        except dimse.DimseError as exc:
            raise pdu.ProtocolError(f"undecodable command set: {exc}", pdu.INVALID_PARAMETER) from None
        self._command = bytearray()
        if command.command_field & 0x8000:
            raise pdu.ProtocolError("a DIMSE response sent to the acceptor", pdu.UNEXPECTED_PARAMETER)
        if command.has_dataset:
            self._message = command
            self._spool = self._open_spool(command, context_id) if command.command_field == dimse.C_STORE_RQ else None
            return
        await self._handle(command, context_id)

    async def _dataset_fragment(self, context_id: int, size: int, *, last: bool) -> None:
        if self._message is None:
            raise pdu.ProtocolError("a data set fragment without its command", pdu.UNEXPECTED_PARAMETER)
        if context_id != self._context_id:
            raise pdu.ProtocolError("a data set on another presentation context than its command",
                                    pdu.UNEXPECTED_PARAMETER)
        spool = self._spool
        while size > 0:
            chunk = await self._timed(self._read(min(size, CHUNK)))
            size -= len(chunk)
            if spool is not None:
                spool.write(chunk)
        if last:
            command, self._message = self._message, None
            await self._handle(command, context_id)

    # ------------------------------------------------------------------ DIMSE

    def _open_spool(self, command: dimse.Command, context_id: int) -> Spool:
        syntax = str(self.contexts[context_id].transfer_syntax[0])
        return self.receiver.open_spool(command, syntax)

    async def _handle(self, command: dimse.Command, context_id: int) -> None:
        field = command.command_field
        abstract = str(self.contexts[context_id].abstract_syntax)
        if field == dimse.C_ECHO_RQ:
            await self._respond(command, context_id, SUCCESS)
        elif field == dimse.C_STORE_RQ:
            spool, self._spool = self._spool, None
            if spool is None:  # a C-STORE-RQ that says it has no data set
                await self._respond(command, context_id, CANNOT_UNDERSTAND)
            elif abstract == VERIFICATION or not self.receiver.is_storage(abstract):
                self.receiver.discard_spool(spool)
                await self._respond(command, context_id, SOP_CLASS_NOT_SUPPORTED)
            else:
                status = await self.receiver.store(spool, command, self.peer)
                await self._respond(command, context_id, status)
        elif field == dimse.C_CANCEL_RQ:
            pass  # nothing of ours can be cancelled
        elif field in SERVICE_NAMES:
            logger.warning("refused %s-RQ from %s: this receiver only answers C-STORE and C-ECHO",
                           SERVICE_NAMES[field], self._who())
            await self._respond(command, context_id, UNRECOGNIZED_OPERATION)
        else:
            raise pdu.ProtocolError(f"unknown DIMSE command 0x{field:04X}", pdu.INVALID_PARAMETER)

    async def _respond(self, command: dimse.Command, context_id: int, status: int) -> None:
        sop_class = command.affected_sop_class or command.requested_sop_class
        message = dimse.encode_response(command.command_field, max(command.message_id, 0), status, sop_class,
                                        command.affected_sop_instance)
        self.writer.write(pdu.encode_p_data(context_id, message, command=True, max_pdu=self.peer_max_pdu))
        await self._timed(self.writer.drain())

    def _discard_partial(self) -> None:
        spool, self._spool = self._spool, None
        if spool is not None:
            self.receiver.discard_spool(spool)
            logger.warning("association from %s dropped mid-instance: partial data discarded", self.peer.address)
