"""A project's de-identification with its archive-time steps in the order `/xapi/processors` set:
the DicomEdit script before the PS3.15 profile (the profile then de-identifies what the script
produced). Built by `Anonymizers.in_order` from a profile-only and a script-only Anonymizer; it
stands wherever an Anonymizer does (apply, archive_labels, burned_in_reason, fingerprint).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from dicomd.anonymize.anonymizer import AnonResult, Anonymizer, Labels
from dicomd.anonymize.pseudonyms import PseudonymStore

SCRIPT_FIRST = "order:script,profile"


class ScriptFirst:
    def __init__(self, full: Anonymizer, script_only: Anonymizer, profile_only: Anonymizer) -> None:
        self.full = full
        self.script_only = script_only
        self.profile_only = profile_only
        self.settings = full.settings
        self.fingerprint = f"{full.fingerprint};{SCRIPT_FIRST}"  # recorded next to what it produced

    @property
    def script_hash(self) -> str | None:
        return self.full.script_hash

    @property
    def options(self) -> tuple[str, ...]:
        return self.full.options

    def archive_labels(self, ds_original: Dataset, labels: Labels) -> tuple[str, str]:
        return self.full.archive_labels(ds_original, labels)

    def burned_in_reason(self, ds: Dataset) -> str | None:
        return self.full.burned_in_reason(ds)

    def apply(self, ds: Dataset, labels: Labels) -> AnonResult:
        """The script, then the profile; the script stays named among the de-identification methods."""
        first = self.script_only.apply(ds, labels)
        second = self.profile_only.apply(ds, labels)
        if self.script_hash:
            value = ds.get("DeidentificationMethod", "")
            methods = list(value) if isinstance(value, MultiValue) else ([str(value)] if value else [])
            ds.DeidentificationMethod = [*methods, f"DicomEdit script sha256:{self.script_hash[:40]}"]
        return AnonResult(first.changes + second.changes, first.removed + second.removed, self.script_hash,
                          self.options)


def script_first(full: Anonymizer, store: PseudonymStore) -> ScriptFirst:
    """``full``'s steps with the script first (its project's settings, split in two)."""
    settings = full.settings
    return ScriptFirst(full, Anonymizer(full.project, dataclasses.replace(settings, profile="none"), store),
                       Anonymizer(full.project, dataclasses.replace(settings, script=""), store))


def in_order(full: Anonymizer, store: PseudonymStore, order: Sequence[str]) -> Anonymizer | ScriptFirst:
    """``full`` as the archive runs it for ``order`` (dicomd.processors.archive_order)."""
    return script_first(full, store) if tuple(order) == ("script", "profile") else full
