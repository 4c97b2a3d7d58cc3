"""The PS3.15 Annex E Basic Application Level Confidentiality Profile and its options.

The rules come from the generated table (`ps315_table`); this module resolves them for a set of
options and applies them to a dataset, walking every nested sequence. What each action does:

- X remove; Z empty; D a dummy consistent with the VR (names and UIDs are keyed pseudonyms);
- U a keyed pseudonym UID, identical wherever the same UID appears (so references resolve);
- K keep; C clean: dates move by the patient's shift, free text loses the patient's identifiers;
- the standard's alternatives resolve to the most protective choice that keeps references:
  X/Z, X/D, X/Z/D -> X; Z/D -> Z; X/Z/U* -> keep the sequence, new UIDs inside.

Any other UI element (not in the table) whose value is not a well-known UID is remapped too, unless
Retain UIDs is selected. Private elements go unless allowlisted (or numeric, under Retain Safe
Private). Sequences are always walked, whatever happens to the element that holds them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from types import MappingProxyType

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from dicomd.anonymize import ps315_table as table
from dicomd.anonymize.dates import shift_value
from dicomd.anonymize.privatetags import PrivateTagSpec, creator_of
from dicomd.anonymize.pseudonyms import Pseudonymizer, well_known_uid
from dicomd.errors import ConfigError

logger = logging.getLogger(__name__)

_RESOLVE = MappingProxyType({"Z/D": "Z", "X/Z": "X", "X/D": "X", "X/Z/D": "X", "X/Z/U*": "U*"})
_STRENGTH = MappingProxyType({"K": 3, "C": 2})  # when two options disagree, the one that keeps more wins
_NUMERIC_VRS = frozenset({"FL", "FD", "SL", "SS", "UL", "US", "SV", "UV", "OF", "OD"})
_TEXT_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "UC", "CS", "AE", "PN", "UR", "DS", "IS", "AS"})
_DUMMY_TEXT = MappingProxyType({
    "AE": "ANON", "AS": "000Y", "CS": "ANON", "DA": "19000101", "DT": "19000101000000", "TM": "000000",
    "DS": "0", "IS": "0", "LO": "ANONYMIZED", "LT": "ANONYMIZED", "SH": "ANONYMIZED", "ST": "ANONYMIZED",
    "UT": "ANONYMIZED", "UC": "ANONYMIZED", "UR": "",
})
_STUDY_UID = 0x0020000D


@dataclass(frozen=True)
class ProfileRules:
    """The Basic Profile table resolved for one set of options."""

    options: tuple[str, ...]
    exact: dict[int, str]
    masked: tuple[tuple[int, int, str], ...]
    private_action: str
    codes: tuple[tuple[str, str], ...]  # (CID 7050 code, meaning), Basic first

    def action(self, tag: int) -> str | None:
        found = self.exact.get(tag)
        if found is not None:
            return found
        for mask, value, action in self.masked:
            if tag & mask == value:
                return action
        return None

    @property
    def retain_uids(self) -> bool:
        return "retain_uids" in self.options

    @property
    def modified_dates(self) -> bool:
        return "retain_long_modified_dates" in self.options


def _key_to_match(key: str) -> tuple[int, int]:
    mask = int("".join("0" if c == "x" else "F" for c in key), 16)
    return mask, int(key.replace("x", "0"), 16)


def build_rules(options: tuple[str, ...] | list[str]) -> ProfileRules:
    unknown = [o for o in options if o not in table.OPTIONS]
    if unknown:
        raise ConfigError(f"unknown anonymization option(s): {', '.join(unknown)}")
    if "retain_long_full_dates" in options and "retain_long_modified_dates" in options:
        raise ConfigError("choose one of retain_long_full_dates and retain_long_modified_dates, not both")
    ordered = tuple(o for o in table.OPTIONS if o in options)
    merged: dict[str, str] = dict(table.BASIC)
    overridden: dict[str, str] = {}
    for option in ordered:
        for key, action in table.OPTIONS[option][2].items():
            if _STRENGTH.get(action, 0) >= _STRENGTH.get(overridden.get(key, ""), 0):
                overridden[key] = action
    merged.update(overridden)
    exact: dict[int, str] = {}
    masked: list[tuple[int, int, str]] = []
    private_action = "X"
    for key, action in merged.items():
        action = _RESOLVE.get(action, action)
        if key == "private":
            private_action = action
        elif "x" in key:
            masked.append((*_key_to_match(key), action))
        else:
            exact[int(key, 16)] = action
    codes = ((table.BASIC_CODE, table.BASIC_NAME),) + tuple(
        (table.OPTIONS[o][0], table.OPTIONS[o][1]) for o in ordered
    )
    return ProfileRules(ordered, exact, tuple(masked), private_action, codes)


@dataclass
class Tally:
    """What one run changed; filled in by the profile and the script interpreter."""

    changes: int = 0
    removed: int = 0


@dataclass
class PatientContext:
    """Per-instance facts gathered before anything is changed."""

    new_id: str
    new_name: str
    shift_days: int
    tokens: tuple[str, ...] = ()  # identifying strings to strip from free text (Clean)


@dataclass
class ProfileRun:
    rules: ProfileRules
    pseudo: Pseudonymizer
    allowlist: tuple[PrivateTagSpec, ...]
    patient: PatientContext
    tally: Tally = field(default_factory=Tally)

    # -- entry -----------------------------------------------------------------------------------

    def apply(self, ds: Dataset) -> None:
        self._walk(ds)
        ds.PatientName = self.patient.new_name
        ds.PatientID = self.patient.new_id
        self._file_meta(ds)

    def _file_meta(self, ds: Dataset) -> None:
        meta = getattr(ds, "file_meta", None)
        if meta is None:
            return
        for tag in (0x00020100, 0x00020102):  # Private Information Creator UID / Private Information
            if tag in meta:
                del meta[tag]
                self.tally.removed += 1
        if "SOPInstanceUID" in ds and "MediaStorageSOPInstanceUID" in meta:
            if meta.MediaStorageSOPInstanceUID != ds.SOPInstanceUID:
                meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                self.tally.changes += 1
        if getattr(ds, "preamble", None):
            ds.preamble = b"\x00" * 128

    # -- the walk --------------------------------------------------------------------------------

    def _walk(self, ds: Dataset) -> None:
        keep_private = self._kept_private(ds)
        for tag in list(ds.keys()):
            if tag.element == 0 and tag.group != 0x0002:  # group lengths: retired, stale after edits
                del ds[tag]
                continue
            if tag.is_private:
                if tag not in keep_private:
                    del ds[tag]
                    self.tally.removed += 1
                continue
            if tag == 0x7FE00010:
                continue
            elem = ds[tag]
            action = self.rules.action(int(tag))
            if action is None:
                if elem.VR == "UI" and not self.rules.retain_uids and not _class_uid(elem):
                    self._new_uids(elem)
                elif elem.VR == "SQ":
                    self._walk_items(elem)
                continue
            self._act(ds, elem, action)

    def _walk_items(self, elem: DataElement) -> None:
        for item in elem.value or ():
            self._walk(item)

    def _act(self, ds: Dataset, elem: DataElement, action: str) -> None:
        if action == "X":
            del ds[elem.tag]
            self.tally.removed += 1
        elif action == "Z":
            self._empty(elem)
        elif action == "D":
            self._dummy(elem)
        elif action in ("U", "U*"):
            if elem.VR == "UI":
                if not self.rules.retain_uids:
                    self._new_uids(elem)
            elif elem.VR == "SQ":
                self._walk_items(elem)
            elif action == "U*":
                del ds[elem.tag]
                self.tally.removed += 1
        elif action == "C":
            self._clean(elem)
        elif action == "K":
            if elem.VR == "SQ":
                self._walk_items(elem)
        else:  # pragma: no cover - the table only has the actions above
            raise ValueError(f"unknown profile action {action!r}")

    # -- actions ---------------------------------------------------------------------------------

    def _empty(self, elem: DataElement) -> None:
        if elem.VR == "SQ":
            if elem.value:
                elem.value = Sequence()
                self.tally.changes += 1
        elif not elem.is_empty:
            elem.value = None
            self.tally.changes += 1

    def _dummy(self, elem: DataElement) -> None:
        vr = elem.VR
        if vr == "SQ":
            self._empty(elem)
            return
        if elem.is_empty:
            return
        if vr == "PN":
            elem.value = _map_values(elem.value, lambda v: self.pseudo.new_name(str(v)))
        elif vr == "UI":
            self._new_uids(elem)
            return
        elif vr in _DUMMY_TEXT:
            elem.value = _DUMMY_TEXT[vr]
        elif vr in _NUMERIC_VRS:
            elem.value = 0
        else:
            elem.value = None
        self.tally.changes += 1

    def _new_uids(self, elem: DataElement) -> None:
        if elem.is_empty:
            return
        old = elem.value
        new = _map_values(old, lambda v: str(v) if well_known_uid(str(v)) else self.pseudo.new_uid(str(v)))
        if new != old:
            elem.value = new
            self.tally.changes += 1
            if elem.tag == _STUDY_UID:
                self.pseudo.remember("study_uid", str(old), str(new))

    def _clean(self, elem: DataElement) -> None:
        vr = elem.VR
        if vr == "SQ":
            self._walk_items(elem)
        elif vr in ("DA", "DT"):
            if self.rules.modified_dates and not elem.is_empty:
                new = _map_values(elem.value, lambda v: shift_value(vr, str(v), self.patient.shift_days))
                if new != elem.value:
                    elem.value = new
                    self.tally.changes += 1
        elif vr == "PN":
            self._dummy(elem)
        elif vr == "UI":
            if not self.rules.retain_uids:
                self._new_uids(elem)
        elif vr in _TEXT_VRS and not elem.is_empty:
            new = _map_values(elem.value, lambda v: scrub(str(v), self.patient.tokens))
            if new != elem.value:
                elem.value = new
                self.tally.changes += 1

    # -- private elements ------------------------------------------------------------------------

    def _kept_private(self, ds: Dataset) -> set[BaseTag]:
        keep: set[BaseTag] = set()
        for spec in self.allowlist:
            keep.update(t for t in spec.tags_in(ds) if t in ds)
        if self.rules.private_action == "C":
            for tag in ds.keys():
                if tag.is_private and tag.element >= 0x1000 and creator_of(ds, tag):
                    if ds[tag].VR in _NUMERIC_VRS:
                        keep.add(tag)
        for tag in list(keep):  # keep the creator element of every block something is kept in
            keep.add(BaseTag((tag.group << 16) | (tag.element >> 8)))
        return keep


def _class_uid(elem: DataElement) -> bool:
    """SOP Class, Transfer Syntax and similar UIDs name a kind of thing, not an instance: kept,
    even when private (e.g. a vendor's SOP Class)."""
    keyword = elem.keyword or ""
    return keyword.endswith("ClassUID") or keyword in ("TransferSyntaxUID", "CodingSchemeUID")


def _map_values(value: object, fn) -> object:  # type: ignore[no-untyped-def]
    if isinstance(value, (MultiValue, list, tuple)):
        return [fn(v) for v in value]
    return fn(value)


def scrub(text: str, tokens: tuple[str, ...]) -> str:
    """Remove identifying tokens (case-insensitive) from free text."""
    for token in tokens:
        text = re.sub(re.escape(token), "", text, flags=re.IGNORECASE)
    return re.sub(r"\s{2,}", " ", text).strip()


def identifying_tokens(ds: Dataset) -> tuple[str, ...]:
    """Strings that identify this instance's patient, for cleaning free text."""
    tokens: set[str] = set()
    for elem in ds.iterall():  # every person name anywhere: patient, physicians, operators...
        if elem.VR != "PN":
            continue
        for value in _values(elem):
            for part in re.split(r"[\^=\s,]+", str(value)):
                if len(part) >= 3:
                    tokens.add(part)
            if str(value).strip():
                tokens.add(str(value).strip())
    for keyword in ("PatientID", "OtherPatientIDs", "AccessionNumber", "PatientBirthDate",
                    "PatientAddress", "PatientTelephoneNumbers", "MedicalRecordLocator"):
        for value in _values(ds[keyword] if keyword in ds else None):
            if len(str(value).strip()) >= 3:
                tokens.add(str(value).strip())
    for item in ds.get("OtherPatientIDsSequence") or ():
        value = str(item.get("PatientID", "")).strip()
        if len(value) >= 3:
            tokens.add(value)
    return tuple(sorted(tokens, key=len, reverse=True))


def _values(elem: DataElement | None) -> list[object]:
    if elem is None or elem.is_empty:
        return []
    value = elem.value
    return list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]


def set_deidentification(ds: Dataset, rules: ProfileRules, script_hash: str | None) -> None:
    """PatientIdentityRemoved, DeidentificationMethod (text) and its Code Sequence (CID 7050)."""
    ds.PatientIdentityRemoved = "YES"
    method = [f"PS3.15 {table.BASIC_NAME}"[:64]]
    method += [table.OPTIONS[o][1][:64] for o in rules.options]
    if script_hash:
        method.append(f"DicomEdit script sha256:{script_hash[:40]}")
    ds.DeidentificationMethod = method if len(method) > 1 else method[0]
    items = []
    for code, meaning in rules.codes:
        item = Dataset()
        item.CodeValue = code
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)
    if rules.modified_dates:
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
    elif "retain_long_full_dates" in rules.options:
        ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
    else:
        ds.LongitudinalTemporalInformationModified = "REMOVED"
