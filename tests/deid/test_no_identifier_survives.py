"""No identifier survives: the planted vendor corpus through the Anonymizer, for every option and for
pairs of options that disagree, then a scan of the written bytes and of every value at every depth."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomd.anonymize import Anonymizer, Labels, PseudonymStore
from dicomd.config import PROFILE_OPTIONS, AnonymizeConfig

from .corpus import PLANTED, Sample

SINGLE = [(), *[(o,) for o in PROFILE_OPTIONS]]
CONFLICTS = [
    ("retain_patient_chars", "retain_long_modified_dates"),
    ("retain_device_id", "clean_descriptors"),
    ("retain_safe_private", "retain_long_modified_dates"),
    ("retain_device_id", "retain_long_modified_dates"),
    ("retain_institution_id", "clean_descriptors"),
    ("clean_structured_content", "retain_long_modified_dates"),
    ("clean_graphics", "clean_descriptors"),
    ("retain_uids", "retain_long_modified_dates"),
    tuple(o for o in PROFILE_OPTIONS if o != "retain_long_full_dates"),
]


def _forbidden(sample: Sample, options: tuple[str, ...]) -> tuple[set[str], set[str]]:
    """The strings (and UIDs) this option set must remove; retained categories are left out."""
    kept = set()
    if "retain_institution_id" in options:
        kept.add("institution")
    if "retain_device_id" in options:
        kept.add("device")
    if "retain_long_full_dates" in options:
        kept.add("dates")
    strings: set[str] = set()
    for category, values in PLANTED.items():
        if category not in kept:
            strings.update(values)
    for category, values in sample.originals.items():
        if category not in kept:
            strings.update(values)
    uids = set() if "retain_uids" in options else set(sample.uids)
    return strings, uids


def _values(ds: Dataset, prefix: str = "") -> list[tuple[str, str, str]]:
    out = []
    for elem in ds:
        path = f"{prefix}{elem.tag}"
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or ()):
                out += _values(item, f"{path}[{i}]/")
        elif elem.tag != 0x7FE00010:
            value = elem.value
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            out.append((path, elem.VR, text))
    return out


def _hits(raw: bytes, strings: set[str], uids: set[str], retain_uids: bool) -> list[str]:
    ds = pydicom.dcmread(io.BytesIO(raw), force=True)
    values = _values(ds.file_meta, "meta/") + _values(ds)
    found = []
    kept_uids = {text for _path, vr, text in values if vr == "UI"} if retain_uids else set()
    for path, vr, text in values:
        if vr == "UI" and (retain_uids or text.startswith("2.25.")):  # ours are digits from a hash;
            continue  # Retain UIDs keeps what original UIDs embed (dates, serials)
        low = text.lower()
        for s in strings:
            if s.lower() in low:
                found.append(f"{s!r} in {path} ({vr}): {text[:80]!r}")
        for uid in uids:
            if uid in text.split("\\") or (vr != "UI" and uid in text):
                found.append(f"original UID {uid} in {path}")
    for s in strings | {u for u in uids if len(u) >= 16}:
        if any(s in uid for uid in kept_uids) or s.isdigit():
            continue
        if len(s) >= 6 and (s.encode("utf-8") in raw or s.encode("latin-1", "ignore") in raw):
            found.append(f"{s!r} in the encoded bytes")
    return found


def _anonymize(path: Path, anonymizer: Anonymizer) -> bytes:
    ds = pydicom.dcmread(path, force=True)
    anonymizer.apply(ds, Labels("deid", "S01", "S01_V1", "explicit", "explicit"))
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)  # as the archive writer writes
    return buf.getvalue()


@pytest.mark.parametrize("options", SINGLE + CONFLICTS, ids=lambda o: "+".join(o) or "basic")
def test_no_planted_or_original_identifier_survives(corpus, store: PseudonymStore, options):
    # Given the vendor corpus with identifiers planted everywhere real systems put them
    anonymizer = Anonymizer("deid", AnonymizeConfig(enabled=True, options=options), store)
    problems = []
    for path, sample in corpus:
        # When it is anonymized with this option set and written
        raw = _anonymize(path, anonymizer)
        # Then no planted or original identifier is left, at any depth, in the meta or the bytes
        strings, uids = _forbidden(sample, options)
        problems += [f"{sample.name}: {hit}" for hit in _hits(raw, strings, uids, "retain_uids" in options)]
    assert not problems, "\n".join(problems[:40])


def test_the_corpus_holds_what_it_claims(corpus):
    # the planted strings are really in the input (a scan that finds nothing proves nothing)
    for path, sample in corpus:
        raw = path.read_bytes()
        for category in ("names", "ids", "institution", "network"):
            for s in PLANTED[category]:
                assert s.encode() in raw, (sample.name, s)
        assert sample.name.startswith(("priv_SQ", "nested")) or sample.uids
