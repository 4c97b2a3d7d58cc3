"""`dicomd quarantine list|show|retry|delete`."""

from __future__ import annotations

import json
import shutil

from pydicom.data import get_testdata_file

from dicomd.ingest import Source, quarantine


def _hold(store, data: bytes | None = None, name: str = "x.dcm", reason: str = "held for a test") -> int:
    path = store.tmp / name
    if data is None:
        shutil.copy(get_testdata_file("CT_small.dcm"), path)
    else:
        path.write_bytes(data)
    return quarantine(store.stores.layout, store.stores.catalog, path, Source(kind="DICOM"), reason, move=True)


def test_list_and_show(store):
    entry = _hold(store, b"garbage", name="g.bin", reason="not a DICOM file")
    rows = store.cli_json("quarantine", "list")
    assert [(r["id"], r["reason"], r["status"]) for r in rows] == [(entry, "not a DICOM file", "held")]
    shown = store.cli_json("quarantine", "show", str(entry))
    assert shown["present"] and shown["detail"]["original_name"] == "g.bin"
    assert "not a DICOM file" in shown["readable"]
    assert store.cli("quarantine", "show", "999").exit_code == 1


def test_retry_stages_fixed_data_and_marks_the_entry(store):
    entry = _hold(store)
    result = store.cli("quarantine", "retry", str(entry), "--project", "demo", "--session", "FIXED")
    assert result.exit_code == 0, result.output
    sessions = store.prearchive()
    assert [(s.project, s.label, s.instances) for s in sessions] == [("demo", "FIXED", 1)]
    assert store.cli_json("quarantine", "list") == []
    assert store.cli_json("quarantine", "list", "--all")[0]["status"] == "retried"
    again = store.cli("quarantine", "retry", str(entry))
    assert again.exit_code == 1 and "not held" in again.stderr


def test_retry_of_still_bad_data_stays_held(store):
    entry = _hold(store, b"\x00" * 10, name="z.bin")
    result = store.cli("quarantine", "retry", str(entry), "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)[0]["ok"] is False
    assert store.cli_json("quarantine", "list")[0]["status"] == "held"


def test_delete_removes_the_bytes_after_confirmation(store):
    entry = _hold(store)
    path = store.stores.layout.root / store.stores.catalog.quarantine_entry(entry).path
    assert store.cli("quarantine", "delete", str(entry)).exit_code == 2
    assert path.exists()
    assert store.cli("quarantine", "delete", str(entry), "--yes").exit_code == 0
    assert not path.parent.exists() and store.stores.layout.quarantine.exists()
    assert store.cli_json("quarantine", "list", "--all")[0]["status"] == "deleted"
    assert store.cli("check").exit_code == 0
