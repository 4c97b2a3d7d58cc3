"""`GET /data/services/dicomdump?src=...&field=...`: a header table (`tag1, tag2, vr, value, desc`)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from dicomd.auth import READ
from dicomd.errors import InvalidInput
from dicomd.http import browse, targets
from dicomd.http.app import current_user, stores_of
from dicomd.http.results import pick_format, result_set

router = APIRouter()
COLUMNS = ("tag1", "tag2", "vr", "value", "desc")


@router.get("/data/services/dicomdump", summary="DICOM header of the first file of a session, a scan, or one file")
def dicomdump(request: Request, src: str = "", format: str | None = None) -> Response:
    stores, user = stores_of(request), current_user(request)
    if not src:
        raise InvalidInput("src is required")
    target = targets.parse(src)
    user.require(READ, target.project)
    session = targets.session_for(stores.catalog, target)
    instances = targets.instances_for(stores.catalog, session, target)
    if not instances:
        raise InvalidInput(f"{src}: the session has no files")
    fields = [f for value in request.query_params.getlist("field") for f in value.split(",")]
    rows = browse.dicom_dump(targets.file_path(stores.layout, instances[0]), fields)
    return result_set(rows, pick_format(format), columns=COLUMNS, title="dicomdump")
