"""The PS3.15 Annex E Basic Application Level Confidentiality Profile and its options.

The rules come from the generated table (`ps315_table`); this module resolves them for a set of
options and applies them to a dataset, walking every sequence to any depth (private sequences and
SR content included). What each action does:

- X remove; Z empty; D a dummy consistent with the VR (names and UIDs are keyed pseudonyms);
- U a keyed pseudonym UID, identical wherever the same UID appears (so references resolve);
- K keep; C clean: dates move by the patient's shift, free text loses the dataset's identifying
  tokens, person names get dummies, OB/OW data is removed;
- the alternatives X/Z, X/D, Z/D, X/Z/D follow the attribute's type in the object's IOD
  (`safe_public.REQUIRED`): type 1 gets a VR-valid dummy, type 2 is emptied, else it is removed;
  X/Z/U* keeps a sequence with new UIDs inside.

What the table does not name is denied by VR (default-deny): PN is removed (a dummy when the IOD
requires it), UR / UT / LT / ST / LO / SH / UC / AE / AS removed, CS / DS / IS removed outside the
coded groups, OB / OW removed unless image or signal data, UN and unknown public tags removed,
DA / DT / TM shifted under Modified Dates, kept under Full Dates and removed otherwise, UI
remapped; `safe_public` lists what is kept by construction. Dates are never kept unshifted under
Modified Dates, whatever option retains them (the safer action wins), private ones included.
Overlay groups (60xx) are removed whole and overlay bits in the unused high bits of Pixel Data
are cleared.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterable, Iterator

from pydicom import config
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.datadict import dictionary_VR, dictionary_has_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from dicomd.anonymize import ps315_table as table
from dicomd.anonymize import safe_public as safe
from dicomd.anonymize.dates import shift_by_days
from dicomd.anonymize.privatetags import PrivateTagSpec, creator_of
from dicomd.anonymize.pseudonyms import Pseudonymizer, well_known_uid
from dicomd.errors import ConfigError

logger = logging.getLogger(__name__)

_RESOLVE = MappingProxyType({"X/Z/U*": "U*"})
# when two options disagree on one attribute, the safer action wins: clean beats keep
_STRENGTH = MappingProxyType({"C": 3, "K": 2})
_DATE_VRS = frozenset({"DA", "DT", "TM"})
_FREE_TEXT_VRS = frozenset({"LO", "SH", "LT", "ST", "UT", "UC"})
_DUMMY_TEXT = MappingProxyType({
    "AE": "ANONYMIZED", "AS": "000Y", "CS": "ANONYMIZED", "DA": "19000101", "DT": "19000101000000",
    "TM": "000000", "DS": "0", "IS": "0", "LO": "ANONYMIZED", "LT": "ANONYMIZED", "SH": "ANONYMIZED",
    "ST": "ANONYMIZED", "UT": "ANONYMIZED", "UC": "ANONYMIZED", "UR": "urn:dicomd:anonymized",
})
_STUDY_UID = 0x0020000D
_PIXEL_DATA = 0x7FE00010
_CONTENT_SEQUENCE = 0x0040A730
# sequences whose "clean" (an option's C) keeps their tree with free text cleaned instead of removed
_STRUCTURED = frozenset({0x0040A730, 0x00400555, 0x00400610})  # content, acquisition context, specimen prep.
_GRAPHICS = frozenset({0x00700001})  # graphic annotation sequence
_PHONE = re.compile(r"(?<!\w)\+?\(?\d[\d ()./-]{5,}\d(?!\w)")
_MEMO_LIMIT = 100_000
_BY_TYPE = frozenset({"X", "Z", "X/Z", "X/D", "Z/D", "X/Z/D"})  # actions the attribute's type resolves


@dataclass(frozen=True)
class ProfileRules:
    """The Basic Profile table resolved for one set of options."""

    options: tuple[str, ...]
    exact: dict[int, str]
    masked: tuple[tuple[int, int, str], ...]
    private_action: str
    codes: tuple[tuple[str, str], ...]  # (CID 7050 code, meaning), Basic first
    # decisions that depend on the tag alone (and the VR as read): made once per process, not per instance
    _actions: dict[int, str | None] = field(default_factory=dict, compare=False, repr=False)
    _as_read: dict[tuple[int, str, bool], bool] = field(default_factory=dict, compare=False, repr=False)

    def action(self, tag: int) -> str | None:
        try:
            return self._actions[tag]
        except KeyError:
            pass
        found = self.exact.get(tag)
        if found is None:
            found = next((action for mask, value, action in self.masked if tag & mask == value), None)
        if len(self._actions) < _MEMO_LIMIT:  # a file of made-up tags must not grow it without end
            self._actions[tag] = found
        return found

    def kept_as_read(self, tag: int, vr: str, mode: _Mode) -> bool:
        """`_untouched` for an element still raw, whose VR as read is ``vr``."""
        key = (tag, vr, mode.clean_text)
        found = self._as_read.get(key)
        if found is None:
            found = _kept_as_read(tag, vr, self.action(tag), mode)
            if len(self._as_read) < _MEMO_LIMIT:
                self._as_read[key] = found
        return found

    @property
    def retain_uids(self) -> bool:
        return "retain_uids" in self.options

    @property
    def modified_dates(self) -> bool:
        return "retain_long_modified_dates" in self.options

    @property
    def full_dates(self) -> bool:
        return "retain_long_full_dates" in self.options

    @property
    def safe_private(self) -> bool:
        return "retain_safe_private" in self.options


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


@dataclass(frozen=True)
class _Mode:
    """How free text is treated below a sequence: removed (strict) or cleaned (an option's C)."""

    clean_text: bool = False


_STRICT = _Mode()
_CLEANING = _Mode(clean_text=True)


@dataclass
class ProfileRun:
    rules: ProfileRules
    pseudo: Pseudonymizer
    allowlist: tuple[PrivateTagSpec, ...]
    patient: PatientContext
    tally: Tally = field(default_factory=Tally)
    _families: tuple[str, ...] = field(default=("any",), init=False, repr=False)  # the IOD's type rules
    _tokens: re.Pattern[str] | None = field(default=None, init=False, repr=False)
    _parent: int = field(default=0, init=False, repr=False)  # the sequence holding the walked dataset
    _top: Dataset | None = field(default=None, init=False, repr=False)

    # -- entry -----------------------------------------------------------------------------------

    def apply(self, ds: Dataset) -> None:
        enhanced = "SharedFunctionalGroupsSequence" in ds or "PerFrameFunctionalGroupsSequence" in ds
        self._families = safe.families(str(ds.get("SOPClassUID", "")), enhanced)
        self._top = ds
        self._clear_overlay_bits(ds)
        self._walk(ds, _STRICT, top=True)
        ds.PatientName = self.patient.new_name
        ds.PatientID = self.patient.new_id
        if getattr(ds, "preamble", None):
            ds.preamble = b"\x00" * 128

    # -- the walk --------------------------------------------------------------------------------

    def _walk(self, ds: Dataset, mode: _Mode, top: bool = False, parent: int = 0) -> None:
        keep_private = self._kept_private(ds)
        rules = self.rules
        for tag in list(ds.keys()):
            number = int(tag)
            group = number >> 16
            if not number & 0xFFFF and group != 0x0002:  # group lengths: retired, stale after edits
                del ds[tag]
                continue
            if group == 0x0002 and not top:
                continue
            if group & 1:
                self._private(ds, tag, keep_private, mode)
                continue
            if 0x6000 <= group <= 0x601E:  # overlays go whole (data, labels, comments); the group is even here
                del ds[tag]
                self.tally.removed += 1
                continue
            if number == _PIXEL_DATA:
                continue
            action = rules.action(number)
            vr = _raw_vr(ds, tag)
            if vr is not None and rules.kept_as_read(number, vr, mode):
                continue  # kept as received: never decoded, so written back byte for byte
            if not mode.clean_text and (action == "X" or top and action in _BY_TYPE and _by_type(
                    action, safe.required_type(number, self._families)) == "X"):
                del ds[tag]  # removed whatever its value (a date under K/C or cleaned text never gets here)
                self.tally.removed += 1
                continue
            elem = ds[tag]
            self._parent = parent
            if action is None:
                self._default(ds, elem, mode, top)
            else:
                self._act(ds, elem, action, mode, top)

    def _walk_items(self, elem: DataElement, mode: _Mode, holder: Dataset | None = None) -> None:
        items = list(elem.value or ())
        dropped = []
        outer = self._parent
        for item in items:
            designator = any(t in item for t in safe.HIERARCHIC_DESIGNATOR)
            self._walk(item, mode, parent=int(elem.tag))
            if designator and not any(t in item for t in safe.HIERARCHIC_DESIGNATOR):
                dropped.append(item)  # an issuer without its identifiers names nothing: the item goes
        self._parent = outer
        if dropped:
            elem.value = Sequence([item for item in items if not any(item is d for d in dropped)])
            self.tally.removed += len(dropped)
            if not elem.value and holder is not None:  # a sequence is never left without items
                self._drop(holder, elem, holder is self._top)

    def _required(self, ds: Dataset, tag: int, top: bool) -> int:
        """1, 2 or 3: what the IOD (or the SR content item) requires of this attribute here."""
        if top:
            return safe.required_type(tag, self._families)
        nested = safe.NESTED_REQUIRED.get((self._parent, tag))
        if nested is not None:
            return nested
        value_type = str(ds.get("ValueType", "") or "")
        wanted = safe.CONTENT_ITEM_VALUE.get(value_type)
        if wanted is not None and ds[tag].keyword == wanted:
            return 1
        return 3

    # -- default-deny for what the table does not name ---------------------------------------------

    def _default(self, ds: Dataset, elem: DataElement, mode: _Mode, top: bool) -> None:
        vr = elem.VR
        tag = int(elem.tag)
        if not dictionary_has_tag(elem.tag):
            self._drop(ds, elem, top)
        elif vr == "SQ":
            self._walk_items(elem, mode, ds)
        elif vr == "UI":
            if not self.rules.retain_uids and not _class_uid(elem):
                self._new_uids(elem)
        elif vr in _DATE_VRS:
            self._date(ds, elem, top)
        elif tag in safe.CLEANED_TAGS or (mode.clean_text and vr in _FREE_TEXT_VRS):
            self._clean_text(ds, elem, top)
        elif tag in safe.SAFE_TAGS or vr in safe.BINARY_VRS or tag in safe.SAFE_BULK_TAGS:
            pass
        elif vr in safe.CODED_VRS and elem.tag.group in safe.CODED_GROUPS:
            pass
        elif vr == "PN" and mode.clean_text:
            self._dummy(elem)
        else:
            self._drop(ds, elem, top)

    def _drop(self, ds: Dataset, elem: DataElement, top: bool) -> None:
        """Remove a value: a type 1 attribute gets a dummy, a type 2 one is emptied."""
        required = self._required(ds, int(elem.tag), top)
        if required == 1:
            self._dummy(elem)
        elif required == 2:
            self._empty(elem)
        else:
            del ds[elem.tag]
            self.tally.removed += 1

    # -- table actions ---------------------------------------------------------------------------

    def _act(self, ds: Dataset, elem: DataElement, action: str, mode: _Mode, top: bool) -> None:
        if elem.VR in _DATE_VRS and action in ("K", "C"):
            self._date(ds, elem, top)  # the date options decide every date, whatever else retains it
            return
        if mode.clean_text and elem.VR in _FREE_TEXT_VRS and action != "K":
            self._clean_text(ds, elem, top)  # an option cleans this subtree: its text is cleaned, not lost
            return
        if action in _BY_TYPE:
            required = self._required(ds, int(elem.tag), top)
            action = _by_type(action, required)
        if action == "X":
            del ds[elem.tag]
            self.tally.removed += 1
        elif action == "Z":
            self._empty(elem)
        elif action == "D":
            if elem.VR == "SQ":
                self._walk_items(elem, _STRICT)
                return
            self._dummy(elem)
        elif action in ("U", "U*"):
            if elem.VR == "UI":
                if not self.rules.retain_uids:
                    self._new_uids(elem)
            elif elem.VR == "SQ":
                self._walk_items(elem, mode)
            else:  # a UID attribute that does not hold a UI value (a wrong VR): not kept as it is
                self._drop(ds, elem, top)
        elif action == "C":
            self._clean(ds, elem, mode, top)
        elif action == "K":
            if elem.VR == "SQ":
                self._walk_items(elem, mode)
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
            self._walk_items(elem, _STRICT)
            return
        if vr == "PN":
            if elem.is_empty:
                elem.value = self.pseudo.new_name("")
            else:
                elem.value = _map_values(elem.value, lambda v: self.pseudo.new_name(str(v)))
        elif vr == "UI":
            self._new_uids(elem)
            return
        elif vr == "CS":
            elem.value = safe.CS_DUMMIES.get(elem.keyword or "", "ANONYMIZED")
        elif vr in _DUMMY_TEXT:
            elem.value = _DUMMY_TEXT[vr]
        elif vr in safe.BINARY_VRS and not vr.startswith("O"):
            elem.value = 0
        else:
            elem.value = b"" if vr.startswith("O") or vr == "UN" else None
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

    def _date(self, ds: Dataset, elem: DataElement, top: bool) -> None:
        """Shifted under Modified Dates, kept under Full Dates, removed (or dummy / empty) otherwise;
        a value that does not parse is removed rather than kept unshifted."""
        if elem.is_empty or self.rules.full_dates:
            return
        if not self.rules.modified_dates:
            self._drop(ds, elem, top)
            return
        values = elem.value if isinstance(elem.value, (MultiValue, list, tuple)) else [elem.value]
        shifted = [shift_by_days(elem.VR, str(v), self.patient.shift_days) for v in values]
        if any(v is None for v in shifted):
            self._drop(ds, elem, top)
            return
        new = shifted if len(shifted) > 1 else shifted[0]
        if new != elem.value:
            elem.value = new
            self.tally.changes += 1

    def _clean(self, ds: Dataset, elem: DataElement, mode: _Mode, top: bool) -> None:
        vr = elem.VR
        if vr == "SQ":
            tag = int(elem.tag)
            cleaning = _CLEANING if tag in _STRUCTURED or tag in _GRAPHICS else mode
            self._walk_items(elem, cleaning)
        elif vr == "PN":
            self._dummy(elem)
        elif vr == "UI":
            if not self.rules.retain_uids:
                self._new_uids(elem)
        elif vr.startswith("O") or vr == "UN":  # "clean" on bulk data means removal
            self._drop(ds, elem, top)
        elif vr in safe.BINARY_VRS or vr in ("DS", "IS", "CS"):
            pass
        else:
            self._clean_text(ds, elem, top)

    def _clean_text(self, ds: Dataset, elem: DataElement, top: bool) -> None:
        if elem.is_empty:
            return
        if elem.VR == "PN":
            self._dummy(elem)
            return
        new = _map_values(elem.value, lambda v: scrub(str(v), self.patient.tokens, self._token_pattern()))
        if new != elem.value:
            elem.value = new
            self.tally.changes += 1
            if elem.is_empty or not any(str(v) for v in _values(elem)):
                if self._required(ds, int(elem.tag), top) == 1:  # nothing left of a required value
                    self._dummy(elem)

    def _token_pattern(self) -> re.Pattern[str] | None:
        if self._tokens is None and self.patient.tokens:
            self._tokens = token_pattern(self.patient.tokens)
        return self._tokens

    # -- private elements ------------------------------------------------------------------------

    def _private(self, ds: Dataset, tag: BaseTag, keep: set[BaseTag], mode: _Mode) -> None:
        if tag not in keep:
            del ds[tag]
            self.tally.removed += 1
            return
        elem = ds[tag]
        if tag.element < 0x0100:  # a private creator of a block something is kept in
            return
        vr = elem.VR
        if vr == "SQ":
            self._walk_items(elem, mode)
        elif vr in _DATE_VRS:
            self._date(ds, elem, False)
        elif vr == "UI":
            if not self.rules.retain_uids and not _class_uid(elem):
                self._new_uids(elem)
        elif vr == "PN":
            self._dummy(elem)
        elif vr in _FREE_TEXT_VRS:
            self._clean_text(ds, elem, False)

    def _kept_private(self, ds: Dataset) -> set[BaseTag]:
        keep: set[BaseTag] = set()
        for spec in self.allowlist:
            keep.update(t for t in spec.tags_in(ds) if t in ds)
        if self.rules.safe_private:
            for tag in ds.keys():
                if tag.is_private and tag.element >= 0x1000:
                    creator = creator_of(ds, tag)
                    if creator and (tag.group, creator, tag.element & 0xFF) in _SAFE_PRIVATE:
                        keep.add(tag)
        for tag in list(keep):  # keep the creator element of every block something is kept in
            keep.add(BaseTag((tag.group << 16) | (tag.element >> 8)))
        return keep

    # -- overlays in pixel data ------------------------------------------------------------------

    def _clear_overlay_bits(self, ds: Dataset) -> None:
        """Overlay planes stored in the unused high bits of native Pixel Data are cleared."""
        positions = []
        for group in range(0x6000, 0x6020, 2):
            bit = ds.get((group << 16) | 0x0102)  # Overlay Bit Position
            if bit is not None and not bit.is_empty and int(bit.value) > 0:
                positions.append(int(bit.value))
        if not positions or _PIXEL_DATA not in ds:
            return
        bits_allocated = int(ds.get("BitsAllocated", 0) or 0)
        bits_stored = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
        meta = getattr(ds, "file_meta", None)
        syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
        if bits_allocated not in (16, 32) or bits_stored >= bits_allocated or (syntax and syntax.is_compressed):
            return
        mask = 0
        for pos in positions:
            if bits_stored <= pos < bits_allocated:
                mask |= 1 << pos
        if not mask:
            return
        import numpy as np  # only for files that carry overlay bits

        dtype = np.dtype("<u2" if bits_allocated == 16 else "<u4")
        if syntax is not None and not syntax.is_little_endian:
            dtype = dtype.newbyteorder(">")
        raw = bytes(ds.PixelData)
        usable = len(raw) - len(raw) % dtype.itemsize
        pixels = np.frombuffer(raw[:usable], dtype=dtype).copy()
        pixels &= np.array(~mask & ((1 << bits_allocated) - 1), dtype=dtype)
        ds.PixelData = pixels.tobytes() + raw[usable:]
        self.tally.changes += 1


_SAFE_PRIVATE = table.SAFE_PRIVATE


def _raw_vr(ds: Dataset, tag: BaseTag) -> str | None:
    """The VR of an element that has not been decoded yet, when it is certain without decoding:
    its explicit VR, or (implicit VR) the dictionary's when that is a single VR. None for a
    decoded element, UN (decoding may replace it by the dictionary's), or an ambiguous VR."""
    return _vr_as_read(ds.get_item(tag))


def _vr_as_read(elem: DataElement | RawDataElement) -> str | None:
    """`_raw_vr` of an element as the dataset holds it (a deferred value counts as decoded)."""
    if not elem.is_raw or elem.value is None:
        return None
    vr = elem.VR
    if vr is None:
        vr = _dictionary_vr(int(elem.tag))
        if vr is None:
            return None
    return vr if len(vr) == 2 and vr != "UN" else None


@functools.lru_cache(maxsize=4096)
def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def _kept_as_read(tag: int, vr: str, action: str | None, mode: _Mode) -> bool:
    """Whether the walk would leave a public element whose VR as read is ``vr`` as it is,
    decided without decoding it (decoding and re-encoding every kept element was most of the
    profile's cost): the same decisions as ``_default`` and ``_act`` make for what they keep
    unchanged. Depends on the tag, the VR, the action and the mode only (ProfileRules keeps it)."""
    if vr == "SQ" or vr in _DATE_VRS:
        return False
    if action == "K":
        return True
    if action is not None or vr == "UI" or not dictionary_has_tag(tag):
        return False
    if tag in safe.CLEANED_TAGS or (mode.clean_text and vr in _FREE_TEXT_VRS):
        return False
    if tag in safe.SAFE_TAGS or vr in safe.BINARY_VRS or tag in safe.SAFE_BULK_TAGS:
        return True
    return vr in safe.CODED_VRS and tag >> 16 in safe.CODED_GROUPS


def _by_type(action: str, required: int) -> str:
    """Resolve an action for the attribute's type: type 1 needs a value, type 2 needs to be present."""
    if required == 1:
        return "D"
    if required == 2:
        return "Z"
    return "Z" if action in ("Z", "Z/D") else "X"


def _class_uid(elem: DataElement) -> bool:
    """SOP Class, Transfer Syntax and similar UIDs name a kind of thing, not an instance: kept,
    even when private (e.g. a vendor's SOP Class)."""
    keyword = elem.keyword or ""
    return keyword.endswith("ClassUID") or keyword in ("TransferSyntaxUID", "CodingSchemeUID", "ContextUID")


def _map_values(value: object, fn: Callable[[object], object]) -> object:
    if isinstance(value, (MultiValue, list, tuple)):
        return [fn(v) for v in value]
    return fn(value)


# -- free text -----------------------------------------------------------------------------------


def token_pattern(tokens: Iterable[str]) -> re.Pattern[str] | None:
    """One regex that finds any token as a whole word (case-insensitive)."""
    return _compiled(tuple(sorted({t for t in tokens if t.strip()}, key=lambda t: (-len(t), t))))


@functools.lru_cache(maxsize=256)  # the instances of one series share their tokens
def _compiled(words: tuple[str, ...]) -> re.Pattern[str] | None:
    if not words:
        return None
    alternatives = "|".join(re.escape(w) for w in words)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def scrub(text: str, tokens: tuple[str, ...], pattern: re.Pattern[str] | None = None) -> str:
    """Free text without identifying tokens (whole words only) and without phone-number shapes."""
    if pattern is None and tokens:
        pattern = token_pattern(tokens)
    if pattern is not None:
        text = pattern.sub("", text)
    text = _PHONE.sub("", text)
    return re.sub(r"\s{2,}", " ", text).strip()


_ID_KEYWORDS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "MedicalRecordLocator", "StudyID",
                "AdmissionID", "IssuerOfPatientID", "PatientTelephoneNumbers", "PatientAddress",
                "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName",
                "DeviceSerialNumber", "PerformedStationAETitle", "StationAETitle", "RetrieveAETitle",
                "RequestedProcedureID", "ScheduledProcedureStepID", "PerformedProcedureStepID",
                "FillerOrderNumberImagingServiceRequest", "PlacerOrderNumberImagingServiceRequest",
                "LocalNamespaceEntityID", "UniversalEntityID", "PatientBirthName", "PatientMotherBirthName",
                "OtherPatientNames", "PatientBirthDate", "ClinicalTrialSubjectID")
