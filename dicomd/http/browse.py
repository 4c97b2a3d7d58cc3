"""What lies under one session URI: scans, resources, files, zip downloads.

Shared by the prearchive and archive routes; it only reads (catalog rows and the files they name).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any, Iterator, Sequence

from fastapi.responses import FileResponse, Response, StreamingResponse

from dicomd.catalog import Catalog, InstanceRow, SessionRow
from dicomd.errors import NotFound
from dicomd.http import targets
from dicomd.layout import Layout
from dicomd.views import xnat_scan_rows

CHUNK = 1024 * 1024


# ---------------------------------------------------------------- listings


def resource_rows(instances: Sequence[InstanceRow], base: str) -> list[dict[str, Any]]:
    return [{
        "label": "DICOM",
        "xnat_abstractresource_id": "DICOM",
        "format": "DICOM",
        "content": "RAW",
        "file_count": len(instances),
        "file_size": sum(i.size for i in instances),
        "URI": f"{base}/resources/DICOM",
    }]


def file_rows(instances: Sequence[InstanceRow], base: str, *, per_scan: bool) -> list[dict[str, Any]]:
    rows = []
    for inst in instances:
        name = Path(inst.path).name
        prefix = f"{base}/scans/{inst.scan_id}" if per_scan else base
        rows.append({
            "Name": name,
            "Size": inst.size,
            "URI": f"{prefix}/resources/DICOM/files/{name}",
            "collection": "DICOM",
            "file_format": "DICOM",
            "file_content": "RAW",
            "cat_ID": inst.scan_id,
            "digest": inst.sha256,
        })
    return rows


def select_scans(instances: Sequence[InstanceRow], scan_filter: str) -> list[InstanceRow]:
    """`ALL`, one scan id, or a comma list."""
    if not scan_filter or scan_filter.upper() == "ALL":
        return list(instances)
    wanted = {s.strip() for s in scan_filter.split(",") if s.strip()}
    chosen = [i for i in instances if i.scan_id in wanted]
    if not chosen:
        raise NotFound(f"no scan {scan_filter!r} in this session")
    return chosen


# ---------------------------------------------------------------- downloads


def file_response(layout: Layout, inst: InstanceRow) -> Response:
    path = targets.file_path(layout, inst)
    if not path.is_file():
        raise NotFound(f"file {Path(inst.path).name} is missing from the stores")
    return FileResponse(path, media_type="application/dicom", filename=path.name)


class _Sink(io.RawIOBase):
    """A write-only, unseekable buffer that zipfile writes into and the response drains."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._chunks.append(bytes(data))
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def zip_stream(layout: Layout, session: SessionRow, instances: Sequence[InstanceRow]) -> Iterator[bytes]:
    """A zip of the instances, produced piece by piece (memory stays at about one chunk)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", allowZip64=True) as archive:
        for inst in instances:
            path = targets.file_path(layout, inst)
            info = zipfile.ZipInfo(f"{session.label}/scans/{inst.scan_id}/resources/DICOM/files/{path.name}")
            info.file_size = inst.size
            info.external_attr = 0o600 << 16
            with open(path, "rb") as src, archive.open(info, "w", force_zip64=inst.size > 2**31) as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
                    yield sink.take()
            yield sink.take()
    yield sink.take()


def zip_response(layout: Layout, session: SessionRow, instances: Sequence[InstanceRow], name: str) -> Response:
    if not instances:
        raise NotFound("nothing to download")
    return StreamingResponse(
        zip_stream(layout, session, instances),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{name}.zip"'},
    )


# ---------------------------------------------------------------- one dispatcher for both stages


def respond(
    catalog: Catalog,
    layout: Layout,
    session: SessionRow,
    base: str,
    rest: Sequence[str],
    fmt: str,
    session_rows: Any,
) -> Response:
    """Answer a GET below a session URI. ``session_rows()`` gives the session's own row(s);
    ``fmt`` is json, csv, html or zip."""
    from dicomd.http.results import result_set

    parts = [p for p in rest if p]
    zipped = fmt == "zip"
    listing_fmt = "json" if zipped else fmt
    instances = catalog.instances(session.id)
    if not parts:
        return zip_response(layout, session, instances, session.label) if zipped else session_rows()
    if parts == ["logs"]:
        return result_set(catalog.history(session.id), listing_fmt, title="history")
    if parts == ["scans"]:
        return result_set(xnat_scan_rows(catalog, session, base), listing_fmt, title="scans")
    if parts[0] == "scans" and len(parts) >= 2:
        chosen = select_scans(instances, parts[1])
        scan_base = f"{base}/scans/{parts[1]}"
        tail = parts[2:]
        resource = len(tail) in (2, 3) and tail[0] == "resources" and tail[2:] in ([], ["files"])
        if not tail or tail == ["files"] or resource:
            if len(tail) >= 2:
                _check_resource(tail[1])
            if zipped:
                return zip_response(layout, session, chosen, f"{session.label}_scan_{parts[1]}")
            if not tail:
                ids = {i.scan_id for i in chosen}
                rows = [r for r in xnat_scan_rows(catalog, session, base) if r["ID"] in ids]
                return result_set(rows, listing_fmt, title="scan")
            if tail[-1] == "files":
                return result_set(file_rows(chosen, scan_base, per_scan=False), listing_fmt, title="files")
            return result_set(resource_rows(chosen, scan_base), listing_fmt, title="resource")
        if tail == ["resources"]:
            return result_set(resource_rows(chosen, scan_base), listing_fmt, title="resources")
        if len(tail) == 4 and tail[0] == "resources" and tail[2] == "files":
            _check_resource(tail[1])
            return _one_file(layout, chosen, tail[3])
    if parts in (["files"], ["resources", "DICOM", "files"]):
        if zipped:
            return zip_response(layout, session, instances, session.label)
        return result_set(file_rows(instances, base, per_scan=True), listing_fmt, title="files")
    if parts == ["resources"]:
        return result_set(resource_rows(instances, base), listing_fmt, title="resources")
    raise NotFound(f"nothing at {base}/{'/'.join(parts)}")


def _check_resource(label: str) -> None:
    if label.upper() not in ("DICOM", "SECONDARY"):
        raise NotFound(f"no resource {label!r} (dicomd keeps DICOM only)")


def _one_file(layout: Layout, instances: Sequence[InstanceRow], name: str) -> Response:
    for inst in instances:
        if Path(inst.path).name == name:
            return file_response(layout, inst)
    raise NotFound(f"no file {name!r}")
