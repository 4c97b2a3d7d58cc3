"""The receivers of one process, each on the engine its config names (``receivers[].engine``)."""

from __future__ import annotations

from typing import Protocol

from dicomd.config import ReceiverConfig
from dicomd.engine.server import AsyncReceiver, EngineLoop
from dicomd.ingest import Ingest
from dicomd.scp import Listening, Receiver


class _Receiver(Protocol):
    def start(self, *, port: int | None = None, shared: bool = False) -> Listening: ...

    def stop(self) -> None: ...


class ReceiverGroup:
    """Starts receivers on their engines; asyncio receivers of the process share one event loop."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.receivers: list[_Receiver] = []
        self._loop: EngineLoop | None = None

    def start(self, index: int, config: ReceiverConfig, *, port: int | None = None, shared: bool = False) -> Listening:
        receiver: _Receiver
        if config.engine == "pynetdicom":
            receiver = Receiver(index, config, self.ingest)
        else:
            if self._loop is None:
                self._loop = EngineLoop()
            receiver = AsyncReceiver(index, config, self.ingest, self._loop)
        listening = receiver.start(port=port, shared=shared)
        self.receivers.append(receiver)
        return listening

    def stop(self) -> None:
        for receiver in self.receivers:
            receiver.stop()
        self.receivers.clear()
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
