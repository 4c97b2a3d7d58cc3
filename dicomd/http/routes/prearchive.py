"""`/data/prearchive...` listings and session actions, `/data/services/prearchive/{move,delete,rebuild}`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from dicomd.auth import MANAGE, READ, User
from dicomd.catalog import PREARCHIVE, SessionRow
from dicomd.stores import Stores
from dicomd.errors import InvalidInput
from dicomd.http import browse, operations, targets
from dicomd.http.app import current_user, stores_of
from dicomd.http.params import params
from dicomd.http.results import pick_format, result_set, uri_list
from dicomd.http.security import shown_to
from dicomd.prearchive import xnat_row

router = APIRouter()

COLUMNS = ("project", "timestamp", "lastmod", "uploaded", "scan_date", "scan_time", "subject", "folderName",
           "name", "tag", "status", "url", "autoarchive", "prevent_anon", "prevent_auto_commit", "SOURCE",
           "VISIT", "PROTOCOL", "TIMEZONE", "scans", "instances", "modalities", "reason", "custom")


def rows_for(stores: Stores, user: User, sessions: list[SessionRow]) -> list[dict[str, Any]]:
    return [_row(stores, user, s) for s in sessions if user.can(READ, s.project)]


def _row(stores: Stores, user: User, session: SessionRow) -> dict[str, Any]:
    return shown_to(user, xnat_row(session, stores.config))


def _listing(request: Request, projects: list[str] | None, fmt: str | None) -> Response:
    stores, user = stores_of(request), current_user(request)
    sessions = stores.catalog.sessions(PREARCHIVE, projects=projects)
    return result_set(rows_for(stores, user, sessions), pick_format(fmt), columns=COLUMNS, title="prearchive")


@router.get("/data/prearchive", summary="Every prearchive session the caller may read")
@router.get("/data/prearchive/projects", include_in_schema=False)
def list_all(request: Request, format: str | None = None) -> Response:
    return _listing(request, None, format)


@router.get("/data/prearchive/projects/{projects}", summary="Prearchive sessions of one project or a comma list")
def list_projects(request: Request, projects: str, format: str | None = None) -> Response:
    names = [p for p in projects.split(",") if p]
    ids = operations.readable_projects(stores_of(request), current_user(request), names)
    return _listing(request, ids, format)


@router.get("/data/prearchive/projects/{project}/{timestamp}/{label}", summary="One session (or format=zip)")
@router.get("/data/prearchive/projects/{project}/{timestamp}/{label}/{rest:path}",
            summary="Scans, resources, files, logs of a session; zip downloads")
def session_get(request: Request, project: str, timestamp: str, label: str, rest: str = "",
                format: str | None = None) -> Response:
    stores, user = stores_of(request), current_user(request)
    targets.check_names(project, timestamp, label, rest)
    target = targets.Target(PREARCHIVE, project, label=label, timestamp=timestamp)
    user.require(READ, target.project)
    session = targets.session_for(stores.catalog, target)
    fmt = "zip" if (format or "").lower() == "zip" else pick_format(format)
    base = "/data" + session.url
    return browse.respond(
        stores.catalog, stores.layout, session, base, rest.split("/"), fmt,
        lambda: result_set([_row(stores, user, session)], "json" if fmt == "zip" else fmt, columns=COLUMNS),
    )


@router.delete("/data/prearchive/projects/{project}/{timestamp}/{label}", summary="Delete a session")
def session_delete(request: Request, project: str, timestamp: str, label: str) -> Response:
    stores, user = stores_of(request), current_user(request)
    (session,) = operations.prearchive_sessions(stores, user, [f"/prearchive/projects/{project}/{timestamp}/{label}"],
                                                MANAGE)
    operations.delete(stores, user, session)
    return result_set([{**_row(stores, user, session), "status": "DELETED"}], "json", columns=COLUMNS)


@router.post("/data/prearchive/projects/{project}/{timestamp}/{label}",
             summary="action=build|rebuild|commit|move|set-status (newProject=, overwrite=, status=)")
async def session_post(request: Request, project: str, timestamp: str, label: str) -> Response:
    stores, user = stores_of(request), current_user(request)
    given = await params(request)
    action = given.get("action").lower()
    src = f"/prearchive/projects/{project}/{timestamp}/{label}"

    def run() -> Response:
        (session,) = operations.prearchive_sessions(stores, user, [src], READ)
        if action in ("build", "rebuild"):
            outcome = (operations.build if action == "build" else operations.rebuild)(stores, user, session)
            return result_set([_row(stores, user, stores.catalog.session(session.id))],
                              pick_format(given.get("format")), columns=COLUMNS)
        if action in ("commit", "archive"):
            outcome = operations.archive(stores, user, session,
                                         overwrite=operations.overwrite_policy(given.get("overwrite")),
                                         new_project=given.get("newProject", "project"))
            return uri_list([outcome.uri], request.headers.get("accept", ""))
        if action == "move":
            outcome = operations.move(stores, user, session, _new_project(given.get("newProject")))
            return uri_list([outcome.uri], request.headers.get("accept", ""))
        if action == "set-status":
            outcome = operations.set_status(stores, user, session, given.get("status").upper())
            return result_set([_row(stores, user, stores.catalog.session(session.id))],
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
            target = operations.project_id(stores, new_project) if user.admin else new_project
            sessions = operations.prearchive_sessions(stores, user, srcs, MANAGE)
            user.require("upload", target)
            outcomes = [operations.move(stores, user, s, new_project) for s in sessions]
            rows = [_row(stores, user, stores.catalog.session(o.before.id)) for o in outcomes]
        elif operation == "delete":
            sessions = operations.prearchive_sessions(stores, user, srcs, MANAGE)
            for session in sessions:
                operations.delete(stores, user, session)
            rows = [{**_row(stores, user, s), "status": "DELETED"} for s in sessions]
        elif operation == "rebuild":
            sessions = operations.prearchive_sessions(stores, user, srcs, "upload")
            for session in sessions:
                operations.rebuild(stores, user, session)
            rows = [_row(stores, user, stores.catalog.session(s.id)) for s in sessions]
        else:
            raise InvalidInput(f"unknown prearchive operation {operation!r} (move, delete, rebuild)")
        return result_set(rows, fmt, columns=COLUMNS, title=operation)

    return await run_in_threadpool(run)
