"""The routing function on its own: a table of cases."""

import pytest

from dicomd.routing import (
    ACCESSION_NUMBER, PATIENT_ID, PATIENT_NAME, STUDY_DESCRIPTION, Explicit, RoutingTable, clean_label, parse_rule, route,
)

PATIENT_COMMENTS, STUDY_COMMENTS, HISTORY = 0x00104000, 0x00324000, 0x001021B0
PROJECTS = {"demo": "demo", "DEMO_ALIAS": "demo", "other": "other"}


def resolve(name):
    for key, pid in PROJECTS.items():
        if key.lower() == name.lower():
            return pid
    return None


CASES = [
    # (header, kwargs, expected (project, subject, session, subject_from, session_from))
    ({PATIENT_NAME: "Doe^John", PATIENT_ID: "123"}, {}, ("Unassigned", "Doe_John", "123", "patient_name", "patient_id")),
    ({STUDY_DESCRIPTION: "demo"}, {}, ("demo", "", "dicom_upload", "default", "default")),
    ({STUDY_DESCRIPTION: "demo brain"}, {}, ("Unassigned", "", "dicom_upload", "default", "default")),
    ({ACCESSION_NUMBER: "other"}, {}, ("other", "", "dicom_upload", "default", "default")),
    ({STUDY_DESCRIPTION: "nope", ACCESSION_NUMBER: "demo_alias"}, {}, ("demo", "", "dicom_upload", "default", "default")),
    ({PATIENT_COMMENTS: "Project: other Subject: S1 Session: V1"}, {}, ("other", "S1", "V1", "comment", "comment")),
    ({PATIENT_COMMENTS: "project:other,subject : S-2;session:V_2"}, {}, ("other", "S-2", "V_2", "comment", "comment")),
    ({STUDY_COMMENTS: "Project: demo", HISTORY: "Project: other"}, {}, ("demo", "", "dicom_upload", "default", "default")),
    ({PATIENT_COMMENTS: "Project: nosuch", STUDY_DESCRIPTION: "demo"}, {}, ("demo", "", "dicom_upload", "default", "default")),
    ({PATIENT_COMMENTS: "Project: other"}, {"fixed_project": "demo"}, ("demo", "", "dicom_upload", "default", "default")),
    ({PATIENT_NAME: "A^B"}, {"explicit": Explicit("other", "SX", "EX")}, ("other", "SX", "EX", "explicit", "explicit")),
    ({STUDY_DESCRIPTION: "site_demo_x"},
     {"table": RoutingTable(project=(parse_rule(r"(0008,1030):site_(\w+?)_"),))},
     ("demo", "", "dicom_upload", "default", "default")),
    ({PATIENT_ID: "P 7/8"}, {}, ("Unassigned", "", "P_7_8", "default", "patient_id")),
]


@pytest.mark.parametrize("header,kwargs,expected", CASES)
def test_route_table(header, kwargs, expected):
    r = route(header, resolve_project=resolve, **kwargs)
    assert (r.project, r.subject, r.session, r.subject_from, r.session_from) == expected


def test_aa_override():
    assert route({PATIENT_COMMENTS: "AA: true"}, resolve_project=resolve).auto_archive is True
    assert route({PATIENT_COMMENTS: "aa:false"}, resolve_project=resolve).auto_archive is False
    assert route({}, resolve_project=resolve).auto_archive is None


def test_rule_group_and_length():
    rule = parse_rule(r"(0010,0020):^(\w)(\w+):2")
    assert rule.apply({PATIENT_ID: "ABCDEF"}) == "BCDEF"
    assert parse_rule(r"(0010,0020):(.*)").apply({PATIENT_ID: "x" * 100}) == "x" * 64


@pytest.mark.parametrize("bad", ["0010,0020:x", "(0010,0020)", "(0010,0020):(", "(0010,002G):x", "(0010,0020):x:2"])
def test_bad_rules_are_refused(bad):
    with pytest.raises(ValueError):
        parse_rule(bad)


def test_clean_label():
    assert clean_label(" Doe^John Q. ") == "Doe_John_Q_"
    assert clean_label("ok-label_1") == "ok-label_1"
    assert clean_label("../../etc") == "______etc"
