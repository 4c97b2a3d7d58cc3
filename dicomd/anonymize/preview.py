"""What anonymization would change in one instance, attribute by attribute, without changing it."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

if TYPE_CHECKING:
    from dicomd.anonymize.anonymizer import Anonymizer, Labels

MAX_TEXT = 200


@dataclass(frozen=True)
class Change:
    path: str  # "(0008,1115)[0]/(0008,1155)" for nested attributes
    tag: str  # "(gggg,eeee)" of the attribute itself
    keyword: str
    before: str | None
    after: str | None
    action: str  # changed | removed | added


def preview(ds: Dataset, anonymizer: "Anonymizer", labels: "Labels") -> list[Change]:
    """Run the anonymizer on a deep copy and list the differences; `ds` is left untouched."""
    work = copy.deepcopy(ds)
    anonymizer.apply(work, labels)
    return diff(ds, work)


def diff(before: Dataset, after: Dataset) -> list[Change]:
    old = dict(_flatten(before))
    new = dict(_flatten(after))
    changes: list[Change] = []
    for path, (elem, text) in old.items():
        if path not in new:
            changes.append(Change(path, _tag(elem), elem.keyword or "", text, None, "removed"))
        elif new[path][1] != text:
            changes.append(Change(path, _tag(elem), elem.keyword or "", text, new[path][1], "changed"))
    for path, (elem, text) in new.items():
        if path not in old:
            changes.append(Change(path, _tag(elem), elem.keyword or "", None, text, "added"))
    return changes


def _tag(elem: DataElement) -> str:
    return f"({elem.tag.group:04X},{elem.tag.element:04X})"


def _flatten(ds: Dataset, prefix: str = "") -> Iterator[tuple[str, tuple[DataElement, str]]]:
    for elem in ds:
        path = prefix + _tag(elem)
        if elem.VR == "SQ":
            items = elem.value or []
            yield path, (elem, f"<sequence of {len(items)} item(s)>")
            for i, item in enumerate(items):
                yield from _flatten(item, f"{path}[{i}]/")
        else:
            yield path, (elem, _text(elem))


def _text(elem: DataElement) -> str:
    if elem.tag == 0x7FE00010 or elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        length = len(elem.value) if isinstance(elem.value, (bytes, bytearray)) else 0
        return f"<{length} bytes>"
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, (MultiValue, list, tuple)):
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."
