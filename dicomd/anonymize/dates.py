"""Shifting DICOM DA and DT values. Pure."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from types import MappingProxyType

_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")
UNITS = MappingProxyType({
    "seconds": 1, "second": 1, "s": 1,
    "minutes": 60, "minute": 60, "m": 60,
    "hours": 3600, "hour": 3600, "h": 3600,
    "days": 86400, "day": 86400, "d": 86400,
})


def shift_da(value: str, days: int) -> str:
    """Shift a DA value (YYYYMMDD, also a range 'A-B') by whole days; '' if it does not parse."""
    value = value.strip()
    if not value:
        return ""
    if "-" in value:
        return "-".join(shift_da(part, days) if part else "" for part in value.split("-", 1))
    try:
        parsed = datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        return ""
    return (parsed + timedelta(days=days)).strftime("%Y%m%d")


def shift_dt(value: str, seconds: int) -> str:
    """Shift a DT value by seconds, keeping its precision and UTC offset; '' if it does not parse."""
    value = value.strip()
    if not value:
        return ""
    m = _DT.match(value)
    if not m:
        return ""
    year, month, day, hour, minute, sec, frac, tz = m.groups()
    try:
        moment = datetime(
            int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0), int(sec or 0)
        )
    except ValueError:
        return ""
    moment += timedelta(seconds=seconds)
    parts = [f"{moment.year:04d}", f"{moment.month:02d}", f"{moment.day:02d}",
             f"{moment.hour:02d}", f"{moment.minute:02d}", f"{moment.second:02d}"]
    given = sum(1 for p in (year, month, day, hour, minute, sec) if p)
    given = max(given, 3 if seconds % 86400 == 0 else 6)
    return "".join(parts[:given]) + (frac or "") + (tz or "")


def shift_value(vr: str, value: str, days: int) -> str:
    """A date-ish value moved by whole days (TM is returned unchanged)."""
    if vr == "DA":
        return shift_da(value, days)
    if vr == "DT":
        return shift_dt(value, days * 86400)
    return value


def parse_units(units: str) -> int:
    try:
        return UNITS[units.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown increment unit {units!r} (use seconds, minutes, hours or days)") from None
