"""Login: `/data/JSESSION`, `/data/services/auth`, `/data/auth`, alias tokens."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool

from dicomd.auth import Auth
from dicomd.errors import Forbidden, TooLarge
from dicomd.http.context import COOKIE, current_user
from dicomd.http.limits import LOGIN_FORM_BYTES
from dicomd.http.security import check_password

router = APIRouter()


def _auth(request: Request) -> Auth:
    return request.app.state.auth


def _address(request: Request) -> str:
    return request.client.host if request.client else ""


def _set_cookie(request: Request, response: Response, session_id: str) -> None:
    secure = request.url.scheme == "https"
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="lax", path="/", secure=secure)


def session_for(request: Request) -> tuple[str, bool]:
    """(the caller's session id, whether it is new): a basic-auth caller gets a new one."""
    login = getattr(request.state, "login", {}) or {}
    if login.get("via") == "session":
        return str(login["session"]), False
    return _auth(request).open_session(current_user(request), via_token=bool(login.get("token"))), True


def ensure_session(request: Request, response: Response) -> str:
    session_id, new = session_for(request)
    if new:
        _set_cookie(request, response, session_id)
    return session_id


@router.get("/data/JSESSION", response_class=PlainTextResponse, summary="The session id (a new one for basic auth)")
@router.post("/data/JSESSION", response_class=PlainTextResponse, include_in_schema=False)
def jsession(request: Request) -> Response:
    session_id, new = session_for(request)
    response = PlainTextResponse(session_id)
    if new:
        _set_cookie(request, response, session_id)
    return response


@router.delete("/data/JSESSION", response_class=PlainTextResponse, summary="Log out")
def logout(request: Request) -> Response:
    login = getattr(request.state, "login", {}) or {}
    if login.get("via") == "session":
        _auth(request).close_session(str(login["session"]))
    response = PlainTextResponse("")
    response.delete_cookie(COOKIE, path="/")
    return response


@router.put("/data/services/auth", response_class=PlainTextResponse, summary="Form login; returns a session id")
@router.post("/data/services/auth", response_class=PlainTextResponse, include_in_schema=False)
async def form_login(request: Request) -> Response:
    fields = await _form_fields(request)
    name, password = fields.get("username", ""), fields.get("password", "")
    auth = _auth(request)
    user = await run_in_threadpool(check_password, auth, request.app.state.throttle, name, password,
                                   _address(request), "form")
    if user is None:
        return PlainTextResponse("Authentication failed.", status_code=401)
    session_id = await run_in_threadpool(lambda: auth.open_session(user, via_token=not auth.has_user(name)))
    response = PlainTextResponse(session_id)
    _set_cookie(request, response, session_id)
    return response


async def _form_fields(request: Request) -> dict[str, str]:
    """username/password from a urlencoded or multipart form, or the query string."""
    fields = {k: v for k, v in request.query_params.items()}
    content_type = request.headers.get("content-type", "")
    if "multipart/form-data" in content_type:
        form = await request.form(max_files=0, max_fields=10)
        fields.update({k: v for k, v in form.items() if isinstance(v, str)})
        return fields
    body = b""
    async for chunk in request.stream():  # counted as it arrives (BodyLimit bounds it before that)
        body += chunk
        if len(body) > LOGIN_FORM_BYTES:
            raise TooLarge("login form too large")
    for key, values in parse_qs(body.decode("utf-8", "replace")).items():
        fields[key] = values[0]
    return fields


@router.get("/data/auth", response_class=PlainTextResponse, summary="Who is logged in")
def whoami(request: Request) -> str:
    return f"User '{current_user(request).name}' is logged in"


@router.get("/data/services/tokens/issue", summary="An alias token usable as basic-auth credentials")
def issue_token(request: Request) -> JSONResponse:
    login = getattr(request.state, "login", {}) or {}
    if login.get("token") or (login.get("via") == "session" and _auth(request).session_via_token(login["session"])):
        raise Forbidden("a login with an alias token cannot issue tokens: log in with the password")
    token = _auth(request).issue_token(current_user(request))
    body: dict[str, Any] = {
        "alias": token.alias,
        "secret": token.secret,
        "xdatUserId": token.user,
        "singleUse": False,
        "enabled": True,
        "estimatedExpirationTime": int(token.expires_at * 1000),
        "expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(token.expires_at)),
    }
    return JSONResponse(body)


@router.get("/data/services/tokens/invalidate/{alias}/{secret}", summary="Revoke an alias token")
def invalidate_token(request: Request, alias: str, secret: str) -> PlainTextResponse:
    auth = _auth(request)
    user = check_password(auth, request.app.state.throttle, alias, secret, _address(request), "token")
    me = current_user(request)
    if user is None or (user.name != me.name and not me.admin):
        raise Forbidden("not your token")
    auth.revoke_token(alias)
    return PlainTextResponse("")
