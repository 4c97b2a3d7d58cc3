"""Which redaction rule (config `[[pixel_rules]]`) matches an instance, and where its rectangles fall.

A rule's conditions are header values: strings match the whole value, case-insensitively, with
`*` and `?` wildcards (a multi-valued attribute matches when any value does); Rows and Columns match
exactly. The first rule whose every condition holds is the one that runs.
"""

from __future__ import annotations

import fnmatch
from typing import Sequence

from pydicom.dataset import Dataset

from dicomd.config import PixelRuleConfig

Box = tuple[int, int, int, int]  # x, y, width, height in pixels


def _strings(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None:
        return [""]
    items = [value] if isinstance(value, (str, bytes)) else list(value)
    return [str(v).strip() for v in items] or [""]


def matches(rule: PixelRuleConfig, ds: Dataset) -> bool:
    for keyword, wanted in rule.conditions().items():
        if isinstance(wanted, int):
            try:
                if int(ds.get(keyword) or 0) != wanted:
                    return False
            except (TypeError, ValueError):
                return False
        elif not any(fnmatch.fnmatchcase(value.upper(), wanted.upper()) for value in _strings(ds, keyword)):
            return False
    return True


def matching_rule(rules: Sequence[PixelRuleConfig], ds: Dataset) -> PixelRuleConfig | None:
    """The first rule whose signature ``ds`` matches, or None."""
    return next((rule for rule in rules if matches(rule, ds)), None)


def clipped(rule: PixelRuleConfig, rows: int, columns: int) -> list[Box]:
    """The rule's rectangles cut to a ``columns`` x ``rows`` image (parts outside it are dropped)."""
    boxes: list[Box] = []
    for x, y, width, height in rule.rectangles:
        right, bottom = min(x + width, columns), min(y + height, rows)
        if right > x and bottom > y:
            boxes.append((x, y, right - x, bottom - y))
    return boxes


def inside(box: Box, areas: Sequence[Box]) -> bool:
    """Whether ``box`` lies wholly within one of ``areas``."""
    x, y, w, h = box
    return any(ax <= x and ay <= y and x + w <= ax + aw and y + h <= ay + ah for ax, ay, aw, ah in areas)


def overlaps(box: Box, areas: Sequence[Box]) -> bool:
    x, y, w, h = box
    return any(x < ax + aw and ax < x + w and y < ay + ah and ay < y + h for ax, ay, aw, ah in areas)
