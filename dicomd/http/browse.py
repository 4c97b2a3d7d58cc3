"""What lies under one session URI: scans, resources, files, zip downloads, DICOM dumps.

Shared by the prearchive and archive routes; it only reads (catalog rows and the files they name).
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import pydicom
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydicom.dataset import Dataset

from dicomd.catalog import Catalog, InstanceRow, SessionRow
from dicomd.errors import InvalidInput, NotFound
from dicomd.http import targets
from dicomd.layout import Layout

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024
_XSI = {"MR": "mr", "CT": "ct", "PT": "pet", "US": "us", "CR": "cr", "DX": "dx", "MG": "mg", "NM": "nm",
        "XA": "xa", "RF": "rf", "OT": "otherDicom", "SC": "sc", "SR": "sr"}


def session_xsi(modalities: str) -> str:
    first = (modalities.split(",")[0] if modalities else "").strip().upper()
    return f"xnat:{_XSI.get(first, 'otherDicom')}SessionData"


def scan_xsi(modality: str) -> str:
    return f"xnat:{_XSI.get(modality.upper(), 'otherDicom')}ScanData"


def custom_of(value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


# ---------------------------------------------------------------- listings


def scan_rows(catalog: Catalog, session: SessionRow, base: str) -> list[dict[str, Any]]:
    """One row per scan, from the instance rows (so a session still RECEIVING has its scans too),
    with the scan's mapped custom fields when the session was built."""
    custom = {s["scan_id"]: custom_of(s.get("custom", "{}")) for s in catalog.scans(session.id)}
    grouped: dict[str, list[InstanceRow]] = {}
    for inst in catalog.instances(session.id):
        grouped.setdefault(inst.scan_id, []).append(inst)
    rows = []
    for scan_id in sorted(grouped, key=lambda s: (not s.lstrip("-").isdigit(), int(s) if s.lstrip("-").isdigit() else 0, s)):
        members = grouped[scan_id]
        first = members[0]
        row: dict[str, Any] = {
            "ID": scan_id,
            "type": first.series_description,
            "series_description": first.series_description,
            "modality": first.modality,
            "quality": "usable",
            "UID": first.series_instance_uid,
            "series_number": first.series_number,
            "file_count": len(members),
            "file_size": sum(m.size for m in members),
            "URI": f"{base}/scans/{scan_id}",
        }
        if not base.startswith("/data/prearchive"):  # xnatpy types prearchive scans itself
            row["xsiType"] = scan_xsi(first.modality)
        for key, value in custom.get(scan_id, {}).items():
            row.setdefault(key, value)
        rows.append(row)
    return rows


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


# ---------------------------------------------------------------- DICOM dump


def dicom_dump(path: Path, fields: Sequence[str] = ()) -> list[dict[str, str]]:
    """XNAT's dicomdump rows (`tag1, tag2, vr, value, desc`) for one file, pixel data skipped."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, defer_size=64 * 1024, force=True)
    except Exception as exc:  # noqa: BLE001 - any parse failure is bad input for the caller
        raise InvalidInput(f"cannot read {path.name}: {exc}") from None
    wanted = {_field_tag(f) for f in fields if f}
    rows: list[dict[str, str]] = []
    if ds.file_meta:
        _walk(ds.file_meta, rows, wanted, top="")
    _walk(ds, rows, wanted, top="")
    return rows


def _field_tag(text: str) -> int:
    from pydicom.datadict import tag_for_keyword

    value = text.strip().strip("()").replace(",", "")
    if len(value) == 8:
        try:
            return int(value, 16)
        except ValueError:
            pass
    tag = tag_for_keyword(text.strip())
    if tag is None:
        raise InvalidInput(f"field {text!r}: expected GGGGEEEE or a DICOM keyword")
    return int(tag)


def _tag_text(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _walk(ds: Dataset, rows: list[dict[str, str]], wanted: set[int], top: str, path: str = "",
          depth: int = 0) -> None:
    """Top-level elements: tag1 = their tag, tag2 empty. Nested ones: tag1 = the top-level
    sequence, tag2 = the path inside it, e.g. `[0](0008,1150)`."""
    for elem in ds:
        if wanted and not top and int(elem.tag) not in wanted:
            continue
        tag = _tag_text(int(elem.tag))
        vr = str(elem.VR)
        rows.append({
            "tag1": top or tag,
            "tag2": f"{path}{tag}" if top else "",
            "vr": vr,
            "value": "" if vr == "SQ" else _value_text(elem),
            "desc": elem.name if elem.name else "Unknown",
        })
        if vr == "SQ" and depth < 8:
            for index, item in enumerate(elem.value or []):
                inner = f"{path}{tag}[{index}]" if top else f"[{index}]"
                _walk(item, rows, set(), top or tag, inner, depth + 1)


def _value_text(elem: Any) -> str:
    if elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN") or elem.tag == 0x7FE00010:
        length = len(elem.value) if elem.value is not None and hasattr(elem.value, "__len__") else 0
        return f"<{length} bytes>"
    try:
        text = str(elem.value) if elem.VM <= 1 else "\\".join(str(v) for v in elem.value)
    except Exception:  # noqa: BLE001 - an odd value still gets a row
        text = repr(elem.value)
    return text if len(text) <= 1024 else text[:1024] + "..."


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
        return result_set(scan_rows(catalog, session, base), listing_fmt, title="scans")
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
                rows = [r for r in scan_rows(catalog, session, base) if r["ID"] in ids]
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
