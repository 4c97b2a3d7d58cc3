"""`/xapi/processors`: the archive-time steps per site and project (dicomd.processing)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request
from starlette.concurrency import run_in_threadpool

from dicomd import processing, processors
from dicomd.errors import Forbidden
from dicomd.http.context import current_user, stores_of
from dicomd.http.targets import check_names

router = APIRouter()
BASE = "/xapi/processors"


@router.get(BASE + "/classes", summary="The processor classes (site admins)")
def classes(request: Request) -> list[str]:
    if not current_user(request).admin:
        raise Forbidden("only site admins may list processor classes")
    return [cls for _location, _label, cls in processors.STEPS.values()]


@router.get(BASE + "/site/list", summary="The site's default steps, in order (site admins)")
def site_list(request: Request) -> list[dict[str, Any]]:
    return processing.site_list(stores_of(request), current_user(request))


@router.get(BASE + "/site/enabled", summary="The site's enabled default steps (site admins)")
def site_enabled(request: Request) -> list[dict[str, Any]]:
    return [p for p in processing.site_list(stores_of(request), current_user(request)) if p["enabled"]]


@router.get(BASE + "/site/enabled/summary", summary="The site's enabled steps, briefly (any user)")
def site_summary(request: Request) -> list[dict[str, Any]]:
    return processing.site_summary(stores_of(request), current_user(request))


@router.put(BASE + "/site", summary="Reorder or switch the site's default steps (site admins)")
async def change_site(request: Request, body: Any = Body(...)) -> list[dict[str, Any]]:
    stores, user = stores_of(request), current_user(request)
    return await run_in_threadpool(processing.change_site, stores, user, body)


@router.get(BASE + "/site/id/{name}", summary="One of the site's default steps (site admins)")
def site_processor(request: Request, name: str) -> dict[str, Any]:
    check_names(name)
    return processing.site_processor(stores_of(request), current_user(request), name)


@router.put(BASE + "/site/id/{name}", summary="Change one default step: enabled, priority (site admins)")
async def change_site_processor(request: Request, name: str, body: Any = Body(...)) -> dict[str, Any]:
    check_names(name)
    stores, user = stores_of(request), current_user(request)
    return await run_in_threadpool(processing.change_site_processor, stores, user, name, body)


@router.get(BASE + "/projects/{project}", summary="What runs for a project, in order")
def project_list(request: Request, project: str) -> list[dict[str, Any]]:
    check_names(project)
    return processing.project_list(stores_of(request), current_user(request), project)


@router.put(BASE + "/projects/{project}", summary="Reorder or switch a project's steps (owners)")
async def change_project(request: Request, project: str, body: Any = Body(...)) -> list[dict[str, Any]]:
    check_names(project)
    stores, user = stores_of(request), current_user(request)
    return await run_in_threadpool(processing.change_project, stores, user, project, body)


@router.delete(BASE + "/projects/{project}", summary="Back to the site's defaults (owners)")
async def reset_project(request: Request, project: str) -> list[dict[str, Any]]:
    check_names(project)
    stores, user = stores_of(request), current_user(request)
    return await run_in_threadpool(processing.reset_project, stores, user, project)
