"""docs/anonymization.md names every allowlisted attribute, the table's edition and every option."""

from __future__ import annotations

from pathlib import Path

from dicomd.anonymize import ps315_table, safe_public
from dicomd.config import PROFILE_OPTIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "anonymization.md"


def test_the_doc_names_the_allowlist_the_edition_and_the_options():
    text = DOC.read_text()
    names = {k for group in safe_public.SAFE_KEYWORDS.values() for k in group}
    names |= set(safe_public.CLEANED_LABELS) | set(safe_public.SAFE_BULK)
    missing = sorted(n for n in names if f"`{n}`" not in text and n not in text)
    assert not missing, f"add to docs/anonymization.md: {missing}"
    for group in safe_public.CODED_GROUPS:
        assert f"{group:04X}" in text, f"{group:04X}"
    assert ps315_table.EDITION in text
    for option in PROFILE_OPTIONS:
        assert f"`{option}`" in text, option
