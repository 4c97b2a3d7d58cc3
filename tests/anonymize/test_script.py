"""DicomEdit 6: parsing (errors with line and column) and running every supported construct."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from dicomd.anonymize import Labels, SiteScript, check_script
from dicomd.anonymize.script.interpreter import Interpreter
from dicomd.anonymize.script.syntax import parse
from dicomd.errors import Rejected, ScriptError

from .conftest import make_anonymizer

XNAT_DEFAULT_SITE_SCRIPT = """version "6.1"
project != "Unassigned" ? (0008,1030) := project
(0010,0010) := subject
(0010,0020) := session
"""

# The example from XNAT's DicomEdit 6 documentation (alterPixels left out: pixels are never edited)
XNAT_DOC_EXAMPLE = """version "6.3"
(0008,0080) := "Washington University School of Medicine"
(0008,0018) := hashUID[(0008,0018)]
// Add 14 days to Study Date
(0008,0020) := shiftDateByIncrement[ (0008,0020), "14"]
- (0008,0021)
"""


def _ds() -> Dataset:
    ds = Dataset()
    ds.PatientName = "Patient^Name"
    ds.PatientID = "PID123"
    ds.StudyDate = "20120919"
    ds.SeriesDate = "20131231"
    ds.AcquisitionDateTime = "20120919235959.25"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = "1.2.3.4.1"
    ds.SOPInstanceUID = "1.2.3.4.1.1"
    ds.StudyDescription = "Brain MRI"
    ds.Modality = "MR"
    ds.InstitutionName = "General Hospital"
    ref = Dataset()
    ref.ReferencedSOPInstanceUID = "1.2.3.4.1.9"
    ref.PatientName = "Nested^Name"
    ref2 = Dataset()
    ref2.ReferencedSOPInstanceUID = "1.2.3.4.1.10"
    ref2.PatientName = "Nested^Two"
    deeper = Dataset()
    deeper.PatientName = "Deep^Name"
    ref2.ReferencedSeriesSequence = Sequence([deeper])
    ds.ReferencedImageSequence = Sequence([ref, ref2])
    block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    block.add_new(0x0C, "LO", "b-value")
    block.add_new(0x0D, "LO", "secret")
    ds.private_block(0x0021, "OTHER VENDOR", create=True).add_new(0x01, "LO", "other")
    return ds


def run(text: str, ds: Dataset | None = None, key: bytes | None = None, lookup=None, **variables: str) -> Dataset:
    ds = ds if ds is not None else _ds()
    values = {"project": "PROJ", "subject": "SUBJ01", "session": "SESS01"}
    values.update(variables)
    Interpreter(parse(text), "test", lookup, key).run(ds, values)
    return ds


V = 'version "6.1"\n'


# ------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    "text, line, col, words",
    [
        ('version "6.1"\n(0010,0010) := \n', 2, 16, "expected a value"),
        ('version "6.1"\n(0010,0010) = "x"\n', 2, 18, "expected ?"),
        ('version "6.1"\n\n  foo[(0010,0010)]\n', 3, 3, "unknown function foo"),
        ('version "6.1"\n(0010,0010) := "abc\n', 2, 16, "unterminated string"),
        ('version "6.1"\n(0010,0010) := bogus\n', 2, 16, "unknown variable 'bogus'"),
        ('version "4.0"\n', 1, 1, "unsupported DicomEdit version"),
        ('(0010,0010) := "x"\n', 1, 1, "missing `version"),
        ('version "6.1"\nalterPixels["rectangle", "l=1"]\n', 2, 1, "pixel editing is not supported"),
        ('version "6.1"\nif ((0008,0060) = "MR") {\n  - (0010,0010)\n', 4, 1, "missing }"),
        ('version "6.1"\n(0010,0010) := substring["a"]\n', 2, 16, "substring[] takes 3 argument(s)"),
        ('version "6.1"\nexport foo "bar"\n', 2, 1, "export"),
        ('version "6.1"\n(0010,0010) $ "x"\n', 2, 13, "unexpected character"),
        ('version "6.1"\n(0018,{ACME}10) := "x"\n', 2, 1, "private group 0018 must be odd"),
    ],
)
def test_parse_errors_have_line_and_column(text, line, col, words):
    with pytest.raises(ScriptError) as info:
        parse(text, "s.das")
    message = str(info.value)
    assert f"line {line}, column {col}" in message, message
    assert words in message
    assert info.value.line == line and info.value.column == col


def test_check_script_file(tmp_path: Path):
    good = tmp_path / "good.das"
    good.write_text(XNAT_DEFAULT_SITE_SCRIPT)
    bad = tmp_path / "bad.das"
    bad.write_text('version "6.1"\n(0010,0010) := nope[]\n')
    assert check_script(good) == []
    problems = check_script(bad)
    assert len(problems) == 1 and "line 2, column 16" in problems[0] and "bad.das" in problems[0]
    assert "cannot read" in check_script(tmp_path / "missing.das")[0]


def test_bad_project_script_fails_before_anything_runs(tmp_path: Path, store):
    script = tmp_path / "p.das"
    script.write_text('version "6.1"\n- (0010,0010)\n(0010,0020) := "x" ?\n')
    with pytest.raises(ScriptError, match="line 3"):
        make_anonymizer(store, script=str(script))


# ------------------------------------------------------------------------------------------ XNAT scripts


def test_xnat_default_site_script(tmp_path: Path):
    path = tmp_path / "site.das"
    path.write_text(XNAT_DEFAULT_SITE_SCRIPT)
    site = SiteScript(str(path))
    ds = _ds()
    site.apply(ds, Labels("PROJ", "SUBJ01", "SESS01"))
    assert ds.StudyDescription == "PROJ"
    assert ds.PatientName == "SUBJ01" and ds.PatientID == "SESS01"
    unassigned = _ds()
    site.apply(unassigned, Labels("Unassigned", "S", "E"))
    assert unassigned.StudyDescription == "Brain MRI"  # left alone for Unassigned


def test_xnat_documentation_example():
    ds = run(XNAT_DOC_EXAMPLE)
    assert ds.InstitutionName == "Washington University School of Medicine"
    assert ds.SOPInstanceUID != "1.2.3.4.1.1" and ds.SOPInstanceUID.startswith("2.25.")
    assert ds.StudyDate == "20121003"  # 2012-09-19 + 14 days (XNAT's own test value)
    assert "SeriesDate" not in ds


# ------------------------------------------------------------------------------------------ statements


def test_assign_if_exists_delete_and_variables():
    ds = run(V + '(0008,1030) ?= "kept"\n(0008,103E) ?= "not created"\n(0010,1010) := "042Y"\n'
                 'name := "X"\n(0010,0010) := name\n- (0008,0080)\n')
    assert ds.StudyDescription == "kept"
    assert "SeriesDescription" not in ds
    assert ds.PatientAge == "042Y"
    assert ds.PatientName == "X"
    assert "InstitutionName" not in ds


def test_conditions():
    ds = run(V + '(0008,0060) = "MR" ? (0008,1030) := "is MR" : (0008,1030) := "not MR"\n'
                 '(0008,0060) != "MR" ? (0010,0010) := "changed"\n'
                 '(0010,0020) ~ "PID[0-9]+" ? (0010,0020) := "matched"\n'
                 '(0008,0080) !~ "General.*" ? - (0008,0080) : (0008,0080) := "GH"\n')
    assert ds.StudyDescription == "is MR"
    assert ds.PatientName == "Patient^Name"
    assert ds.PatientID == "matched"
    assert ds.InstitutionName == "GH"


def test_regex_match_is_whole_value():
    ds = run(V + '(0010,0020) ~ "PID" ? (0010,0020) := "partial"\n')
    assert ds.PatientID == "PID123"


def test_if_elseif_else():
    script = V + """if ((0008,0060) = "CT") {
    (0008,1030) := "ct"
} elseif ((0008,0060) = "MR") {
    (0008,1030) := "mr"
    (0010,0010) := "in block"
}
else {
    (0008,1030) := "other"
}
"""
    ds = run(script)
    assert ds.StudyDescription == "mr" and ds.PatientName == "in block"
    other = _ds()
    other.Modality = "US"
    assert run(script, other).StudyDescription == "other"


def test_describe_and_echo_are_accepted():
    ds = run(V + 'describe study "Study label"\nstudy := "x"\necho "hello"\necho (0010,0010)\n'
                 '(0008,1030) := study\n')
    assert ds.StudyDescription == "x"


def test_builtin_variables():
    ds = run(V + '(0010,0010) := subject\n(0010,0020) := session\n(0008,1030) := project\n')
    assert (ds.PatientName, ds.PatientID, ds.StudyDescription) == ("SUBJ01", "SESS01", "PROJ")


# ------------------------------------------------------------------------------------------ tag paths


def test_sequence_items_and_wildcards():
    ds = run(V + '(0008,1140)[0]/(0010,0010) := "first"\n')
    assert ds.ReferencedImageSequence[0].PatientName == "first"
    assert ds.ReferencedImageSequence[1].PatientName == "Nested^Two"
    ds = run(V + '(0008,1140)[%]/(0010,0010) := "all"\n')
    assert [i.PatientName for i in ds.ReferencedImageSequence] == ["all", "all"]
    ds = run(V + '+/(0010,0010) := "nested"\n')
    assert ds.PatientName == "Patient^Name"  # + never matches the top level
    assert ds.ReferencedImageSequence[1].ReferencedSeriesSequence[0].PatientName == "nested"
    ds = run(V + '*/(0010,0010) := "anywhere"\n')
    assert ds.PatientName == "anywhere"
    assert ds.ReferencedImageSequence[1].ReferencedSeriesSequence[0].PatientName == "anywhere"
    ds = run(V + './(0010,0010) := "one level"\n')
    assert ds.ReferencedImageSequence[0].PatientName == "one level"
    assert ds.ReferencedImageSequence[1].ReferencedSeriesSequence[0].PatientName == "Deep^Name"
    ds = run(V + '- */(0010,0010)\n')
    assert "PatientName" not in ds and "PatientName" not in ds.ReferencedImageSequence[0]


def test_digit_wildcards():
    ds = run(V + '- (0008,10X0)\n')  # X: any hex digit -> (0008,1030) and (0008,1010)... that exist
    assert "StudyDescription" not in ds
    ds = run(V + '- (0010,002@)\n')  # @: even digit -> (0010,0020)
    assert "PatientID" not in ds and "PatientName" in ds
    ds = run(V + '- (0019,XX1#)\n')  # #: odd digit -> no (0019,xx1x) with odd last digit here
    assert ds.private_block(0x0019, "SIEMENS MR HEADER").get_tag(0x0C) in ds
    ds = run(V + '- (0019,XXXX)\n')
    assert not any(t.group == 0x0019 for t in ds.keys())


def test_private_creator_addressing():
    ds = run(V + '(0019,{SIEMENS MR HEADER}0C) := "replaced"\n- (0019,{SIEMENS MR HEADER}0D)\n'
                 '(0029,{NEW CREATOR}01) := "created"\n')
    block = ds.private_block(0x0019, "SIEMENS MR HEADER")
    assert ds[block.get_tag(0x0C)].value == "replaced"
    assert block.get_tag(0x0D) not in ds
    assert ds[ds.private_block(0x0029, "NEW CREATOR").get_tag(0x01)].value == "created"
    # the creator block number does not matter
    other = _ds()
    del other[0x00190010]
    other.add_new(0x00190011, "LO", "SIEMENS MR HEADER")  # now reserved at block 0x11
    other.add_new(0x00191105, "LO", "moved block")
    assert run(V + '(0019,{SIEMENS MR HEADER}05) = "moved block" ? (0010,0010) := "found"\n',
               other).PatientName == "found"


def test_remove_all_private_tags_and_retain():
    ds = run(V + "removeAllPrivateTags\n")
    assert not any(t.is_private for t in ds.keys())
    ds = run(V + "retainPrivateTags[(0019,{SIEMENS MR HEADER}0C)]\n")
    block = ds.private_block(0x0019, "SIEMENS MR HEADER")
    assert ds[block.get_tag(0x0C)].value == "b-value"
    assert block.get_tag(0x0D) not in ds
    assert not any(t.group == 0x0021 for t in ds.keys())


# ------------------------------------------------------------------------------------------ functions


def test_string_functions():
    ds = run(V + """(0008,1030) := uppercase[(0008,1030)]
