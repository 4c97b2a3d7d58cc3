"""Versioned pseudonym derivations: a project's existing pseudonyms never change; new keys derive
UIDs, IDs, names and date shifts separately; issuers take part in identity; key groups."""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta
from pathlib import Path

from pydicom.dataset import Dataset

from dicomd.anonymize import PseudonymStore
from dicomd.anonymize.pseudonyms import Pseudonymizer, normalize_name
from dicomd.config import load

from .conftest import labels, make_anonymizer

KEY = bytes(range(32))
# what the derivation gave before versions existed, for KEY (recorded from that code)
V1 = {
    "id": ("PID000123", "M66XR03K8S4U"),
    "name": ("Doe^John", "ADAMS^MARTIN^MARTHA"),
    "uid": ("1.2.3.4.5", "2.25.193711723296829737001344445391629256343"),
    "patient": (("PID000123", "Doe^John"), ("M66XR03K8S4U", "COOLEY^YVETTE^QUENTIN", -500)),
    "nameless": (("", "Doe^John"), ("L46HLPZ4ELH8", "ADAMS^MARTIN^MARTHA", -445)),
    "label": ("Doe_John", "GFQB5NES18BJ"),
}


def _old_store(path: Path) -> None:
    """A keys file as dicomd wrote it before derivation versions: no key_derivations table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE project_keys (project TEXT PRIMARY KEY, key BLOB NOT NULL, created TEXT NOT NULL);
        CREATE TABLE pseudonyms (project TEXT NOT NULL, kind TEXT NOT NULL, original TEXT NOT NULL,
            pseudonym TEXT NOT NULL, first_seen TEXT NOT NULL, PRIMARY KEY (project, kind, original));
    """)
    conn.execute("INSERT INTO project_keys VALUES ('demo', ?, '2025-01-01T00:00:00+00:00')", (KEY,))
    conn.commit()
    conn.close()


def _patient_ds(pid: str = "PID000123", name: str = "Doe^John", issuer: str = "") -> Dataset:
    ds = Dataset()
    ds.PatientID, ds.PatientName = pid, name
    if issuer:
        ds.IssuerOfPatientID = issuer
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyDate = "20200131"
    return ds


def test_version_1_generators_are_unchanged():
    p = Pseudonymizer("demo", KEY, None)  # version 1 is the default
    assert p.new_id(V1["id"][0]) == V1["id"][1]
    assert p.new_name(V1["name"][0]) == V1["name"][1]
    assert p.new_uid(V1["uid"][0]) == V1["uid"][1]
    assert p.patient(*V1["patient"][0]) == V1["patient"][1]
    assert p.patient(*V1["nameless"][0]) == V1["nameless"][1]


def test_an_existing_key_keeps_todays_pseudonyms(tmp_path: Path):
    # Given a keys file written before derivation versions existed
    path = tmp_path / "keys" / "pseudonyms.sqlite"
    _old_store(path)
    store = PseudonymStore(path)
    # Then its key is version 1 and the Anonymizer yields exactly the pseudonyms it gave before
    assert store.key_and_version("demo") == (KEY, 1)
    ds = _patient_ds()
    anonymizer = make_anonymizer(store, options=("retain_long_modified_dates",))
    anonymizer.apply(ds, labels())
    new_id, new_name, days = V1["patient"][1]
    assert (ds.PatientID, str(ds.PatientName), ds.SOPInstanceUID) == (new_id, new_name, V1["uid"][1])
    assert ds.StudyDate == (date(2020, 1, 31) + timedelta(days=days)).strftime("%Y%m%d")
    nameless = _patient_ds(pid="")
    derived = labels(subject="Doe_John", subject_from="patient_name")
    assert anonymizer.archive_labels(nameless, derived)[0] == V1["label"][1]
    # and a new project in the same file gets the current derivation
    assert store.key_and_version("other")[1] == 2


