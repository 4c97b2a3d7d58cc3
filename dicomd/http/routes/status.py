"""`GET /data/status/{id}`: the status of an upload started with `async=true` or named with
`http-session-listener=ID` (see dicomd.importjobs); `GET /data/status` lists the caller's."""

from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter, Request

from dicomd.http.context import current_user, stores_of
from dicomd.http.routes.imports import job_list
from dicomd.http.security import without_paths
from dicomd.http.targets import check_names

router = APIRouter()


def _clean(request: Request) -> Callable[[str], str]:
    """Error texts as the HTTP edge shows them: no server paths."""
    data_dir = stores_of(request).config.data_dir
    return lambda text: without_paths(text, data_dir)


@router.get("/data/status/{job_id}", summary="An upload's progress, then its result URIs or its error")
def status(request: Request, job_id: str) -> dict[str, Any]:
    check_names(job_id)
    user = current_user(request)
    return job_list(request).get(user.name, user.admin, job_id).view(_clean(request))


@router.get("/data/status", summary="The caller's upload statuses (site admins: everyone's)")
def statuses(request: Request) -> list[dict[str, Any]]:
    user = current_user(request)
    clean = _clean(request)
    return [job.view(clean) for job in job_list(request).jobs(user.name, user.admin)]
