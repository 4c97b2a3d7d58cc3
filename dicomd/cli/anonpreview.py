"""The anonymization preview behind `dicomd prearchive preview`: one instance per scan, nothing written."""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict
from typing import Any, Sequence

import pydicom

from dicomd.catalog import SessionRow
from dicomd.errors import DicomdError

logger = logging.getLogger(__name__)

PSEUDONYM_FILE = "pseudonyms.sqlite"  # under data_dir/keys, as the anonymization package keeps it


def preview_session(stores: Any, row: SessionRow, scans: Sequence[str] = ()) -> dict[str, Any]:
    """A JSON-ready report: per scan, the attribute changes anonymization would make."""
    project = stores.config.project(row.project)
    if project is None or not project.anonymize.enabled:
        return _disabled(row, f"anonymization is not configured for project {row.project!r}: "
                              "archiving keeps the files as received")
    try:
        from dicomd.anonymize import Anonymizer, Labels, PseudonymStore
        from dicomd.anonymize import preview as diff_preview
    except ImportError:  # pragma: no cover - the package ships with dicomd
        return _disabled(row, "this build has no anonymization support")
    anonymizer = Anonymizer(row.project, project.anonymize, PseudonymStore(stores.layout.keys / PSEUDONYM_FILE))
    labels = Labels(row.project, row.subject, row.label, row.subject_from or "default", row.session_from or "default")
    firsts: dict[str, Any] = {}
    for inst in stores.catalog.instances(row.id):
        if (not scans or inst.scan_id in scans) and inst.scan_id not in firsts:
            firsts[inst.scan_id] = inst
    if scans and not firsts:
        raise DicomdError(f"no scan {', '.join(scans)} in {row.url}")
    subject, label = row.subject, row.label
    report_scans: list[dict[str, Any]] = []
    for scan_id, inst in firsts.items():
        entry: dict[str, Any] = {"scan_id": scan_id, "file": inst.path.rsplit("/", 1)[-1]}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(stores.layout.resolve(inst.path), force=True)
            subject, label = anonymizer.archive_labels(ds, labels)
            entry["burned_in"] = anonymizer.burned_in_reason(ds)
            entry["changes"] = [asdict(c) for c in diff_preview(ds, anonymizer, labels)]
        except DicomdError as exc:
            entry["error"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not hide the others
            logger.debug("preview of %s failed", inst.path, exc_info=True)
            entry["error"] = f"{type(exc).__name__}: {exc}"
        report_scans.append(entry)
    return {"session": row.url, "enabled": True, "fingerprint": anonymizer.fingerprint,
            "subject": subject, "label": label, "scans": report_scans}


def _disabled(row: SessionRow, message: str) -> dict[str, Any]:
    return {"session": row.url, "enabled": False, "message": message, "scans": []}
