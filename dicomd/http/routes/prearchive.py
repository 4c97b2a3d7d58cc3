"""`/data/prearchive...` listings and session actions, `/data/services/prearchive/{move,delete,rebuild}`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from dicomd import operations
from dicomd.auth import MANAGE, READ, UPLOAD, User
from dicomd.catalog import SessionRow
from dicomd.stores import Stores
from dicomd.errors import InvalidInput
from dicomd.http import browse, targets
from dicomd.http.context import current_user, stores_of
from dicomd.http.params import params
from dicomd.http.results import pick_format, result_set, uri_list
from dicomd.http.security import shown_to
from dicomd.layout import SessionRef
from dicomd.lifecycle import Stage
from dicomd.views import xnat_row

router = APIRouter()

COLUMNS = ("project", "timestamp", "lastmod", "uploaded", "scan_date", "scan_time", "subject", "folderName",
           "name", "tag", "status", "url", "autoarchive", "prevent_anon", "prevent_auto_commit", "SOURCE",
           "VISIT", "PROTOCOL", "TIMEZONE", "scans", "instances", "modalities", "reason", "custom", "pixel_text")


def rows_for(stores: Stores, user: User, sessions: list[SessionRow]) -> list[dict[str, Any]]:
    return [_row(stores, user, s) for s in sessions if operations.may_see_prearchive(stores, user, s.project)]


def _row(stores: Stores, user: User, session: SessionRow) -> dict[str, Any]:
    return shown_to(user, xnat_row(session, stores.config))


def _listing(request: Request, projects: list[str] | None, fmt: str | None) -> Response:
    stores, user = stores_of(request), current_user(request)
    sessions = stores.catalog.sessions(Stage.PREARCHIVE, projects=projects)
    return result_set(rows_for(stores, user, sessions), pick_format(fmt), columns=COLUMNS, title="prearchive")


@router.get("/data/prearchive", summary="Every prearchive session the caller may read")
@router.get("/data/prearchive/projects", include_in_schema=False)
def list_all(request: Request, format: str | None = None) -> Response:
    return _listing(request, None, format)


@router.get("/data/prearchive/projects/{projects}", summary="Prearchive sessions of one project or a comma list")
def list_projects(request: Request, projects: str, format: str | None = None) -> Response:
    names = [p for p in projects.split(",") if p]
    ids = operations.readable_prearchive_projects(stores_of(request), current_user(request), names)
    return _listing(request, ids, format)


@router.get("/data/prearchive/projects/{project}/{timestamp}/{label}", summary="One session (or format=zip)")
@router.get("/data/prearchive/projects/{project}/{timestamp}/{label}/{rest:path}",
            summary="Scans, resources, files, logs of a session; zip downloads")
def session_get(request: Request, project: str, timestamp: str, label: str, rest: str = "",
                format: str | None = None) -> Response:
    stores, user = stores_of(request), current_user(request)
    targets.check_names(project, timestamp, label, rest)
    session = operations.readable_session(stores, user, SessionRef.prearchive(project, timestamp, label))
    fmt = "zip" if (format or "").lower() == "zip" else pick_format(format)
    base = SessionRef.of(session).uri
    return browse.respond(
        stores.catalog, stores.layout, session, base, rest.split("/"), fmt,
        lambda: result_set([_row(stores, user, session)], "json" if fmt == "zip" else fmt, columns=COLUMNS),
    )


@router.delete("/data/prearchive/projects/{project}/{timestamp}/{label}", summary="Delete a session")
def session_delete(request: Request, project: str, timestamp: str, label: str) -> Response:
    stores, user = stores_of(request), current_user(request)
    src = targets.parse(SessionRef.prearchive(project, timestamp, label).url)
    (session,) = operations.prearchive_sessions(stores, user, [src], MANAGE)
    operations.delete(stores, user, session)
    return result_set([{**_row(stores, user, session), "status": "DELETED"}], "json", columns=COLUMNS)


@router.post("/data/prearchive/projects/{project}/{timestamp}/{label}",
             summary="action=build|rebuild|commit|move|set-status (newProject=, overwrite=, status=, confirmText=)")
async def session_post(request: Request, project: str, timestamp: str, label: str) -> Response:
    stores, user = stores_of(request), current_user(request)
    given = await params(request)
    action = given.get("action").lower()
    src = SessionRef.prearchive(project, timestamp, label).url

    def run() -> Response:
        (session,) = operations.prearchive_sessions(stores, user, [targets.parse(src)], READ)
        if action in ("build", "rebuild"):
            outcome = (operations.build if action == "build" else operations.rebuild)(stores, user, session)
            return result_set([_row(stores, user, outcome.current)],
                              pick_format(given.get("format")), columns=COLUMNS)
        if action in ("commit", "archive"):
            outcome = operations.archive(stores, user, session,
                                         overwrite=operations.overwrite_policy(given.get("overwrite")),
                                         new_project=given.get("newProject", "project"),
                                         confirm_text=bool(given.flag("confirmText", default=False)))
            return uri_list([outcome.uri], request.headers.get("accept", ""))
        if action == "move":
            outcome = operations.move(stores, user, session, _new_project(given.get("newProject")))
            return uri_list([outcome.uri], request.headers.get("accept", ""))
        if action == "set-status":
            outcome = operations.set_status(stores, user, session, given.get("status").upper())
            return result_set([_row(stores, user, outcome.current)],
                              pick_format(given.get("format")), columns=COLUMNS)
        raise InvalidInput(f"unsupported action {action!r} (build, rebuild, commit, move, set-status)")

    return await run_in_threadpool(run)


def _new_project(value: str) -> str:
    if not value:
        raise InvalidInput("newProject is required")
    return value


@router.post("/data/services/prearchive/{operation}", summary="move | delete | rebuild; src repeatable")
async def service(request: Request, operation: str) -> Response:
    stores, user = stores_of(request), current_user(request)
    given = await params(request)
    srcs = given.all("src")
    fmt = pick_format(given.get("format"))

    def run() -> Response:
        if operation == "move":
            new_project = _new_project(given.get("newProject"))
            outcomes = operations.move_all(stores, user, targets.parse_sources(srcs), new_project)
            rows = [_row(stores, user, o.current) for o in outcomes]
        elif operation == "delete":
            sessions = operations.prearchive_sessions(stores, user, targets.parse_sources(srcs), MANAGE)
            outcomes = [operations.delete(stores, user, s) for s in sessions]
            rows = [{**_row(stores, user, o.before), "status": "DELETED"} for o in outcomes]
        elif operation == "rebuild":
            sessions = operations.prearchive_sessions(stores, user, targets.parse_sources(srcs), UPLOAD)
            outcomes = [operations.rebuild(stores, user, s) for s in sessions]
            rows = [_row(stores, user, o.current) for o in outcomes]
        else:
            raise InvalidInput(f"unknown prearchive operation {operation!r} (move, delete, rebuild)")
        return result_set(rows, fmt, columns=COLUMNS, title=operation)

    return await run_in_threadpool(run)
