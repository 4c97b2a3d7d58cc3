"""Property-based tests (hypothesis): routing rules and label cleaning, safe file names, the
DicomEdit parser and the header reader never fail with anything but their documented errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dicomd.errors import InvalidInput, ScriptError
from dicomd.testing.generator import generate_study, instance_bytes
from dicomd.header import ROUTING_TAGS, read_header
from dicomd.layout import Layout, safe_name
from dicomd.routing import (
    MAX_RULE_VALUE,
    RoutingTable,
    clean_label,
    comment_assignments,
    parse_rule,
    route,
)

LABEL = re.compile(r"^[A-Za-z0-9_-]*$")
PROJECTS = {"demo": "demo", "auto": "auto", "DEMO": "demo", "study-1": "study-1"}
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=80)
header_values = st.one_of(
    texts,
    st.sampled_from(["Project: demo", "project:auto Subject: s1 Session: x", "AA: true", "demo", "DEMO",
                     "Subject:", "Session: ../../etc", "Project: nope", "\x00\\\\", " study-1 "]),
)
headers = st.dictionaries(st.sampled_from(ROUTING_TAGS), header_values, max_size=len(ROUTING_TAGS))


def resolve(name: str) -> str | None:
    return PROJECTS.get(name.strip()) or PROJECTS.get(name.strip().lower())


@FAST
@given(texts)
@example("..")
@example("a/b\\c")
def test_clean_label_is_safe_and_idempotent(value: str) -> None:
    cleaned = clean_label(value)
    assert LABEL.match(cleaned)
    assert clean_label(cleaned) == cleaned
    assert len(cleaned) == len(value.strip())


@FAST
@given(texts)
@example("../../etc/passwd")
@example("")
@example(".")
def test_safe_names_never_leave_their_folder(value: str) -> None:
    name = safe_name(value)
    assert name and "/" not in name and "\\" not in name and name not in (".", "..")
    assert not name.startswith(".") and len(name) <= 128
    folder = Path("/data/prearchive/p/t/s/SCANS/1/DICOM")
    assert (folder / Layout.instance_name(value)).resolve().parent == folder


rule_texts = st.one_of(
    texts,
    st.builds(lambda g, e, rx, grp: f"({g},{e}):{rx}" + (f":{grp}" if grp is not None else ""),
              st.sampled_from(["0008", "0010", "0020", "zzzz", "08"]), st.sampled_from(["1030", "0010", "4000", "x"]),
              st.sampled_from(["(.*)", "[", "Project: (\\w+)", "(a)(b)", "", "(?P<x>.)", "\\", "(.*"]),
              st.one_of(st.none(), st.integers(0, 3))),
)


@FAST
@given(rule_texts, headers)
def test_routing_rules_parse_or_say_why_and_apply_safely(text: str, header: dict[int, str]) -> None:
    try:
        rule = parse_rule(text)
    except ValueError as exc:
        assert str(exc)
        return
    value = rule.apply(header)
    assert value is None or (0 < len(value) <= MAX_RULE_VALUE)


@FAST
@given(headers, st.sampled_from(["", "demo"]), st.lists(rule_texts, max_size=3))
def test_route_always_gives_a_safe_destination(header: dict[int, str], fixed: str, rules: list[str]) -> None:
    good = []
    for text in rules:
        try:
            parse_rule(text)
            good.append(text)
        except ValueError:
            pass
    table = RoutingTable.from_text(type("R", (), {"project": good, "subject": good, "session": good})())
    where = route(header, resolve_project=resolve, table=table, fixed_project=fixed)
    assert where.project in ("demo", "auto", "study-1", "Unassigned")
    if fixed:
        assert where.project == "demo"
    assert where.session and LABEL.match(where.session) and where.session.strip("_")
    assert LABEL.match(where.subject)
    assert isinstance(comment_assignments(header), dict)


# ------------------------------------------------------------------ DicomEdit parser

_FRAGMENTS = [
    'version "6.3"', 'version "6.1"', "\n", "\n", " ", "(0010,0010)", "(0008,1030)", "(0010,{SIEMENS}10)", "(50XX,0010)",
    "*/", "+/", ".", ":=", "=", "?", ":", "~", "!=", "!~", "-", "[", "]", "{", "}", "(", ")", ",", '"x"', '"a\\"b"',
    '"', "'", "1", "-2.5", "new", "UID", "hashUID", "hashUID[(0020,000D)]", "format[\"{0}\", (0010,0020)]",
    "if", "elseif", "else", "describe", "hidden", "const", "immutable", "export", "echo", "removeAllPrivateTags",
    "x", "project", "subject", "session", "modality", "lowercase", "substring", "replace", "//", "/*", "*/",
    "\\", "\t", "\u00e9", "\x00", "%", "@", "#",
]
scripts = st.one_of(
    texts,
    st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map(" ".join),
    st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map(lambda xs: 'version "6.3"\n' + "".join(xs)),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scripts)
@example('version "6.3"\n(0010,0010) := "x"\n')
@example('version "6.3"\nif (0008,1030) = "a" { (0010,0010) := "b" } else { - (0010,0020) }\n')
@example("(" * 2000)
def test_dicomedit_parser_fails_only_with_script_error(text: str) -> None:
    parse = pytest.importorskip("dicomd.anonymize.script.syntax").parse
    try:
        script = parse(text)
    except ScriptError as exc:
        assert str(exc)
        return
    assert script.version


@FAST
@given(texts)
def test_tag_path_parser_fails_only_with_script_error(text: str) -> None:
    parse_tagpath = pytest.importorskip("dicomd.anonymize.script.syntax").parse_tagpath
    try:
        parse_tagpath(text)
    except ScriptError:
        pass


# ------------------------------------------------------------------ header reader

_GOOD = instance_bytes(generate_study(5, series=1, instances_per_series=1, rows=8, cols=8)[0])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=600),
    st.tuples(st.integers(0, len(_GOOD) - 1), st.binary(min_size=1, max_size=16)).map(
        lambda t: _GOOD[: t[0]] + t[1] + _GOOD[t[0] + len(t[1]):]),  # overwrite a few bytes anywhere
    st.integers(0, len(_GOOD)).map(lambda n: _GOOD[:n]),  # cut anywhere
))
def test_header_reader_fails_only_with_invalid_input(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    path = tmp_path_factory.mktemp("hdr") / "x.dcm"
    path.write_bytes(data)
    try:
        header = read_header(path)
    except InvalidInput as exc:
        assert str(exc)
        return
    assert header.sop_instance_uid and header.study_instance_uid
