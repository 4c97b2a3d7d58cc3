"""`create_app(config, stores)`: the FastAPI application, its login gate and its one error edge."""

from __future__ import annotations

import base64
import binascii
import logging
import time
from http.cookies import SimpleCookie
from typing import Any, Awaitable, Callable, MutableMapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from dicomd.auth import Auth, User
from dicomd.config import Config
from dicomd.http.docs import add_local_docs
from dicomd.http.limits import BodyLimit
from dicomd.stores import Stores
from dicomd.errors import (
    Ambiguous,
    Conflict,
    ListenFailure,
    DicomdError,
    Forbidden,
    InvalidInput,
    NotFound,
    RateLimited,
    StorageFull,
    TooLarge,
)
from dicomd.logsafe import escape
from dicomd.http.context import COOKIE, VERSION
from dicomd.http.routes import (
    archive, auth_routes, dicomdump, dicomscp, imports, prearchive, processors, site, snapshots, status, xapi,
)
from dicomd.importjobs import ImportJobs
from dicomd.receiverset import ReceiverSet
from dicomd.mappings import MappingStore
from dicomd.http.security import SecurityHeaders, check_password, cross_site_refusal, without_paths
from dicomd.ratelimit import LoginThrottle

logger = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/health", "/data/services/auth"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# The one place domain errors become HTTP statuses (first match wins).
STATUS_FOR: tuple[tuple[type[DicomdError], int], ...] = (
    (NotFound, 404),
    (Forbidden, 403),
    (RateLimited, 429),
    (TooLarge, 413),
    (InvalidInput, 400),
    (Ambiguous, 400),
    (Conflict, 409),  # includes InvalidState
    (ListenFailure, 409),  # a receiver port that is taken
    (StorageFull, 507),
)


def status_for(exc: DicomdError) -> int:
    for kind, code in STATUS_FOR:
        if isinstance(exc, kind):
            return code
    return 500


def create_app(config: Config, stores: Stores, receivers: ReceiverSet | None = None) -> FastAPI:
    """``receivers``: the daemon's DICOM receivers, changed over /xapi/dicomscp (None without a daemon)."""

    app = FastAPI(
        title="dicomd",
        version=VERSION,
        description="XNAT-shaped API of dicomd: import, prearchive, archive, DICOM dump, mappings.",
        docs_url=None,  # served by dicomd.http.docs from local files, not a CDN
        redoc_url=None,
    )
    app.state.config = config
    app.state.stores = stores
    app.state.auth = Auth(stores.catalog)
    app.state.mappings = MappingStore(stores.catalog)
    app.state.throttle = LoginThrottle(audit=stores.catalog.event)
    app.state.started = time.time()
    app.state.receivers = receivers
    app.state.import_jobs = ImportJobs(config.http.max_async_imports, config.http.max_import_statuses)

    @app.exception_handler(DicomdError)
    async def _domain_error(_request: Request, exc: DicomdError) -> PlainTextResponse:
        status = status_for(exc)
        if status >= 500:
            logger.error("request failed: %s: %s", type(exc).__name__, escape(exc))
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
        return PlainTextResponse(without_paths(str(exc), config.data_dir), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(_request: Request, exc: RequestValidationError) -> PlainTextResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return PlainTextResponse(f"invalid request: {problems}", status_code=400)

    # snapshots before prearchive and archive: their catch-all session paths would take its paths
    for module in (site, auth_routes, imports, status, snapshots, prearchive, archive, dicomdump, xapi, dicomscp,
                   processors):
        app.include_router(module.router)
    add_local_docs(app)
    app.add_middleware(LoginGate, auth=app.state.auth, throttle=app.state.throttle)
    app.add_middleware(HeadAsGet)
    app.add_middleware(BodyLimit, http=config.http)  # bounds bodies before anything reads them
    app.add_middleware(SecurityHeaders)  # outermost: on every response, refusals included
    return app


class HeadAsGet:
    """HEAD on any GET path: the GET's status and headers, no body (pyxnat sends HEADs)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body"):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


# ---------------------------------------------------------------- login gate


class LoginGate:
    """Pure ASGI middleware: every request but PUBLIC_PATHS needs a JSESSIONID or basic auth.

    The user goes into ``scope["state"]["user"]``; how they logged in into ``...["login"]``.
    Streaming bodies pass through untouched (uploads are never buffered here).
    """

    def __init__(self, app: Callable[..., Awaitable[None]], auth: Auth, throttle: LoginThrottle | None = None) -> None:
        self.app = app
        self.auth = auth
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/REST/"):  # XNAT's old alias of /data
            scope = {**scope, "path": "/data/" + scope["path"][len("/REST/"):]}
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        address = (scope.get("client") or ("", 0))[0]
        try:
            found = await run_in_threadpool(identify, self.auth, headers, self.throttle, address)
        except RateLimited as exc:
            await PlainTextResponse(str(exc), status_code=429, headers={"Retry-After": str(exc.retry_after)})(
                scope, receive, send)
            return
        if found is None:
            response = PlainTextResponse(
                "Login required: use HTTP basic auth or a JSESSIONID from /data/JSESSION.",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="dicomd"'},
            )
            await response(scope, receive, send)
            return
        user, login = found
        refusal = cross_site_refusal(scope["method"], headers, login["via"])
        if refusal is not None:
            await PlainTextResponse(refusal, status_code=403)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["user"] = user
        state["login"] = login
        await self.app(scope, receive, send)


def identify(auth: Auth, headers: dict[str, str], throttle: LoginThrottle | None = None,
             address: str = "") -> tuple[User, dict[str, Any]] | None:
    """(user, {"via": "session"|"basic", "session": id, "token": bool}) from the cookie or basic
    auth, else None; "token" says the basic-auth credentials were an alias token's."""
    session_id = cookie_value(headers.get("cookie", ""), COOKIE)
    credentials = basic_credentials(headers.get("authorization", ""))
    basic = None
    if credentials is not None:  # checked even beside a cookie: wrong credentials are a 401
        basic = check_password(auth, throttle, *credentials, address, "basic")
        if basic is None:
            return None
    if session_id:
        user = auth.session_user(session_id)
        if user is not None and (basic is None or basic.name == user.name):
            return user, {"via": "session", "session": session_id}
    if basic is not None and credentials is not None:
        return basic, {"via": "basic", "session": "", "token": not auth.has_user(credentials[0])}
    return None


def cookie_value(header: str, name: str) -> str:
    if not header:
        return ""
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # noqa: BLE001 - a malformed cookie header is just no cookie
        return ""
    morsel = jar.get(name)
    return morsel.value if morsel else ""


def basic_credentials(header: str) -> tuple[str, str] | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None
