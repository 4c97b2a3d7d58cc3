"""Read models both faces show: prearchive and archive rows, scan summaries, XNAT's date formats.

The keys and values of these rows are contracts (xnatpy, pyxnat and operators' scripts read them).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Iterable

from dicomd.catalog import Catalog, InstanceRow, SessionRow
from dicomd.config import Config
from dicomd.layout import SessionRef

_XSI = {"MR": "mr", "CT": "ct", "PT": "pet", "US": "us", "CR": "cr", "DX": "dx", "MG": "mg", "NM": "nm",
        "XA": "xa", "RF": "rf", "OT": "otherDicom", "SC": "sc", "SR": "sr"}
_AUTO_ARCHIVE = {0: "Manual", 1: "AutoArchive", 4: "AutoArchive", 5: "AutoArchiveOverwrite"}


# ---------------------------------------------------------------- dates and times


def local_stamp(value: float | None) -> str:
    """A catalog time (seconds since the epoch) as local 'YYYY-MM-DD HH:MM:SS'; '' for none."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) if value else ""


def xnat_stamp(value: float | None) -> str:
    """XNAT's prearchive time, with milliseconds (xnatpy parses it with '%Y-%m-%d %H:%M:%S.%f')."""
    if not value:
        return ""
    return local_stamp(value) + f".{int(value * 1000) % 1000:03d}"


def xnat_date(value: str) -> str:
    """A DICOM date (YYYYMMDD) as YYYY-MM-DD; anything else unchanged."""
    return f"{value[:4]}-{value[4:6]}-{value[6:8]}" if len(value) >= 8 and value[:8].isdigit() else value


def xnat_time(value: str) -> str:
    """A DICOM time (HHMMSS...) as HH:MM:SS; anything else unchanged."""
    return f"{value[:2]}:{value[2:4]}:{value[4:6]}" if len(value) >= 6 and value[:6].isdigit() else value


# ---------------------------------------------------------------- XNAT types


def session_xsi(modalities: str) -> str:
    first = (modalities.split(",")[0] if modalities else "").strip().upper()
    return f"xnat:{_XSI.get(first, 'otherDicom')}SessionData"


def scan_xsi(modality: str) -> str:
    return f"xnat:{_XSI.get(modality.upper(), 'otherDicom')}ScanData"


