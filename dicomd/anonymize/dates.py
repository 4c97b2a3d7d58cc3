"""Shifting DICOM DA, DT and TM values, legal and common illegal forms. Pure.

A value is either shifted correctly or reported as unparseable (None / ""), never mangled: the
profile removes what it cannot shift. Handled forms:

- DA: `YYYYMMDD`; ACR-NEMA `YYYY.MM.DD`; ISO `YYYY-MM-DD` (illegal, common); ranges `A-B`, `-B`,
  `A-` (query form, seen in stored data too). A shifted DA is written in the legal form.
- DT: any legal precision (`YYYY` ... `YYYYMMDDHHMMSS.FFFFFF`), an optional UTC offset `&ZZXX`,
  ranges of those; the precision and the offset are kept.
- TM: `HH`, `HHMM`, `HHMMSS(.F{1,6})`, ACR-NEMA `HH:MM:SS`; shifting by whole days leaves a time
  of day as it is, so a TM is only validated.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from types import MappingProxyType

_DT_PART = r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?"
_DT = re.compile(rf"^{_DT_PART}$")
_DA_FORMS = (
    (re.compile(r"^(\d{4})(\d{2})(\d{2})$"), "legal"),
    (re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})$"), "acr-nema"),
    (re.compile(r"^(\d{4})-(\d{2})-(\d{2})$"), "iso"),
)
_TM = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(\.\d{1,6})?)?)?$")
UNITS = MappingProxyType({
    "seconds": 1, "second": 1, "s": 1,
    "minutes": 60, "minute": 60, "m": 60,
    "hours": 3600, "hour": 3600, "h": 3600,
    "days": 86400, "day": 86400, "d": 86400,
})


def _one_da(value: str, days: int) -> str | None:
    for pattern, _form in _DA_FORMS:
        m = pattern.match(value)
        if m:
            try:
                parsed = datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)))
                return (parsed + timedelta(days=days)).strftime("%Y%m%d")
            except (ValueError, OverflowError):
                return None
    return None


def shift_da_value(value: str, days: int) -> str | None:
    """One DA value (or range) shifted by whole days; None when it is not a date."""
    value = value.strip()
    if not value:
        return ""
    single = _one_da(value, days)
    if single is not None:
        return single
    if value.count("-") == 1:  # a range; ISO dates (two dashes) were tried above
        start, end = (part.strip() for part in value.split("-"))
        if not start and not end:
            return None
        parts = [_one_da(p, days) if p else "" for p in (start, end)]
        if None in parts:
            return None
        return "-".join(parts)  # type: ignore[arg-type]
    return None


def shift_da(value: str, days: int) -> str:
    """Shift a DA value by whole days; '' if it does not parse."""
    return shift_da_value(value, days) or ""


def _offset_ok(tz: str | None) -> bool:
    return tz is None or (int(tz[1:3]) <= 14 and int(tz[3:5]) < 60)


def _one_dt(value: str, seconds: int) -> str | None:
    m = _DT.match(value)
    if not m or not _offset_ok(m.group(8)):
        return None
    year, month, day, hour, minute, sec, frac, tz = m.groups()
    if frac and not sec:
        return None
    try:
        moment = datetime(int(year), int(month or 1), int(day or 1), int(hour or 0), int(minute or 0),
                          int(sec or 0)) + timedelta(seconds=seconds)
    except (ValueError, OverflowError):
        return None
    if not 1 <= moment.year <= 9999:
        return None
    parts = [f"{moment.year:04d}", f"{moment.month:02d}", f"{moment.day:02d}",
             f"{moment.hour:02d}", f"{moment.minute:02d}", f"{moment.second:02d}"]
    given = sum(1 for p in (year, month, day, hour, minute, sec) if p)
    return "".join(parts[:given]) + (frac or "") + (tz or "")


def shift_dt_value(value: str, seconds: int) -> str | None:
    """One DT value (or range) shifted by `seconds`, precision and offset kept; None if not a DT."""
    value = value.strip()
    if not value:
        return ""
    single = _one_dt(value, seconds)
    if single is not None:
        return single
    for i, char in enumerate(value):  # a range: the '-' that splits two valid DTs (or an open end)
        if char != "-":
            continue
        start, end = value[:i].strip(), value[i + 1:].strip()
        if not start and not end:
            continue
        parts = [_one_dt(p, seconds) if p else "" for p in (start, end)]
        if None not in parts:
            return "-".join(parts)  # type: ignore[arg-type]
    # ISO-like forms (2020-01-31 or 2020-01-31T12:00:00): only the date part is reliable
    da = shift_da_value(value[:10], seconds // 86400) if seconds % 86400 == 0 and len(value) == 10 else None
    return da


def shift_dt(value: str, seconds: int) -> str:
    """Shift a DT value by seconds, keeping its precision and UTC offset; '' if it does not parse."""
    return shift_dt_value(value, seconds) or ""


def valid_tm(value: str) -> bool:
    value = value.strip()
    for part in value.split("-") if value.count("-") == 1 else [value]:
        part = part.strip()
        if not part:
            continue
        m = _TM.match(part)
        if not m:
            return False
        hh, mm, ss = int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)
        if hh > 23 or mm > 59 or ss > 60:
            return False
    return bool(value)


def shift_value(vr: str, value: str, days: int) -> str:
    """A date-ish value moved by whole days (TM is returned unchanged); '' if it does not parse."""
    return shift_by_days(vr, value, days) or ""


def shift_by_days(vr: str, value: str, days: int) -> str | None:
    """A DA / DT / TM value moved by whole days; None when the value is not of its VR's form."""
    if vr == "DA":
        return shift_da_value(value, days)
    if vr == "DT":
        return shift_dt_value(value, days * 86400)
    if vr == "TM":
        return value.strip() if valid_tm(value) or not value.strip() else None
    return value


def parse_units(units: str) -> int:
    try:
        return UNITS[units.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown increment unit {units!r} (use seconds, minutes, hours or days)") from None