(0008,103E) := lowercase["ABC"]
(0010,0010) := substring[(0010,0010), 0, 7]
(0010,0020) := replace[(0010,0020), "PID", "ID-"]
(0008,0080) := concatenate["a", (0008,0060), "b"]
(0008,1010) := format["{0}_{1}-{0}", project, (0008,0060)]
(0008,1040) := match["PID123", "([A-Z]+)([0-9]+)", 2]
""")
    assert ds.StudyDescription == "BRAIN MRI"
    assert ds.SeriesDescription == "abc"
    assert ds.PatientName == "Patient"
    assert ds.PatientID == "ID-123"
    assert ds.InstitutionName == "aMRb"
    assert ds.StationName == "PROJ_MR-PROJ"
    assert ds.InstitutionalDepartmentName == "123"


def test_lookup():
    table = {"pn/Patient^Name": "SUBJECT_007", "pid/PID123": "S7"}
    ds = run(V + '(0010,0010) := lookup["pn", (0010,0010)]\n(0010,0020) := lookup["pid", (0010,0020)]\n'
                 '(0008,1030) := lookup["pn", "nobody"]\n', lookup=table)
    assert ds.PatientName == "SUBJECT_007" and ds.PatientID == "S7"
    assert not ds.StudyDescription


def test_lookup_table_file_next_to_the_script(tmp_path: Path):
    (tmp_path / "site.das").write_text(V + '(0010,0010) := lookup["pn", (0010,0010)]\n')
    (tmp_path / "site.lookup").write_text("# XNAT lookup table\npn/Patient^Name = FROM_TABLE\n")
    ds = _ds()
    SiteScript(str(tmp_path / "site.das")).apply(ds, Labels("P", "S", "E"))
    assert ds.PatientName == "FROM_TABLE"


def test_uid_functions_keyed_and_consistent():
    text = V + """(0020,000D) := hashUID[(0020,000D)]
