"""The DicomEdit 6 functions dicomd supports. Each takes evaluated arguments and returns text.

UID functions are keyed by the project's secret when there is one (project scripts): the same input
gives the same UID in every run, and nobody without the key can recompute it. Without a key (the
site script), hashUID is a plain name-based UUID ("2.25." form) like XNAT's, and mapUID remembers
its UIDs for the lifetime of the script object.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import uuid
from dataclasses import dataclass, field

from dicomd.anonymize.dates import parse_units, shift_da, shift_dt

MAX_UID = 64


@dataclass
class UidMaker:
    key: bytes | None = None
    _mapped: dict[tuple[str, str], str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _number(self, purpose: str, value: str) -> int:
        if self.key is None:
            return uuid.uuid5(uuid.NAMESPACE_OID, value).int
        digest = hmac.new(self.key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:16], "big")

    def hash_uid(self, value: str) -> str:
        if not value:
            return ""  # nothing to hash (a missing attribute): nothing is assigned
        return f"2.25.{self._number('hashUID', value)}"

    def new_uid(self, prefix: str = "") -> str:
        return _with_prefix(prefix, uuid.uuid4().int)

    def map_uid(self, value: str, prefix: str) -> str:
        if not value:
            return ""
        if self.key is not None:
            return _with_prefix(prefix, self._number("mapUID:" + prefix, value))
        with self._lock:
            found = self._mapped.get((prefix, value))
            if found is None:
                found = self._mapped[(prefix, value)] = self.new_uid(prefix)
            return found


def _with_prefix(prefix: str, number: int) -> str:
    prefix = prefix.strip().rstrip(".")
    if not prefix:
        return f"2.25.{number}"
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)*", prefix):
        raise ValueError(f"{prefix!r} is not a UID prefix")
    room = MAX_UID - len(prefix) - 1
    if room < 4:
        raise ValueError(f"UID prefix {prefix!r} is too long")
    digits = str(number)[: room].lstrip("0") or "0"
    return f"{prefix}.{digits}"


def java_format(pattern: str, args: list[str]) -> str:
    """java.text.MessageFormat's common subset: {0} {1} ... and '' for a quote."""
    def sub(m: re.Match[str]) -> str:
        index = int(m.group(1))
        if index >= len(args):
            raise ValueError(f"format[]: no argument for {{{index}}}")
        return args[index]

    return re.sub(r"\{(\d+)\}", sub, pattern).replace("''", "'")


def substring(text: str, begin: str, end: str) -> str:
    b, e = int(begin), int(end)
    if b < 0 or e < b:
        raise ValueError(f"substring[]: bad range {b}..{e}")
    return text[b:e]


def match(text: str, pattern: str, group: str) -> str:
    m = re.fullmatch(pattern, text) or re.search(pattern, text)
    if not m:
        return ""
    value = m.group(int(group))
    return value or ""


def shift_date(text: str, days: str) -> str:
    n = int(float(days))
    return shift_dt(text, n * 86400) if len(text.strip()) > 8 else shift_da(text, n)


def shift_datetime(text: str, increment: str, units: str = "seconds") -> str:
    seconds = int(float(increment)) * parse_units(units)
    if len(text.strip()) <= 8 and seconds % 86400 == 0:
        return shift_da(text, seconds // 86400)
    return shift_dt(text, seconds)


def parse_lookup_table(text: str) -> dict[str, str]:
    """XNAT's lookup-table format: one `type/key = value` per line; # starts a comment."""
    table: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or "/" not in key:
            raise ValueError(f"lookup table line {raw!r}: expected type/key = value")
        table[key.strip()] = value.strip()
    return table
