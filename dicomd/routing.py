"""Pure routing: header attributes + source -> (project, subject, session label).

Follows XNAT's "classic" identifier: explicit values win; then the receiver's fixed project,
routing rules, `Project:`/`Subject:`/`Session:` assignments in the comment tags, Study Description
or Accession Number naming a known project; subject falls back to Patient Name and session to
Patient ID. Unroutable data goes to `Unassigned`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from dicomd.errors import InvalidInput

# Tags routing may read; ingest reads only these (plus UIDs) from the header.
COMMENT_TAGS = (0x00104000, 0x00324000, 0x001021B0)  # Patient / Study Comments, Additional Patient History
STUDY_DESCRIPTION = 0x00081030
ACCESSION_NUMBER = 0x00080050
PATIENT_NAME = 0x00100010
PATIENT_ID = 0x00100020
DEFAULT_SESSION = "dicom_upload"
UNASSIGNED = "Unassigned"  # the project of unroutable data (admins only; archived only after a move)

_RULE_RE = re.compile(r"^\(\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)\s*:(.*?)(?::(\d+))?$", re.S)
_ASSIGN_RE = re.compile(r"(?i)\b(project|subject|session|aa)\s*:\s*([\w-]*)")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_RULE_VALUE = 64
MAX_LABEL = 64  # XNAT's bound for project, subject and session labels: folder names stay far below NAME_MAX

Header = Mapping[int, str]  # tag (as int) -> string value, as ingest read it


@dataclass(frozen=True)
class Rule:
    tag: int
    pattern: re.Pattern[str]
    group: int
    text: str

    def apply(self, header: Header) -> str | None:
        value = header.get(self.tag)
        if not value:
            return None
        match = self.pattern.search(value)
        if not match:
            return None
        try:
            found = match.group(self.group)
        except IndexError:
            return None
        return found[:MAX_RULE_VALUE] if found else None


def parse_rule(text: str) -> Rule:
    """Parse `(gggg,eeee):regex[:group]`; ValueError with a reason when it does not parse."""
    match = _RULE_RE.match(text.strip())
    if not match:
        raise ValueError(f"routing rule {text!r} is not of the form (gggg,eeee):regex[:group]")
    group_txt, elem_txt, regex, group = match.groups()
    try:
        pattern = re.compile(regex)
    except re.error as exc:
        raise ValueError(f"routing rule {text!r}: bad regular expression: {exc}") from None
    index = int(group) if group else 1
    if index > pattern.groups:
        raise ValueError(f"routing rule {text!r}: group {index} but the regex has {pattern.groups}")
    return Rule(int(group_txt + elem_txt, 16), pattern, index, text)


def clean_label(value: str) -> str:
    """XNAT label cleaning: every character outside [A-Za-z0-9_-] becomes '_'."""
    return _UNSAFE.sub("_", value.strip())


def check_label(value: str, what: str) -> str:
    """A label given by a person (HTTP parameter, CLI option): refused when longer than MAX_LABEL."""
    if len(value) > MAX_LABEL:
        raise InvalidInput(f"{what} is {len(value)} characters long; labels have at most {MAX_LABEL}")
    return value


def study_label(base: str, study_uid: str) -> str:
    """One label per study from a fallback label (the Patient ID, or none): the same study always
    gets the same label, another study of the patient another one: `PID000123_3f9a2c81`. Only the
    Study Instance UID decides (instances of one study that disagree on other values stay together)."""
    suffix = "_" + hashlib.sha256(study_uid.encode()).hexdigest()[:8]
    return base[: MAX_LABEL - len(suffix)] + suffix


def comment_assignments(header: Header) -> dict[str, str]:
    """`Key: value` assignments from the comment tags, first tag that has a key wins."""
    found: dict[str, str] = {}
    for tag in COMMENT_TAGS:
        for key, value in _ASSIGN_RE.findall(header.get(tag) or ""):
            found.setdefault(key.lower(), value)
    return found


@dataclass(frozen=True)
class Explicit:
    """Values that win over everything (an HTTP import's project/subject/session)."""

    project: str = ""
    subject: str = ""
    session: str = ""

    def __post_init__(self) -> None:
        for what in ("project", "subject", "session"):
            check_label(getattr(self, what), what)


@dataclass(frozen=True)
class Route:
    project: str
    subject: str
    session: str
    subject_from: str  # explicit | rule | comment | patient_name | default
    session_from: str  # explicit | rule | comment | patient_id | default
    auto_archive: bool | None = None  # `AA: true|false` in the comments


@dataclass(frozen=True)
class RoutingTable:
    """Rules in the order they are tried (receiver's first, then site-wide)."""

    project: tuple[Rule, ...] = ()
    subject: tuple[Rule, ...] = ()
    session: tuple[Rule, ...] = ()

    @classmethod
    def from_text(cls, *rule_sets: "object") -> "RoutingTable":
        """Build from config.RoutingRules objects, earlier sets tried first."""
        return cls(
            project=tuple(parse_rule(r) for rs in rule_sets for r in getattr(rs, "project")),
            subject=tuple(parse_rule(r) for rs in rule_sets for r in getattr(rs, "subject")),
            session=tuple(parse_rule(r) for rs in rule_sets for r in getattr(rs, "session")),
        )


def _first(rules: Sequence[Rule], header: Header) -> str | None:
    for rule in rules:
        value = rule.apply(header)
        if value:
            return value
    return None


def route(
    header: Header,
    *,
    resolve_project: Callable[[str], str | None],
    table: RoutingTable = RoutingTable(),
    fixed_project: str = "",
    explicit: Explicit = Explicit(),
    study_uid: str | None = None,
) -> Route:
    """Decide where one instance goes. ``resolve_project`` maps an ID or alias to a project ID.
    With ``study_uid``, a fallback session label is made per study (:func:`study_label`); without
    it, the Patient ID itself is the label (XNAT's rule)."""
    comments = comment_assignments(header)
    project = _pick_project(header, comments, resolve_project, table, fixed_project, explicit)
    subject, subject_from = _pick(
        explicit.subject, table.subject, header, comments.get("subject"), header.get(PATIENT_NAME), "patient_name"
    )
    session, session_from = _pick(
        explicit.session, table.session, header, comments.get("session"), header.get(PATIENT_ID), "patient_id"
    )
    if not session:
        session, session_from = DEFAULT_SESSION, "default"
    if study_uid is not None and session_from in ("patient_id", "default"):
        session = study_label(session, study_uid)
    if not subject:
        subject, subject_from = "", "default"
    aa = comments.get("aa", "").lower()
    return Route(
        project=project,
        subject=subject,
        session=session,
        subject_from=subject_from,
        session_from=session_from,
        auto_archive=True if aa == "true" else False if aa == "false" else None,
    )


def _pick(
    explicit: str, rules: Sequence[Rule], header: Header, comment: str | None, fallback: str | None, fallback_name: str
) -> tuple[str, str]:
    candidates = (
        (explicit, "explicit"),
        (_first(rules, header), "rule"),
        (comment, "comment"),
        (fallback, fallback_name),
    )
    for value, origin in candidates:
        cleaned = clean_label(value)[:MAX_LABEL] if value else ""  # header values are cut, never refused
        if cleaned.strip("_"):
            return cleaned, origin
    return "", "default"


def _pick_project(
    header: Header,
    comments: Mapping[str, str],
    resolve: Callable[[str], str | None],
    table: RoutingTable,
    fixed: str,
    explicit: Explicit,
) -> str:
    candidates: list[str | None] = [explicit.project, fixed]
    candidates += [rule.apply(header) for rule in table.project]
    candidates += [comments.get("project"), header.get(STUDY_DESCRIPTION), header.get(ACCESSION_NUMBER)]
    for candidate in candidates:
        if candidate and candidate.strip():
            project = resolve(candidate.strip())
            if project:
                return project
    return UNASSIGNED
