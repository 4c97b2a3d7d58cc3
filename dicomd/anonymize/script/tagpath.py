"""DicomEdit 6 tag paths: `(gggg,eeee)`, `(gggg,{CREATOR}ee)`, digit wildcards `X` (any), `#` (odd),
`@` (even), items `[n]` / `[%]`, and sequence wildcards `*` (any depth, including none), `+` (one or
more levels) and `.` (exactly one level)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

from dicomd.anonymize.privatetags import creator_blocks

_ODD = frozenset("13579bdf")
_EVEN = frozenset("02468ace")


def _digit_ok(pattern: str, digit: str) -> bool:
    if pattern in "xX":
        return True
    if pattern == "#":
        return digit in _ODD
    if pattern == "@":
        return digit in _EVEN
    return pattern.lower() == digit


@dataclass(frozen=True)
class ElementSeg:
    group: str  # 4 characters: hex digits or X # @
    element: str  # 4 characters, or 2 when `creator` is set
    creator: str | None = None
    item: int | str | None = None  # None: every item; an int; or "%" (every item)

    @property
    def concrete(self) -> bool:
        return not any(c in "xX#@" for c in self.group + self.element)

    def tag(self) -> BaseTag | None:
        """The single tag when concrete and public."""
        if self.creator is not None or not self.concrete:
            return None
        return BaseTag(int(self.group + self.element, 16))

    def matches(self, tag: BaseTag, ds: Dataset) -> bool:
        text = f"{tag:08x}"
        if not all(_digit_ok(p, d) for p, d in zip(self.group, text[:4])):
            return False
        if self.creator is None:
            return all(_digit_ok(p, d) for p, d in zip(self.element, text[4:]))
        if tag.element < 0x1000:
            return False
        if not all(_digit_ok(p, d) for p, d in zip(self.element, text[6:])):
            return False
        return (tag.element >> 8) in creator_blocks(ds, tag.group, self.creator)

    def __str__(self) -> str:
        inner = f"{{{self.creator}}}{self.element}" if self.creator is not None else self.element
        item = "" if self.item is None else f"[{self.item}]"
        return f"({self.group},{inner}){item}"


@dataclass(frozen=True)
class WildSeg:
    kind: str  # "*", "+" or "."

    def __str__(self) -> str:
        return self.kind


Segment = ElementSeg | WildSeg


@dataclass(frozen=True)
class TagPath:
    segments: tuple[Segment, ...]

    def __str__(self) -> str:
        return "/".join(str(s) for s in self.segments)

    @property
    def last(self) -> ElementSeg:
        last = self.segments[-1]
        assert isinstance(last, ElementSeg)
        return last

    @property
    def top_level(self) -> bool:
        return len(self.segments) == 1

    def find(self, ds: Dataset) -> list[tuple[Dataset, BaseTag]]:
        """Every existing element this path addresses, as (containing dataset, tag)."""
        found: list[tuple[Dataset, BaseTag]] = []
        for container in self.containers(ds):
            last = self.last
            single = last.tag()
            if single is not None:
                if single in container:
                    found.append((container, single))
                continue
            found.extend((container, tag) for tag in list(container.keys()) if last.matches(tag, container))
        return found

    def containers(self, ds: Dataset) -> Iterator[Dataset]:
        """Datasets reached by every segment but the last."""
        current = [ds]
        for seg in self.segments[:-1]:
            nxt: list[Dataset] = []
            for d in current:
                nxt.extend(_step(seg, d))
            current = nxt
        yield from current


def _items(seq_value: object, item: int | str | None) -> list[Dataset]:
    items = list(seq_value or [])
    if item is None or item == "%":
        return items
    assert isinstance(item, int)
    return [items[item]] if 0 <= item < len(items) else []


def _nested(ds: Dataset) -> Iterator[Dataset]:
    """Every item of every sequence, at any depth below ds."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or ():
                yield item
                yield from _nested(item)


def _step(seg: Segment, ds: Dataset) -> list[Dataset]:
    if isinstance(seg, WildSeg):
        if seg.kind == "*":
            return [ds, *_nested(ds)]
        if seg.kind == "+":
            return list(_nested(ds))
        return [item for elem in ds if elem.VR == "SQ" for item in (elem.value or ())]
    out: list[Dataset] = []
    single = seg.tag()
    tags = [single] if single is not None else [t for t in ds.keys() if seg.matches(t, ds)]
    for tag in tags:
        if tag in ds and ds[tag].VR == "SQ":
            out.extend(_items(ds[tag].value, seg.item))
    return out
