"""`GET /` (a small page), health, version and build info."""

from __future__ import annotations

import html
import time
from importlib import metadata
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from dicomd.http.context import VERSION, current_user, stores_of
from dicomd.http.routes.auth_routes import ensure_session

router = APIRouter()
_STARTED = "started"


def _dicomd_version() -> str:
    try:
        return metadata.version("dicomd")
    except metadata.PackageNotFoundError:
        return "unknown"


@router.get("/", response_class=HTMLResponse, summary="A small page: who is logged in, what is staged")
def index(request: Request) -> Response:
    user = current_user(request)
    catalog = stores_of(request).catalog
    counts = catalog.status_counts(None if user.admin else user.readable(request.app.state.config.project_ids()))
    rows = "".join(
        f"<tr><td>{html.escape(stage)}</td><td>{html.escape(status)}</td><td>{n}</td></tr>"
        for stage, by_status in sorted(counts.items())
        for status, n in sorted(by_status.items())
    )
    page = (
        "<!doctype html><html><head><title>dicomd</title></head><body>"
        f"<h1>dicomd</h1><p><span id=\"user_info\">Logged in as: &nbsp;<a href=\"/data/auth\">"
        f"{html.escape(user.name)}</a></span></p>"
        f"<p>XNAT-compatible API {VERSION}, dicomd {html.escape(_dicomd_version())}. "
        "See <a href=\"/docs\">/docs</a> for the API.</p>"
        f"<table><tr><th>stage</th><th>status</th><th>sessions</th></tr>{rows}</table></body></html>"
    )
    response = HTMLResponse(page)
    if (getattr(request.state, "login", None) or {}).get("token"):
        ensure_session(request, response)  # xnatpy's token login reads its JSESSIONID from here
    return response  # other basic-auth callers get no session row per request: /data/JSESSION makes one


@router.get("/health", summary="Liveness and catalog check; needs no login")
def health(request: Request) -> dict[str, Any]:
    stores = stores_of(request)
    stores.catalog.reader().execute("SELECT 1").fetchone()
    return {"status": "ok", "time": time.time()}


@router.get("/data/version", response_class=PlainTextResponse)
def version() -> str:
    return VERSION


@router.get("/xapi/siteConfig/buildInfo")
@router.get("/data/buildInfo")
def build_info() -> dict[str, Any]:
    return {"version": VERSION, "buildNumber": "dicomd", "commit": "", "dicomd": _dicomd_version()}


@router.get("/xapi/siteConfig/uptime")
def uptime(request: Request) -> dict[str, Any]:
    started = getattr(request.app.state, _STARTED, None) or time.time()
    seconds = int(time.time() - started)
    return {"days": seconds // 86400, "hours": seconds % 86400 // 3600, "minutes": seconds % 3600 // 60,
            "seconds": seconds % 60}
