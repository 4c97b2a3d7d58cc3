"""What the archive and build steps ask about burned-in text.

- `PixelPolicy.decide(ds)`: the reasons an instance may carry text, the redaction rule that will
  clean it, and whether it must wait for a person (REVIEW). A rule or the project's
  `allow_burned_in` lifts the hold, except for Recognizable Visual Features = YES (a face: dicomd
  removes none, so a person decides) and for data a rule cannot clean (documents, video).
- `inspect_session(...)`: the OCR check at build time, one frame per series, as a JSON-ready dict
  stored in the session's build summary under `pixel_text`: counts and boxes, never the words.
- `text_outside(...)`: which of those boxes no rule rectangle covers (the archive asks for an
  explicit confirmation while there are any).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pydicom
from pydicom.dataset import Dataset

from dicomd.catalog import InstanceRow
from dicomd.config import OcrConfig, PixelRuleConfig
from dicomd.pixels import ocr
from dicomd.pixels.detect import FACES, burned_in_reasons, has_faces
from dicomd.pixels.redact import CannotRedact, check_redactable
from dicomd.pixels.rules import Box, clipped, inside, matching_rule

logger = logging.getLogger(__name__)

PIXEL_TEXT = "pixel_text"  # the key of the OCR findings in a session's build summary


@dataclass(frozen=True)
class Decision:
    reasons: tuple[str, ...]  # why the instance may carry burned-in text (or a face)
    rule: PixelRuleConfig | None  # the redaction rule that will run, if any
    hold: str | None  # why a person must look before it is archived, or None

    def areas(self, ds: Dataset) -> list[Box]:
        """The rectangles this decision blanks in ``ds`` (none without a rule)."""
        if self.rule is None:
            return []
        return clipped(self.rule, int(ds.get("Rows") or 0), int(ds.get("Columns") or 0))


class PixelPolicy:
    """The site's redaction rules with one project's `allow_burned_in`."""

    def __init__(self, rules: Sequence[PixelRuleConfig], allow_burned_in: bool) -> None:
        self.rules = tuple(rules)
        self.allow_burned_in = allow_burned_in

    def decide(self, ds: Dataset) -> Decision:
        reasons = burned_in_reasons(ds)
        rule = matching_rule(self.rules, ds)
        unusable = ""
        if rule is not None:
            try:
                check_redactable(ds)
            except CannotRedact as exc:
                unusable, rule = f"rule {rule.name} matches but {exc}", None
        if has_faces(reasons):
            return Decision(reasons, rule, f"{FACES}: dicomd removes no faces, a person must decide")
        if reasons and rule is None and not self.allow_burned_in:
            return Decision(reasons, None, "; ".join([*reasons, *([unusable] if unusable else [])]))
        return Decision(reasons, rule, None)


# ---------------------------------------------------------------------------- OCR at build time


def _read_header(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)


def first_per_scan(instances: Sequence[InstanceRow]) -> dict[str, InstanceRow]:
    firsts: dict[str, InstanceRow] = {}
    for inst in instances:
        firsts.setdefault(inst.scan_id, inst)
    return firsts


def inspect_session(instances: Sequence[InstanceRow], resolve: Callable[[str], Path], policy: PixelPolicy,
                    settings: OcrConfig) -> dict[str, Any]:
    """OCR of frame 0 of the first instance of each series that may carry text (every series with
    `ocr.all_series`). Never raises for bad pixel data: a series that cannot be read says why."""
    found = ocr.availability()
    if not settings.enabled:
        return {"checked": False, "engine": "off: ocr.enabled is false in the config", "scans": []}
    if not found.available:
        return {"checked": False, "engine": found.engine, "scans": []}
    scans: list[dict[str, Any]] = []
    for scan_id, inst in first_per_scan(instances).items():
        path = resolve(inst.path)
        try:
            header = _read_header(path)
        except Exception:  # noqa: BLE001 - an unreadable header: nothing to look at
            continue
        decision = policy.decide(header)
        if not (settings.all_series or decision.reasons or decision.rule) or "Rows" not in header:
            continue  # nothing suspect, or no image (read without its pixels: Rows tells)
        entry: dict[str, Any] = {"scan_id": scan_id, "frame": 0, "rows": int(header.get("Rows") or 0),
                                 "columns": int(header.get("Columns") or 0)}
        try:
            boxes = ocr.find_text(ocr.frame_image(path, 0), timeout=settings.timeout_seconds,
                                  min_confidence=settings.min_confidence)
        except ocr.OcrFailed as exc:
            entry.update(characters=0, boxes=[], problem=str(exc))
        else:
            entry.update(characters=sum(b.characters for b in boxes),
                         boxes=[[b.x, b.y, b.width, b.height, b.characters] for b in boxes])
        scans.append(entry)
    total = sum(s["characters"] for s in scans)
    logger.info("ocr: %d series checked, %d characters found", len(scans), total)
    return {"checked": True, "engine": found.engine, "at": time.time(), "characters": total,
            "boxes": sum(len(s["boxes"]) for s in scans), "scans": scans}


def session_marks(instances: Sequence[InstanceRow], resolve: Callable[[str], Path], policy: PixelPolicy,
                  findings: Mapping[str, Any] | None) -> dict[str, tuple[list[Box], list[Box]]]:
    """Per scan: the rectangles its rule will blank (first instance's header) and the OCR boxes."""
    text = {scan["scan_id"]: [tuple(b[:4]) for b in scan.get("boxes", [])] for scan in (findings or {}).get("scans", [])}
    marks: dict[str, tuple[list[Box], list[Box]]] = {}
    for scan_id, inst in first_per_scan(instances).items():
        try:
            header = _read_header(resolve(inst.path))
            blanked = policy.decide(header).areas(header)
        except Exception:  # noqa: BLE001 - an unreadable header: nothing to mark
            blanked = []
        boxes = text.get(scan_id, [])
        if blanked or boxes:
            marks[scan_id] = (blanked, boxes)  # type: ignore[assignment]
    return marks


@dataclass(frozen=True)
class Outside:
    """The OCR text that no redaction rectangle covers."""

    characters: int
    boxes: int
    scans: tuple[str, ...]

    def __bool__(self) -> bool:
        return self.characters > 0


def text_outside(findings: Mapping[str, Any] | None, areas: Mapping[str, Sequence[Box]]) -> Outside:
    """Boxes of ``findings`` not wholly inside the rectangles blanked in their scan (``areas``)."""
    characters = boxes = 0
    scans: list[str] = []
    for scan in (findings or {}).get("scans", []):
        covered = areas.get(scan["scan_id"], ())
        left = [b for b in scan.get("boxes", []) if not inside(tuple(b[:4]), covered)]  # type: ignore[arg-type]
        if left:
            characters += sum(int(b[4]) for b in left)
            boxes += len(left)
            scans.append(scan["scan_id"])
    return Outside(characters, boxes, tuple(scans))


def describe(findings: Mapping[str, Any] | None) -> str:
    """One line for people: `text found: 23 characters in 5 boxes (scan 1: 3 boxes ...)`, or why not checked."""
    if not findings:
        return "not checked (the session was built before OCR, or its project is not de-identified)"
    if not findings.get("checked"):
        return f"not checked: OCR {findings.get('engine', 'off')}"
    parts = []
    for scan in findings.get("scans", []):
        boxes = " ".join("[{},{} {}x{}]".format(*b[:4]) for b in scan.get("boxes", []))
        problem = f" ({scan['problem']})" if scan.get("problem") else ""
        parts.append(f"scan {scan['scan_id']}: {scan['characters']} characters{problem}" + (f" in {boxes}" if boxes else ""))
    head = f"text found: {findings.get('characters', 0)} characters in {findings.get('boxes', 0)} boxes"
    return head + (f" ({'; '.join(parts)})" if parts else " (no series to check)")