(0020,000E) := mapUID[(0020,000E), "1.2.826.0.1.3680043.2.1125"]
(0008,0018) := newUID[]
"""
    a = run(text, key=b"k" * 32)
    b = run(text, key=b"k" * 32)
    c = run(text, key=b"other-key-000000000000000000000x")
    assert a.StudyInstanceUID == b.StudyInstanceUID != c.StudyInstanceUID
    assert a.StudyInstanceUID.startswith("2.25.") and len(a.StudyInstanceUID) <= 64
    assert a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.SeriesInstanceUID.startswith("1.2.826.0.1.3680043.2.1125.") and len(a.SeriesInstanceUID) <= 64
    assert a.SOPInstanceUID != b.SOPInstanceUID  # newUID is new every time
    unkeyed = run(text)
    assert unkeyed.StudyInstanceUID == run(text).StudyInstanceUID  # name-based without a key


def test_date_shift_functions():
    ds = run(V + """(0008,0020) := shiftDateByIncrement[(0008,0020), "14"]
(0008,0021) := shiftDateByIncrement[(0008,0021), -1]
(0008,002A) := shiftDateTimeByIncrement[(0008,002A), 1]
(0008,0022) := shiftDateTimeByIncrement["20200101", "2", "days"]
""")
    assert ds.StudyDate == "20121003"
    assert ds.SeriesDate == "20131230"
    assert ds.AcquisitionDateTime == "20120920000000.25"
    assert ds.AcquisitionDate == "20200103"


def test_date_shift_on_a_non_date_is_an_error():
    with pytest.raises(ScriptError, match="DA or DT"):
        run(V + '(0010,0010) := shiftDateByIncrement[(0010,0010), "1"]\n')


def test_reject():
    with pytest.raises(Rejected, match="no phantoms"):
        run(V + '(0010,0010) ~ "Patient.*" ? reject["no phantoms"]\n')
    run(V + '(0010,0010) = "nobody" ? reject[]\n')  # condition false: nothing happens


def test_assigning_a_bad_value_names_the_line():
    with pytest.raises(ScriptError, match="line 2"):
        run(V + '(0028,0010) := "not a number"\n', _with_rows())


def _with_rows() -> Dataset:
    ds = _ds()
    ds.Rows = 4
    return ds


# ------------------------------------------------------------------------------------------ in the Anonymizer


def test_project_script_runs_after_the_profile(tmp_path: Path, store):
    script = tmp_path / "project.das"
    script.write_text(V + '(0008,1030) := format["{0} {1}", project, subject]\n'
                          '(0010,4000) := "added by script"\n')
    anonymizer = make_anonymizer(store, script=str(script))
    ds = _ds()
    result = anonymizer.apply(ds, Labels("demo", "Patient_Name", "PID123", "patient_name", "patient_id"))
    # the script sees the archive labels, which are pseudonyms here: no PHI written back
    assert "Patient" not in ds.StudyDescription and ds.StudyDescription.startswith("demo ")
    assert ds.PatientComments == "added by script"
    assert result.script_hash and anonymizer.fingerprint.endswith(result.script_hash)
    assert "DicomEdit script sha256:" in "".join(ds.DeidentificationMethod)


# ------------------------------------------------------------------------------------------ forms seen in XNAT's own test scripts


def test_line_continuations():
    ds = run(V + '(0008,1030) = "nope" ? \\\n    (0008,1030) := "x" : \\\n    (0008,1030) := "continued"\n'
                 '(0008,103E) := "one \\\nstring"\n(0010,0010) := \\\n  "next line"\n')
    assert ds.StudyDescription == "continued"
    assert ds.SeriesDescription == "one string"
    assert ds.PatientName == "next line"


def test_error_lines_count_continued_strings():
    with pytest.raises(ScriptError, match="line 4, column 16"):
        parse(V + '(0008,103E) := "a \\\nb"\n(0010,0010) := nope[]\n')


def test_delete_a_sequence_item():
    ds = run(V + "-(0008,1140)[0]\n")
    assert len(ds.ReferencedImageSequence) == 1
    assert ds.ReferencedImageSequence[0].PatientName == "Nested^Two"
    ds = run(V + "-(0008,1140)[1]/(0008,1110)[0]/(0010,0010)\n-(0008,1140)[7]\n")  # missing: no-op
    assert len(ds.ReferencedImageSequence) == 2


def test_retain_private_tags_with_paths_lists_and_variables():
    ds = _ds()
    item = ds.ReferencedImageSequence[0]
    item.private_block(0x0065, "AE 2", create=True).add_new(0x01, "LO", "nested keep")
    item.private_block(0x0067, "AE 3", create=True).add_new(0x01, "LO", "nested drop")
    run(V + 'keep := {"(0019,{SIEMENS MR HEADER}0X)", */(0065,{AE 2}XX)}\nretainPrivateTags[keep]\n', ds)
    block = ds.private_block(0x0019, "SIEMENS MR HEADER")
    assert block.get_tag(0x0C) in ds and block.get_tag(0x0D) in ds
    assert not any(t.group == 0x0021 for t in ds.keys())
    assert item[item.private_block(0x0065, "AE 2").get_tag(0x01)].value == "nested keep"
    assert not any(t.group == 0x0067 for t in item.keys())
    ds = run(V + '(0010,0010) = "Patient^Name" ? retainPrivateTags["(0019,{SIEMENS MR HEADER}0C)"]\n')
    assert ds.private_block(0x0019, "SIEMENS MR HEADER").get_tag(0x0D) not in ds
    with pytest.raises(ScriptError, match="not a tag path"):
        parse(V + 'retainPrivateTags["(0019,nope"]\n')


def test_reject_inside_a_block():
    script = V + 'if ((0020,0013) != "1") {\n    reject["only the first instance"]\n}\n'
    first = _ds()
    first.InstanceNumber = 1
    run(script, first)
    other = _ds()
    other.InstanceNumber = 2
    with pytest.raises(Rejected, match="only the first instance"):
        run(script, other)


def test_shift_function_as_a_statement_shifts_in_place():
    ds = run(V + 'shiftDateByIncrement[(0008,0020), "-19"]\nshiftDateTimeByIncrement[*/(0008,002A), "3600"]\n')
    assert ds.StudyDate == "20120831"
    assert ds.AcquisitionDateTime == "20120920005959.25"


def test_functions_of_missing_attributes_create_nothing():
    ds = run(V + "(0008,0058) := hashUID[(0008,0058)]\n(0010,1005) := (0010,0022)\n")
    assert "FailedSOPInstanceUIDList" not in ds and "PatientBirthName" not in ds


def test_function_results_agree_with_xnat():
    # Expected values as XNAT's own DicomEdit tests assert them for the same functions
    ds = _ds()
    ds.SeriesDescription = "PDW_TSE"
    run(V + '(0010,1000) := format["{0}_{1}_{2}_{3}", lowercase[(0008,0060)], uppercase[(0008,103E)], '
            'replace[substring["0123456789", 0, 8], "3", "0"], concatenate["10", "20", "30"]]\n'
            '(0010,2000) := match["abab", "(a(b)?)+", 2]\n'
            '(0018,9516) := shiftDateTimeByIncrement["20200101120000+0500", "10"]\n'
            '(0018,9517) := shiftDateTimeByIncrement["20200101120000-0730", "10"]\n', ds)
    assert ds.OtherPatientIDs == "mr_PDW_TSE_01204567_102030"
    assert ds.MedicalAlerts == "b"
    assert ds[0x00189516].value == "20200101120010+0500"
    assert ds[0x00189517].value == "20200101120010-0730"
