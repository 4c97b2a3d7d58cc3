"""`/xapi/dicomscp`: XNAT's DICOM SCP receiver API over dicomd.dicomscp (list, read, create, change,
enable, disable, delete). Changes reach the running receivers through the daemon's ReceiverSet
(`app.state.receivers`; None when the API runs without a daemon: changes are stored and apply at
the next start)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from dicomd import dicomscp
from dicomd.errors import InvalidInput
from dicomd.http.context import current_user, stores_of
from dicomd.http.targets import check_names
from dicomd.receiverset import ReceiverSet

router = APIRouter()
_FLAGS = {"true": True, "false": False}


def _control(request: Request) -> ReceiverSet | None:
    return getattr(request.app.state, "receivers", None)


@router.get("/xapi/dicomscp", summary="DICOM receivers with their state and counts")
def list_receivers(request: Request) -> list[dict[str, Any]]:
    return dicomscp.receivers(stores_of(request), current_user(request), _control(request))


@router.post("/xapi/dicomscp", summary="Add a receiver and start it (site admins)")
async def create(request: Request, body: Any = Body(...)) -> dict[str, Any]:
    stores, user = stores_of(request), current_user(request)
    return await run_in_threadpool(dicomscp.create, stores, user, _control(request), body)


@router.get("/xapi/dicomscp/title/{title}/{port}", summary="The receiver with this AE title and port")
def by_title(request: Request, title: str, port: int) -> dict[str, Any]:
    return dicomscp.by_title(stores_of(request), current_user(request), _control(request), title, port)


@router.get("/xapi/dicomscp/{key}", summary="One receiver (id, or config-N for the config file's)")
def get_receiver(request: Request, key: str) -> dict[str, Any]:
    check_names(key)
    return dicomscp.receiver(stores_of(request), current_user(request), _control(request), key)


@router.put("/xapi/dicomscp/{key}", summary="Change a receiver's fields (site admins); it restarts with them")
async def update(request: Request, key: str, body: Any = Body(...)) -> dict[str, Any]:
    check_names(key)
    stores, user = stores_of(request), current_user(request)
    return await run_in_threadpool(dicomscp.update, stores, user, _control(request), key, body)


@router.delete("/xapi/dicomscp/{key}", summary="Stop and remove a receiver (site admins)")
async def delete(request: Request, key: str) -> Response:
    check_names(key)
    stores, user = stores_of(request), current_user(request)
    await run_in_threadpool(dicomscp.delete, stores, user, _control(request), key)
    return Response(status_code=200)


@router.get("/xapi/dicomscp/{key}/enabled", summary="Whether a receiver is enabled")
def enabled(request: Request, key: str) -> bool:
    check_names(key)
    return bool(dicomscp.receiver(stores_of(request), current_user(request), _control(request), key)["enabled"])


@router.put("/xapi/dicomscp/{key}/enabled/{flag}", summary="Enable (start) or disable (stop) a receiver")
async def set_enabled(request: Request, key: str, flag: str) -> dict[str, Any]:
    check_names(key)
    if flag.lower() not in _FLAGS:
        raise InvalidInput("the flag is true or false")
    stores, user = stores_of(request), current_user(request)
    return await run_in_threadpool(dicomscp.set_enabled, stores, user, _control(request), key, _FLAGS[flag.lower()])
