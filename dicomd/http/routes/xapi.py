"""`/xapi/dicom_mappings`: custom DICOM mappings (GET, PUT /update, DELETE /{id})."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response

from dicomd.auth import MANAGE, READ, User
from dicomd.errors import Forbidden, InvalidInput
from dicomd.http.context import current_user
from dicomd.mappings import DicomMapping, MappingStore, validate

router = APIRouter()


def mapping_id(value: Any) -> int:
    """A mapping id from a request body: a positive integer (or its digits), else InvalidInput."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise InvalidInput(f"id must be a positive integer, not {value!r}"[:120])
    if not 1 <= number <= 2**63 - 1:
        raise InvalidInput("id must be a positive integer (at most 2**63 - 1)")
    return number


def _store(request: Request) -> MappingStore:
    return request.app.state.mappings


def _may_edit(user: User, scope: str, project: str) -> None:
    if scope == "site":
        if not user.admin:
            raise Forbidden("only site admins may change site-wide DICOM mappings")
    else:
        user.require(MANAGE, project)


def _visible(user: User, mapping: DicomMapping) -> bool:
    return mapping.scope == "site" or user.can(READ, mapping.scope_object_id)


@router.get("/xapi/dicom_mappings", summary="Custom DICOM mappings the caller may see")
def list_mappings(request: Request, project: str = "") -> list[dict[str, Any]]:
    user = current_user(request)
    mappings = _store(request).list(project or None)
    return [m.xnat() for m in mappings if _visible(user, m)]


@router.get("/xapi/dicom_mappings/{mapping_id}")
def get_mapping(request: Request, mapping_id: int) -> dict[str, Any]:
    mapping = _store(request).get(mapping_id)
    if not _visible(current_user(request), mapping):
        raise Forbidden("not your project's mapping")
    return mapping.xnat()


@router.put("/xapi/dicom_mappings/update", summary="Create or update one mapping (or a list)")
@router.post("/xapi/dicom_mappings/update", include_in_schema=False)
def update_mappings(request: Request, body: Any = Body(...)) -> Response:
    user = current_user(request)
    items = body if isinstance(body, list) else [body]
    if not items or not all(isinstance(i, dict) for i in items):
        raise InvalidInput("expected a JSON object (or a list of them)")
    store = _store(request)
    config = request.app.state.config
    for index, item in enumerate(items):
        values = validate(item)
        if values["scope"] == "project":
            project = config.resolve_project(values["scope_object_id"])
            if project is None:
                raise InvalidInput(f"scopeObjectId: no project {values['scope_object_id']!r}")
            items[index] = item = {**item, "scopeObjectId": project}
            values["scope_object_id"] = project
        _may_edit(user, values["scope"], values["scope_object_id"])
        if item.get("id") not in (None, "", 0):
            items[index] = item = {**item, "id": mapping_id(item["id"])}
            old = store.get(item["id"])
            _may_edit(user, old.scope, old.scope_object_id)
    saved = [store.upsert(item).xnat() for item in items]
    return JSONResponse(saved if isinstance(body, list) else saved[0])


@router.delete("/xapi/dicom_mappings/{mapping_id}", summary="Delete one mapping")
def delete_mapping(request: Request, mapping_id: int) -> Response:
    store = _store(request)
    old = store.get(mapping_id)
    _may_edit(current_user(request), old.scope, old.scope_object_id)
    store.delete(mapping_id)
    return Response(status_code=200)