def test_new_keys_derive_separately_and_differ_from_version_1():
    v1, v2 = Pseudonymizer("demo", KEY, None, 1), Pseudonymizer("demo", KEY, None, 2)
    assert v2.new_id("PID000123") != v1.new_id("PID000123")
    assert v2.new_uid("1.2.3.4.5") != v1.new_uid("1.2.3.4.5")
    assert v2.new_uid("1.2.3.4.5").startswith("2.25.") and len(v2.new_id("x")) == 12
    # one key, distinct labels: the same input gives unrelated values in each derivation
    assert str(v2.new_uid("PID000123"))[5:17] != v2.new_id("PID000123")


def test_the_issuer_takes_part_in_identity(store):
    anonymizer = make_anonymizer(store)
    a, b, c = _patient_ds(issuer="HOSP-A"), _patient_ds(issuer="HOSP-B"), _patient_ds(issuer="HOSP-A")
    for ds in (a, b, c):
        anonymizer.apply(ds, labels())
    assert a.PatientID == c.PatientID != b.PatientID  # same ID from two issuers: two subjects


def test_names_are_normalized_before_hashing(store):
    assert normalize_name(" doe ^ john ^^") == normalize_name("DOE^JOHN") == "DOE^JOHN"
    anonymizer = make_anonymizer(store)
    first, second = _patient_ds(pid="", name="Doe^John^^"), _patient_ds(pid="", name=" DOE ^john")
    anonymizer.apply(first, labels())
    anonymizer.apply(second, labels())
    assert first.PatientID == second.PatientID and first.PatientName == second.PatientName


def test_subject_label_and_patient_id_share_one_basis(store):
    anonymizer = make_anonymizer(store)
    for ds in (_patient_ds(), _patient_ds(pid="")):
        derived = labels(subject="Doe_John", subject_from="patient_name")
        subject, _ = anonymizer.archive_labels(ds, derived)
        anonymizer.apply(ds, derived)
        assert subject == ds.PatientID


def test_key_groups_share_one_key_and_projects_do_not(store):
    a = make_anonymizer(store, project="trialA", key_group="trial")
    b = make_anonymizer(store, project="trialB", key_group="trial")
    c = make_anonymizer(store, project="other")
    out = []
    for anonymizer, project in ((a, "trialA"), (b, "trialB"), (c, "other")):
        ds = _patient_ds()
        anonymizer.apply(ds, labels(project=project))
        out.append(ds.PatientID)
    assert out[0] == out[1] != out[2]
    assert "group:trial" in store.projects()


def test_key_backups_carry_the_derivation_version(tmp_path: Path):
    path = tmp_path / "a" / "keys.sqlite"
    _old_store(path)
    source = PseudonymStore(path)
    source.project_key("fresh")
    rows = source.export_keys()
    assert {r["project"]: r["derivation"] for r in rows} == {"demo": 1, "fresh": 2}
    target = PseudonymStore(tmp_path / "b" / "keys.sqlite")
    assert target.import_keys(rows) == (["demo", "fresh"], [])
    assert target.key_and_version("demo") == (KEY, 1)
    legacy = [{k: v for k, v in rows[0].items() if k != "derivation"}]  # a backup from before versions
    assert PseudonymStore(tmp_path / "c" / "keys.sqlite").import_keys(legacy) == (["demo"], [])


def test_key_group_is_a_config_key(tmp_path: Path):
    config = tmp_path / "dicomd.toml"
    config.write_text('[projects.a.anonymize]\nenabled = true\nkey_group = "trial-x"\n'
                      '[projects.b.anonymize]\nenabled = true\nkey_group = "trial-x"\n')
    loaded = load(config)
    assert loaded.projects["a"].anonymize.key_group == loaded.projects["b"].anonymize.key_group == "trial-x"
    config.write_text('[projects.a.anonymize]\nkey_group = "no spaces"\n')
    try:
        load(config)
    except Exception as exc:  # ConfigError names the key and the file
        assert "key_group" in str(exc) and str(config) in str(exc)
    else:  # pragma: no cover
        raise AssertionError("a bad key_group was accepted")
