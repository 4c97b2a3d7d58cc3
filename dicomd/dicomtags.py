"""DICOM tags as people type them, and the header walker behind both dumps (`dicomd dump` and
XNAT's `/data/services/dicomdump`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Collection, Iterator, Sequence

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from dicomd.errors import InvalidInput

# (gggg,eeee), gggg,eeee, ggggeeee, 0xggggeeee; parentheses and 0x optional, blanks ignored.
_TAG = re.compile(r"^\(?(?:0x)?([0-9a-f]{4}),?([0-9a-f]{4})\)?$", re.IGNORECASE)
_BINARY_VRS = ("OB", "OW", "OF", "OD", "OL", "OV", "UN")
PIXEL_DATA = 0x7FE00010
SHORT_VALUE = 100  # characters of a value `dicomd dump` shows
XNAT_VALUE = 1024  # ... and the dicomdump service
XNAT_DEPTH = 8  # sequence levels the dicomdump service descends


class BadTag(InvalidInput):
    """Text that is neither a DICOM keyword nor a tag number."""


def parse_tag(text: str) -> int:
    """A tag from `(gggg,eeee)`, `gggg,eeee`, `ggggeeee`, `0xggggeeee` or a keyword (PatientName)."""
    value = str(text).strip()
    match = _TAG.match(re.sub(r"\s+", "", value))
    if match:
        return int(match.group(1) + match.group(2), 16)
    number = tag_for_keyword(value) if value.isidentifier() else None
    if number is None:
        raise BadTag(f"{text!r} is not a DICOM keyword or tag")
    return int(number)


def tag_text(tag: int) -> str:
    """`(GGGG,EEEE)`."""
    return f"({int(tag) >> 16:04X},{int(tag) & 0xFFFF:04X})"


# ---------------------------------------------------------------- the walker


@dataclass(frozen=True)
class Step:
    """One step of a header walk: an element, or (``element`` None) the start of a sequence item."""

    element: DataElement | None
    trail: tuple[tuple[int, int], ...]  # (sequence tag, item index) from the top level down to here


def walk(ds: Dataset, *, only: Collection[int] = (), max_depth: int | None = None) -> Iterator[Step]:
    """Every element in order, each sequence's items after it. ``only``: just these top-level
    elements (and what they hold); ``max_depth``: descend into this many sequence levels at most."""
    return _walk(ds, only, max_depth, ())


def _walk(ds: Dataset, only: Collection[int], max_depth: int | None,
          trail: tuple[tuple[int, int], ...]) -> Iterator[Step]:
    for elem in ds:
        if only and not trail and int(elem.tag) not in only:
            continue
        yield Step(elem, trail)
        if elem.VR == "SQ" and (max_depth is None or len(trail) < max_depth):
            for index, item in enumerate(elem.value or []):
                inner = (*trail, (int(elem.tag), index))
                yield Step(None, inner)
                yield from _walk(item, (), max_depth, inner)


# ---------------------------------------------------------------- `dicomd dump`


def element_rows(ds: Dataset, tags: Sequence[int] = ()) -> list[dict[str, Any]]:
    """`dicomd dump` rows (tag, vr, keyword, value, depth): every element with sequence items
    indented under it, or only ``tags`` in the order given (an absent one has no VR and no value)."""
    if tags:
        return [_element_row(ds[t], 0) if t in ds else _absent_row(t) for t in tags]
    rows = []
    for step in walk(ds):
        depth = 2 * len(step.trail)
        if step.element is None:
            rows.append({"tag": f"item {step.trail[-1][1] + 1}", "vr": "", "keyword": "", "value": None,
                         "depth": depth - 1})
        else:
            rows.append(_element_row(step.element, depth))
    return rows


def _element_row(elem: DataElement, depth: int) -> dict[str, Any]:
    return {"tag": tag_text(elem.tag), "vr": elem.VR, "keyword": elem.keyword or elem.name,
            "value": _short_value(elem), "depth": depth}


def _absent_row(tag: int) -> dict[str, Any]:
    return {"tag": tag_text(tag), "vr": "", "keyword": keyword_for_tag(tag) or "", "value": None, "depth": 0}


def _short_value(elem: DataElement) -> str | None:
    if elem.VR == "SQ":
        return f"<{len(elem.value or [])} item(s)>"
    if elem.tag == PIXEL_DATA or elem.VR in _BINARY_VRS:
        try:
            size = len(elem.value) if elem.value is not None else 0
        except Exception:  # noqa: BLE001 - a deferred value may be unreadable
            size = 0
        return f"<{size} bytes>"
    try:
        value = elem.value
    except Exception as exc:  # noqa: BLE001 - show what cannot be decoded instead of failing
        return f"<unreadable: {exc}>"
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    return text if len(text) <= SHORT_VALUE else text[:SHORT_VALUE] + "…"


# ---------------------------------------------------------------- XNAT's dicomdump


def xnat_rows(ds: Dataset, only: Collection[int] = ()) -> list[dict[str, str]]:
    """XNAT's dicomdump rows (`tag1, tag2, vr, value, desc`), file meta first. Top-level elements:
    tag1 = their tag, tag2 empty. Nested ones: tag1 = the top-level sequence, tag2 = the path inside
    it, e.g. `[0](0008,1150)`."""
    rows: list[dict[str, str]] = []
    meta = getattr(ds, "file_meta", None)
    for part in ([meta] if meta else []) + [ds]:
        for step in walk(part, only=only, max_depth=XNAT_DEPTH):
            if step.element is not None:
                rows.append(_xnat_row(step.element, step.trail))
    return rows


def _xnat_row(elem: DataElement, trail: tuple[tuple[int, int], ...]) -> dict[str, str]:
    tag = tag_text(int(elem.tag))
    vr = str(elem.VR)
    if trail:
        inside = f"[{trail[0][1]}]" + "".join(f"{tag_text(t)}[{i}]" for t, i in trail[1:])
        tag1, tag2 = tag_text(trail[0][0]), inside + tag
    else:
        tag1, tag2 = tag, ""
    return {"tag1": tag1, "tag2": tag2, "vr": vr, "value": "" if vr == "SQ" else _xnat_value(elem),
            "desc": elem.name if elem.name else "Unknown"}


def _xnat_value(elem: DataElement) -> str:
    if elem.VR in _BINARY_VRS or elem.tag == PIXEL_DATA:
        length = len(elem.value) if elem.value is not None and hasattr(elem.value, "__len__") else 0
        return f"<{length} bytes>"
    try:
        text = str(elem.value) if elem.VM <= 1 else "\\".join(str(v) for v in elem.value)
    except Exception:  # noqa: BLE001 - an odd value still gets a row
        text = repr(elem.value)
    return text if len(text) <= XNAT_VALUE else text[:XNAT_VALUE] + "..."