def custom_of(value: str) -> dict[str, Any]:
    """Mapped custom fields stored as JSON; {} when absent or not an object."""
    try:
        parsed = json.loads(value or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


# ---------------------------------------------------------------- sessions


def xnat_row(row: SessionRow, config: Config | None = None) -> dict[str, Any]:
    """A prearchive listing row with XNAT's columns plus dicomd's counts."""
    project = config.project(row.project) if config else None
    auto = row.auto_archive if row.auto_archive is not None else (project.auto_archive if project else 0)
    return {
        "project": row.project,
        "timestamp": row.timestamp,
        "lastmod": xnat_stamp(row.last_received_at or row.updated_at),
        "uploaded": xnat_stamp(row.created_at),
        "scan_date": xnat_date(row.scan_date),
        "scan_time": xnat_time(row.scan_time),
        "subject": row.subject,
        "folderName": row.label,
        "name": row.label,
        "tag": row.study_instance_uid,
        "status": row.status,
        "url": row.url,
        "autoarchive": _AUTO_ARCHIVE.get(int(auto or 0), "Manual"),
        "prevent_anon": "true" if row.prevent_anon else "false",
        "prevent_auto_commit": "false",
        "SOURCE": row.source,
        "VISIT": "",
        "PROTOCOL": "",
        "TIMEZONE": "",
        "scans": row.scans,
        "instances": row.instances,
        "modalities": row.modalities,
        "reason": row.reason,
        "custom": row.custom_fields(),
        "pixel_text": row.summary_fields().get("pixel_text"),  # the OCR check: counts and boxes, never words
    }


def archive_row(row: SessionRow) -> dict[str, Any]:
    """An archived session as `dicomd archive list --json` prints it."""
    return {
        "project": row.project,
        "subject": row.subject,
        "label": row.label,
        "study_instance_uid": row.study_instance_uid,
        "scans": row.scans,
        "instances": row.instances,
        "modalities": row.modalities,
        "scan_date": xnat_date(row.scan_date),
        "url": row.url,
        "archived_at": row.archived_at,
        "custom": row.custom_fields(),
    }


def experiment_row(row: SessionRow) -> dict[str, Any]:
    """An archived session as XNAT lists experiments (its mapped custom fields as extra columns)."""
    out: dict[str, Any] = {
        "ID": row.label,
        "label": row.label,
        "project": row.project,
        "subject_ID": row.subject,
        "subject_label": row.subject,
        "xsiType": session_xsi(row.modalities),
        "date": xnat_date(row.scan_date),
        "time": row.scan_time,
        "modality": row.modalities,
        "UID": row.study_instance_uid,
        "scans": row.scans,
        "instances": row.instances,
        "insert_date": local_stamp(row.archived_at or row.created_at),
        "URI": SessionRef.archive(row.project, row.subject, row.label).browse_uri,
    }
    for key, value in row.custom_fields().items():
        out.setdefault(key, value)
    return out


# ---------------------------------------------------------------- scans


def scan_order(scan_id: str) -> tuple[bool, int, str]:
    """Numbered scans by number, then the others (named after their series UID) by name."""
    numbered = scan_id.lstrip("-").isdigit()
    return (not numbered, int(scan_id) if numbered else 0, scan_id)


@dataclass(frozen=True)
class ScanSummary:
    """One scan as its instance rows describe it (before a build too: no scans table needed)."""

    scan_id: str
    members: tuple[InstanceRow, ...]

    @property
    def first(self) -> InstanceRow:
        return self.members[0]

    @property
    def instances(self) -> int:
        return len(self.members)

    @property
    def bytes(self) -> int:
        return sum(m.size for m in self.members)


def scan_summaries(instances: Iterable[InstanceRow]) -> list[ScanSummary]:
    """The scans of a session's instance rows, in `scan_order`; each keeps its rows in catalog order."""
    grouped: dict[str, list[InstanceRow]] = {}
    for inst in instances:
        grouped.setdefault(inst.scan_id, []).append(inst)
    return [ScanSummary(s, tuple(grouped[s])) for s in sorted(grouped, key=scan_order)]


def scan_table(catalog: Catalog, session: SessionRow) -> list[dict[str, Any]]:
    """The session's scans table; before its first build (still RECEIVING) summed from its instances."""
    scans = catalog.scans(session.id)
    if scans or not session.instances:
        return scans
    rows = [{"scan_id": s.scan_id, "series_instance_uid": s.first.series_instance_uid,
             "series_number": s.first.series_number, "description": s.first.series_description,
             "modality": s.first.modality, "instances": s.instances, "bytes": s.bytes}
            for s in scan_summaries(catalog.instances(session.id))]
    return sorted(rows, key=lambda r: (len(r["scan_id"]), r["scan_id"]))  # as `dicomd prearchive show` lists them


def xnat_scan_rows(catalog: Catalog, session: SessionRow, base: str) -> list[dict[str, Any]]:
    """XNAT's scan rows under the session uri ``base``, from the instance rows (so a session still
    RECEIVING has its scans too), with each scan's mapped custom fields once the session is built."""
    custom = {s["scan_id"]: custom_of(s.get("custom", "{}")) for s in catalog.scans(session.id)}
    rows = []
    for scan in scan_summaries(catalog.instances(session.id)):
        first = scan.first
        row: dict[str, Any] = {
            "ID": scan.scan_id,
            "type": first.series_description,
            "series_description": first.series_description,
            "modality": first.modality,
            "quality": "usable",
            "UID": first.series_instance_uid,
            "series_number": first.series_number,
            "file_count": scan.instances,
            "file_size": scan.bytes,
            "URI": f"{base}/scans/{scan.scan_id}",
        }
        if not base.startswith("/data/prearchive"):  # xnatpy types prearchive scans itself
            row["xsiType"] = scan_xsi(first.modality)
        for key, value in custom.get(scan.scan_id, {}).items():
            row.setdefault(key, value)
        rows.append(row)
    return rows
