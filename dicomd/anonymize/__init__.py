"""De-identification: the PS3.15 Basic Profile with options, DicomEdit 6 scripts, keyed pseudonyms.

The archive step builds one `Anonymizer` per project and calls `apply` on every instance; the
ingest step runs the `SiteScript`. `preview` shows what would change; `check_script` validates a
script file for `dicomd anon check`.
"""

from dicomd.anonymize.anonymizer import (
    AnonResult,
    Anonymizer,
    Labels,
    SiteScript,
    burned_in_reason,
    check_script,
    load_script,
)
from dicomd.anonymize.preview import Change, preview
from dicomd.anonymize.pseudonyms import PseudonymStore

__all__ = [
    "AnonResult",
    "Anonymizer",
    "Change",
    "Labels",
    "PseudonymStore",
    "SiteScript",
    "burned_in_reason",
    "check_script",
    "load_script",
    "preview",
]
