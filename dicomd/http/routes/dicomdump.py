"""`GET /data/services/dicomdump?src=...&field=...`: a header table (`tag1, tag2, vr, value, desc`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pydicom
from fastapi import APIRouter, Request
from fastapi.responses import Response

from dicomd import dicomtags, operations
from dicomd.errors import InvalidInput
from dicomd.http import targets
from dicomd.http.context import current_user, stores_of
from dicomd.http.results import pick_format, result_set

router = APIRouter()
COLUMNS = ("tag1", "tag2", "vr", "value", "desc")


@router.get("/data/services/dicomdump", summary="DICOM header of the first file of a session, a scan, or one file")
def dicomdump(request: Request, src: str = "", format: str | None = None) -> Response:
    stores, user = stores_of(request), current_user(request)
    if not src:
        raise InvalidInput("src is required")
    target = targets.parse(src)
    session = operations.readable_session(stores, user, target)
    instances = targets.instances_for(stores.catalog, session, target)
    if not instances:
        raise InvalidInput(f"{src}: the session has no files")
    fields = [f for value in request.query_params.getlist("field") for f in value.split(",")]
    rows = dicom_dump(targets.file_path(stores.layout, instances[0]), fields)
    return result_set(rows, pick_format(format), columns=COLUMNS, title="dicomdump")


def dicom_dump(path: Path, fields: Sequence[str] = ()) -> list[dict[str, str]]:
    """XNAT's dicomdump rows for one file (pixel data not read); ``fields`` keep only those elements."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, defer_size=64 * 1024, force=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure is bad input for the caller
        raise InvalidInput(f"cannot read {path.name}: {exc}") from None
    return dicomtags.xnat_rows(ds, {_field_tag(f) for f in fields if f.strip()})


def _field_tag(text: str) -> int:
    try:
        return dicomtags.parse_tag(text)
    except dicomtags.BadTag:
        raise InvalidInput(f"field {text!r}: expected GGGGEEEE or a DICOM keyword") from None
