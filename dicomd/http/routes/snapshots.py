"""Snapshots as PNG: a session's contact sheet and each scan's image, for prearchive and archive sessions.

XNAT's paths (`/xapi/.../experiments/{session}/scan/{scan}/snapshot[/grid/4X4]` and the per-scan
`resources/SNAPSHOTS/files/{label}_{scan}_qc[_t].png`) and a plain `.../snapshot.png` on every
session and scan uri. Included before the prearchive and archive routers, whose catch-all paths
would take these otherwise. Readable by whoever may read the session.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from dicomd import snapshots
from dicomd.http import targets
from dicomd.http.context import current_user, stores_of
from dicomd.http.results import pick_format, result_set
from dicomd.layout import SessionRef
from dicomd.snapshots import Picture

router = APIRouter()
ARCHIVE_PREFIXES = ("/data/projects", "/data/archive/projects")
_NO_STORE = {"Cache-Control": "no-store"}  # a picture may show patient data


def _png(picture: Picture) -> Response:
    return Response(picture.data, media_type=picture.media_type, headers=_NO_STORE)


def _prearchive(project: str, timestamp: str, label: str, *more: str) -> SessionRef:
    targets.check_names(project, timestamp, label, *more)
    return SessionRef.prearchive(project, timestamp, label)


def _archive(project: str, subject: str, label: str, *more: str) -> SessionRef:
    targets.check_names(project, subject, label, *more)
    return SessionRef.archive(project, subject, label)


async def _sheet(request: Request, ref: SessionRef, size: int) -> Response:
    stores, user = stores_of(request), current_user(request)
    return _png(await run_in_threadpool(snapshots.session_sheet, stores, user, ref, size=size))


async def _scan(request: Request, ref: SessionRef, scan: str, size: int, grid: str = "") -> Response:
    stores, user = stores_of(request), current_user(request)
    return _png(await run_in_threadpool(snapshots.scan_picture, stores, user, ref, scan, size=size, grid=grid))


async def _files(request: Request, ref: SessionRef, scan: str, fmt: str | None) -> Response:
    stores, user = stores_of(request), current_user(request)
    base = request.url.path.rsplit("/resources/", 1)[0]
    rows = await run_in_threadpool(snapshots.snapshot_files, stores, user, ref, scan, base)
    return result_set(rows, pick_format(fmt), title="SNAPSHOTS")


async def _file(request: Request, ref: SessionRef, scan: str, name: str) -> Response:
    stores, user = stores_of(request), current_user(request)
    return _png(await run_in_threadpool(snapshots.snapshot_file, stores, user, ref, scan, name))


# ---------------------------------------------------------------- prearchive

_PRE = "/data/prearchive/projects/{project}/{timestamp}/{label}"


@router.get(_PRE + "/snapshot.png", summary="Contact sheet of a prearchive session (PNG, one tile per scan)")
async def prearchive_sheet(request: Request, project: str, timestamp: str, label: str, size: int = 256) -> Response:
    return await _sheet(request, _prearchive(project, timestamp, label), size)


@router.get(_PRE + "/scans/{scan}/snapshot.png", summary="One scan's middle image (PNG); grid=4X4 for a montage")
async def prearchive_scan(request: Request, project: str, timestamp: str, label: str, scan: str, size: int = 256,
                          grid: str = "") -> Response:
    return await _scan(request, _prearchive(project, timestamp, label, scan), scan, size, grid)


@router.get(_PRE + "/scans/{scan}/resources/SNAPSHOTS/files", summary="XNAT's SNAPSHOTS resource of a scan")
async def prearchive_files(request: Request, project: str, timestamp: str, label: str, scan: str,
                           format: str | None = None) -> Response:
    return await _files(request, _prearchive(project, timestamp, label, scan), scan, format)


@router.get(_PRE + "/scans/{scan}/resources/SNAPSHOTS/files/{name}", include_in_schema=False)
async def prearchive_file(request: Request, project: str, timestamp: str, label: str, scan: str,
                          name: str) -> Response:
    return await _file(request, _prearchive(project, timestamp, label, scan, name), scan, name)


# ---------------------------------------------------------------- archive (both of XNAT's path forms)


async def archive_sheet(request: Request, project: str, label: str, subject: str = "", size: int = 256) -> Response:
    return await _sheet(request, _archive(project, subject, label), size)


async def archive_scan(request: Request, project: str, label: str, scan: str, subject: str = "", size: int = 256,
                       grid: str = "") -> Response:
    return await _scan(request, _archive(project, subject, label, scan), scan, size, grid)


async def archive_files(request: Request, project: str, label: str, scan: str, subject: str = "",
                        format: str | None = None) -> Response:
    return await _files(request, _archive(project, subject, label, scan), scan, format)


async def archive_file(request: Request, project: str, label: str, scan: str, name: str,
                       subject: str = "") -> Response:
    return await _file(request, _archive(project, subject, label, scan, name), scan, name)


for _prefix in ARCHIVE_PREFIXES:
    for _middle in ("", "/subjects/{subject}"):
        _doc = _prefix == ARCHIVE_PREFIXES[0] and not _middle
        _session = f"{_prefix}/{{project}}{_middle}/experiments/{{label}}"
        router.add_api_route(_session + "/snapshot.png", archive_sheet, methods=["GET"], include_in_schema=_doc,
                             summary="Contact sheet of an archived session (PNG)")
        router.add_api_route(_session + "/scans/{scan}/snapshot.png", archive_scan, methods=["GET"],
                             include_in_schema=_doc, summary="One archived scan's image (PNG); grid=4X4 for a montage")
        router.add_api_route(_session + "/scans/{scan}/resources/SNAPSHOTS/files", archive_files, methods=["GET"],
                             include_in_schema=_doc, summary="XNAT's SNAPSHOTS resource of an archived scan")
        router.add_api_route(_session + "/scans/{scan}/resources/SNAPSHOTS/files/{name}", archive_file,
                             methods=["GET"], include_in_schema=False)


# ---------------------------------------------------------------- XNAT's snapshot API (/xapi)


async def xapi_snapshot(request: Request, label: str, scan: str, project: str = "", subject: str = "",
                        grid: str = "", size: int = snapshots.SNAPSHOT_SIZE) -> Response:
    if project:
        ref = _archive(project, subject, label, scan)
    else:
        targets.check_names(label, scan)
        ref = await run_in_threadpool(snapshots.find_experiment, stores_of(request), current_user(request), label)
    return await _scan(request, ref, scan, size, grid)


for _session in ("/xapi/experiments/{label}", "/xapi/projects/{project}/experiments/{label}",
                 "/xapi/projects/{project}/subjects/{subject}/experiments/{label}"):
    _doc = _session == "/xapi/projects/{project}/experiments/{label}"
    router.add_api_route(_session + "/scan/{scan}/snapshot", xapi_snapshot, methods=["GET"], include_in_schema=_doc,
                         summary="XNAT's snapshot of an archived scan (PNG)")
    router.add_api_route(_session + "/scan/{scan}/snapshot/grid/{grid}", xapi_snapshot, methods=["GET"],
                         include_in_schema=_doc, summary="XNAT's montage of an archived scan: grid COLUMNSxROWS")
