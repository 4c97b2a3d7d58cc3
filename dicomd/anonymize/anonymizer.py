"""What the archive step and the ingest step call: a project's Anonymizer and the SiteScript."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from dicomd.anonymize.filemeta import fresh_file_meta
from dicomd.anonymize.privatetags import PrivateTagSpec, parse_private_tag
from dicomd.anonymize.profile import (
    PatientContext, ProfileRun, build_rules, identifying_tokens, set_deidentification,
)
from dicomd.anonymize.pseudonyms import PseudonymStore, Pseudonymizer
from dicomd.anonymize.script.functions import parse_lookup_table
from dicomd.anonymize.script.interpreter import Interpreter
from dicomd.anonymize.script.syntax import Script, parse
from dicomd.config import AnonymizeConfig
from dicomd.errors import ConfigError, ScriptError
from dicomd.pixels.detect import burned_in_reasons

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Labels:
    """Routing result, exposed to scripts as the variables project, subject and session."""

    project: str
    subject: str
    session: str
    subject_from: str = "default"  # explicit | rule | comment | patient_name | default
    session_from: str = "default"  # explicit | rule | comment | patient_id | default


@dataclass(frozen=True)
class AnonResult:
    changes: int
    removed: int
    script_hash: str | None
    options: tuple[str, ...]


@dataclass(frozen=True)
class LoadedScript:
    script: Script
    sha256: str
    path: str
    lookup_table: dict[str, str]


def load_script(path: str | Path) -> LoadedScript:
    """Read and parse a script file (and its `<name>.lookup` table when there is one)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ScriptError(f"{path}: cannot read the script: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScriptError(f"{path}: not UTF-8 text ({exc})") from None
    script = parse(text, str(path))
    lookup_path = path.with_suffix(".lookup")
    table: dict[str, str] = {}
    if lookup_path.exists():
        try:
            table = parse_lookup_table(lookup_path.read_text("utf-8"))
        except ValueError as exc:
            raise ScriptError(f"{lookup_path}: {exc}") from None
    return LoadedScript(script, hashlib.sha256(raw).hexdigest(), str(path), table)


def check_script(path: str | Path) -> list[str]:
    """Problems with one script file, for `dicomd anon check FILE`; an empty list when it is fine."""
    try:
        load_script(path)
    except ScriptError as exc:
        return [str(exc)]
    return []


class Anonymizer:
    """Built once per project from its AnonymizeConfig, reused for many instances (thread-safe)."""

    def __init__(self, project: str, settings: AnonymizeConfig, store: PseudonymStore) -> None:
        self.project = project
        self.settings = settings
        self._rules = build_rules(settings.options) if settings.profile == "basic" else None
        try:
            self._allowlist: tuple[PrivateTagSpec, ...] = tuple(
                parse_private_tag(entry) for entry in settings.private_allowlist
            )
        except ValueError as exc:
            raise ConfigError(f"projects.{project}.anonymize.private_allowlist: {exc}") from None
        self._loaded = load_script(settings.script) if settings.script else None
        key, version = store.key_and_version(key_owner(project, settings))
        self._pseudo = Pseudonymizer(project, key, store, version)
        self._interpreter = (
            Interpreter(self._loaded.script, self._loaded.path, self._loaded.lookup_table, key)
            if self._loaded else None
        )

    @property
    def options(self) -> tuple[str, ...]:
        return self._rules.options if self._rules else ()

    @property
    def script_hash(self) -> str | None:
        return self._loaded.sha256 if self._loaded else None

    @property
    def fingerprint(self) -> str:
        """Profile, options and script hash: recorded in the catalog next to what it produced."""
        profile = "PS3.15-basic" if self._rules else "no-profile"
        parts = [profile + "".join(f"+{o}" for o in self.options)]
        if self._loaded:
            parts.append(f"script:sha256:{self._loaded.sha256}")
        return ";".join(parts)

    # -- labels ----------------------------------------------------------------------------------

    def _patient(self, ds: Dataset) -> tuple[str, str, int]:
        return self._pseudo.patient(str(ds.get("PatientID", "") or ""), str(ds.get("PatientName", "") or ""),
                                    str(ds.get("IssuerOfPatientID", "") or ""))

    def archive_labels(self, ds_original: Dataset, labels: Labels) -> tuple[str, str]:
        """(subject, session) for the archive. Labels derived from Patient Name / ID become
        pseudonyms; labels from routing rules, comments or explicit parameters are kept only when
        they hold no identifying token of the dataset (names, IDs, accession...), else they are
        pseudonymized the same way."""
        subject, session = labels.subject, labels.session
        tokens: tuple[str, ...] | None = None
        if labels.subject_from in _GIVEN and subject:
            tokens = identifying_tokens(ds_original)
            leaks = label_leaks(subject, tokens)
        else:
            leaks = False
        if labels.subject_from == "patient_name" or leaks:
            new_id = self._subject_pseudonym(ds_original, subject)
            self._pseudo.remember("subject_label", subject, new_id)
            subject = new_id
        if labels.session_from in _GIVEN and session:
            tokens = identifying_tokens(ds_original) if tokens is None else tokens
            leaks = label_leaks(session, tokens)
        else:
            leaks = False
        if labels.session_from == "patient_id" or leaks:
            new_session = self._pseudo.new_id(session)
            self._pseudo.remember("session_label", session, new_session)
            session = new_session
        return subject, session

    def _subject_pseudonym(self, ds: Dataset, subject: str) -> str:
        """The subject label is the archived Patient ID (version 1 keys: only when there is one)."""
        if self._pseudo.version == 1 and not ds.get("PatientID"):
            return self._pseudo.new_id(subject)
        return self._patient(ds)[0]

    # -- the work --------------------------------------------------------------------------------

    def apply(self, ds: Dataset, labels: Labels) -> AnonResult:
        """De-identify in place: profile (if any), then the project script. Rejected on `reject`."""
        subject, session = self.archive_labels(ds, labels)
        changes = removed = 0
        if self._rules is not None:
            new_id, new_name, days = self._patient(ds)
            tokens = identifying_tokens(ds, decode_private=False)  # the walk removes or decodes each private one
            run = ProfileRun(self._rules, self._pseudo, self._allowlist, PatientContext(new_id, new_name, days, tokens))
            run.apply(ds)
            set_deidentification(ds, self._rules, self.script_hash)
            changes, removed = run.tally.changes, run.tally.removed
        elif self._loaded is not None:
            ds.DeidentificationMethod = f"DicomEdit script sha256:{self._loaded.sha256[:40]}"
        if self._interpreter is not None:
            counts = self._interpreter.run(ds, {"project": self.project, "subject": subject, "session": session})
            changes += counts.changes
            removed += counts.removed
        fresh_file_meta(ds)
        return AnonResult(changes, removed, self.script_hash, self.options)

    def burned_in_reason(self, ds: Dataset) -> str | None:
        """Why this instance may carry burned-in text, or None when fine (or the project allows it).
        The archive step's hold also weighs the redaction rules: dicomd.pixels.policy.PixelPolicy."""
        if self.settings.allow_burned_in:
            return None
        return burned_in_reason(ds)


_GIVEN = frozenset({"explicit", "rule", "comment"})


def key_owner(project: str, settings: AnonymizeConfig) -> str:
    """Whose key a project uses: its own, or its key group's (shared by the projects naming it)."""
    return f"group:{settings.key_group}" if settings.key_group else project


def label_leaks(label: str, tokens: tuple[str, ...]) -> bool:
    """Whether an archive label holds an identifying token: a token's words all among the label's
    words, or (tokens of 4+ characters) its letters and digits anywhere in the label's."""
    low = label.lower()
    words = {w for w in re.split(r"[^0-9a-z]+", low) if w}
    squashed = re.sub(r"[^0-9a-z]", "", low)
    for token in tokens:
        token_low = token.lower()
        parts = [p for p in re.split(r"[^0-9a-z]+", token_low) if p]
        if not parts:
            continue
        if all(p in words for p in parts):
            return True
        token_squashed = "".join(parts)
        if len(token_squashed) >= 4 and token_squashed in squashed:
            return True
    return False


def burned_in_reason(ds: Dataset) -> str | None:
    """Every reason (dicomd.pixels.detect) this instance may carry burned-in text, or None."""
    return "; ".join(burned_in_reasons(ds)) or None


class SiteScript:
    """The site-wide DicomEdit script run on each instance as it enters the prearchive."""

    def __init__(self, path: str) -> None:
        self._loaded = load_script(path)
        self._interpreter = Interpreter(self._loaded.script, self._loaded.path, self._loaded.lookup_table, None)

    @property
    def sha256(self) -> str:
        return self._loaded.sha256

    def apply(self, ds: Dataset, labels: Labels) -> None:
        self._interpreter.run(ds, {"project": labels.project, "subject": labels.subject, "session": labels.session})
        fresh_file_meta(ds)
