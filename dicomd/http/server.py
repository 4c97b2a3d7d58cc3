"""`HttpServer(config, stores)`: uvicorn serving the API in a thread, started and stopped by the daemon.

The socket is bound in start(), so port 0 works and `.port` / `.url` are known as soon as start()
returns.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import uvicorn

from dicomd.config import Config
from dicomd.stores import Stores
from dicomd.errors import ListenFailure
from dicomd.http import limits
from dicomd.http.app import create_app
from dicomd.receiverset import ReceiverSet

logger = logging.getLogger(__name__)


class HttpServer:
    def __init__(self, config: Config, stores: Stores, receivers: ReceiverSet | None = None) -> None:
        self.config = config
        self.stores = stores
        self.app = create_app(config, stores, receivers)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.port = 0

    @property
    def scheme(self) -> str:
        return "https" if self._tls() else "http"

    @property
    def url(self) -> str:
        host = self.config.http.host
        host = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
        return f"{self.scheme}://{host}:{self.port}"

    def _tls(self) -> dict[str, Any]:
        cert = getattr(self.config.http, "tls_cert", "")
        key = getattr(self.config.http, "tls_key", "")
        return {"ssl_certfile": cert, "ssl_keyfile": key} if cert and key else {}

    def start(self) -> None:
        host, port = self.config.http.host, self.config.http.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise ListenFailure(f"HTTP API cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        sock.listen(128)
        self._socket = sock
        self.port = sock.getsockname()[1]
        uv_config = uvicorn.Config(
            self.app, lifespan="off", log_level="warning", access_log=False,
            timeout_graceful_shutdown=10,
            **limits.server_options(self.config.http),
            **self._tls(),
        )
        self._server = uvicorn.Server(uv_config)
        self._thread = threading.Thread(target=self._run, name="http-server", daemon=True)
        self._thread.start()
        logger.info("HTTP API listening on %s", self.url)

    def _run(self) -> None:
        assert self._server is not None and self._socket is not None
        try:
            self._server.run(sockets=[self._socket])
        except Exception:  # the server thread's one catch-all: log, the daemon keeps its other services
            logger.exception("HTTP server stopped with an error")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        self.app.state.import_jobs.close()  # background imports end before the stores close
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        self._server = None
