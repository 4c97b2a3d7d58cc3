"""Private tags addressed by creator, `(gggg,{CREATOR}ee)`, as in DicomEdit and the allowlist. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

_ENTRY = re.compile(r"^\(\s*([0-9A-Fa-f]{4})\s*,\s*\{([^{}]+)\}\s*([0-9A-Fa-f]{2})\s*\)$")


@dataclass(frozen=True)
class PrivateTagSpec:
    group: int
    creator: str
    element: int  # the low byte, 0x00-0xFF

    def __str__(self) -> str:
        return f"({self.group:04X},{{{self.creator}}}{self.element:02X})"

    def tags_in(self, ds: Dataset) -> list[BaseTag]:
        """The tags this spec resolves to in one dataset (one per matching private block)."""
        return [BaseTag((self.group << 16) | (block << 8) | self.element) for block in creator_blocks(ds, self.group, self.creator)]


def parse_private_tag(text: str) -> PrivateTagSpec:
    m = _ENTRY.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a private tag written (gggg,{{CREATOR}}ee)")
    group = int(m.group(1), 16)
    if group % 2 == 0:
        raise ValueError(f"{text!r}: a private group is odd")
    return PrivateTagSpec(group, m.group(2).strip(), int(m.group(3), 16))


def creator_blocks(ds: Dataset, group: int, creator: str) -> list[int]:
    """Block numbers (0x10-0xFF) reserved by `creator` in `group` of this dataset."""
    wanted = creator.strip().upper()
    blocks = []
    for block in range(0x10, 0x100):
        elem = ds.get((group << 16) | block)
        if elem is None:
            continue
        value = elem.value
        if isinstance(value, bytes):
            value = value.decode("latin-1", "replace")
        if str(value).strip().upper() == wanted:
            blocks.append(block)
    return blocks


def creator_of(ds: Dataset, tag: BaseTag) -> str | None:
    """The private creator that reserved the block of a private data element, if any."""
    if not tag.is_private or tag.element < 0x1000:
        return None
    elem = ds.get((tag.group << 16) | (tag.element >> 8))
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    return str(value).strip()
