"""Custom DICOM mappings: which header values become catalog fields, and how values are typed."""

from __future__ import annotations

import datetime as dt
from typing import Any

from dicomd.http.mappings import FIELD_TYPES, DicomMapping, MappingStore, parse_tag, validate

__all__ = ["FIELD_TYPES", "DicomMapping", "MappingStore", "convert", "parse_tag", "validate"]


def convert(raw: Any, field_type: str) -> tuple[Any, str | None]:
    """A DICOM value as ``field_type``; (None, problem) when it does not parse."""
    if raw is None or raw == "":
        return None, None
    if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue":
        raw = raw[0] if len(raw) else None
        if raw is None:
            return None, None
    text = str(raw).strip()
    try:
        if field_type == "integer":
            return int(float(text)), None
        if field_type == "float":
            return float(text), None
        if field_type == "boolean":
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "y", "t"):
                return True, None
            if lowered in ("0", "false", "no", "n", "f"):
                return False, None
            raise ValueError(text)
        if field_type == "date":
            return dt.datetime.strptime(text[:8], "%Y%m%d").date().isoformat(), None
        return text, None
    except ValueError:
        return None, f"value does not parse as {field_type}"