_NAME_SPLIT = re.compile(r"[\^=,\s]+")
_ID_TAGS = frozenset(int(tag_for_keyword(k)) for k in _ID_KEYWORDS + (  # type: ignore[arg-type]
    "SourceApplicationEntityTitle", "SendingApplicationEntityTitle", "ReceivingApplicationEntityTitle"))


def identifying_tokens(ds: Dataset, *, decode_private: bool = True) -> tuple[str, ...]:
    """Strings that identify people in this instance, for cleaning free text: every component of
    every person name anywhere (patient, physicians, operators, observers, names in private
    elements), the patient's and other IDs, accession and procedure numbers, addresses,
    institution and station names, AE titles. Short values count too (whole words only).

    ``decode_private=False`` leaves a private element whose VR as read is neither PN, SQ nor UN
    undecoded (it can give no token); for the profile's walk, which removes or decodes each."""
    tokens: set[str] = set()
    meta = getattr(ds, "file_meta", None)
    elements: list[DataElement] = list(_person_and_id_elements(ds, decode_private))
    if meta is not None:  # only its AE titles can identify (group 0002 is replaced when written)
        elements += list(_person_and_id_elements(meta, True))
    for elem in elements:
        if elem.VR == "PN":
            for value in _values(elem):
                text = str(value)
                for group in text.split("="):
                    for part in group.split("^")[:3]:  # family, given, middle (prefix / suffix are titles)
                        tokens.update(p for p in _NAME_SPLIT.split(part) if len(p) >= 2)
                if text.strip("^= "):
                    tokens.add(text.strip())
        elif int(elem.tag) in _ID_TAGS:
            for value in _values(elem):
                value_text = str(value).strip()
                if len(value_text) >= 2:
                    tokens.add(value_text)
    return tuple(sorted(tokens, key=len, reverse=True))


def _person_and_id_elements(ds: Dataset, decode_private: bool) -> Iterator[DataElement]:
    """Every element, in every sequence, that may be a person name or an identifier: PN, the ID
    tags, and whatever is of uncertain VR (private elements too, unless ``decode_private`` is
    False). Others are not decoded (what ``iterall`` would cost on every element of every instance)."""
    for tag, held in list(ds.items()):  # decoding one element changes no other one
        vr = None if decode_private and tag >> 16 & 1 else _vr_as_read(held)
        if vr is not None and vr not in ("PN", "SQ") and int(tag) not in _ID_TAGS:
            continue
        elem = ds[tag]
        yield elem
        if elem.VR == "SQ":
            for item in elem.value or ():
                yield from _person_and_id_elements(item, decode_private)


def _known(tag: int, vr: str, value: object) -> DataElement:
    """An element whose value is one of ours, known to be valid for its VR (no validation cost)."""
    return DataElement(tag, vr, value, validation_mode=config.IGNORE)


def _values(elem: DataElement | None) -> list[object]:
    if elem is None or elem.is_empty or elem.VR == "SQ":
        return []
    value = elem.value
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    return list(value) if isinstance(value, (MultiValue, list, tuple)) else [value]


def set_deidentification(ds: Dataset, rules: ProfileRules, script_hash: str | None) -> None:
    """PatientIdentityRemoved, DeidentificationMethod (text, with the table's edition) and its Code
    Sequence (CID 7050)."""
    ds.add(_known(0x00120062, "CS", "YES"))  # Patient Identity Removed
    method = [f"PS3.15 {table.EDITION} {table.BASIC_NAME}"[:64]]
    method += [table.OPTIONS[o][1][:64] for o in rules.options]
    if script_hash:
        method.append(f"DicomEdit script sha256:{script_hash[:40]}")
    ds.add(_known(0x00120063, "LO", method if len(method) > 1 else method[0]))  # De-identification Method
    items = []
    for code, meaning in rules.codes:
        item = Dataset()
        item.add(_known(0x00080100, "SH", code))
        item.add(_known(0x00080102, "SH", "DCM"))
        item.add(_known(0x00080104, "LO", meaning))
        items.append(item)
    ds.add(_known(0x00120064, "SQ", Sequence(items)))  # De-identification Method Code Sequence
    if rules.modified_dates:
        ds.LongitudinalTemporalInformationModified = "MODIFIED"
    elif "retain_long_full_dates" in rules.options:
        ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
    else:
        ds.LongitudinalTemporalInformationModified = "REMOVED"
