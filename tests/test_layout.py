"""Layout.resolve_all (an archive job's many paths) answers as Layout.resolve does one by one:
the same paths, and the same refusal of anything that leaves the data directory, links included."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomd.layout import Layout


def _answer(resolve, relatives: list[str]) -> object:  # type: ignore[no-untyped-def]
    try:
        return resolve(relatives)
    except ValueError as exc:
        return str(exc)


def test_resolve_all_is_resolve_for_each(tmp_path: Path) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "prearchive" / "p" / "s" / "SCANS" / "1" / "DICOM").mkdir(parents=True)
    (root / "prearchive" / "p" / "t").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.dcm").write_bytes(b"x")
    dicom = root / "prearchive" / "p" / "s" / "SCANS" / "1" / "DICOM"
    (dicom / "a.dcm").write_bytes(b"a")
    (dicom / "out.dcm").symlink_to(outside / "secret.dcm")
    (dicom / "in.dcm").symlink_to(dicom / "a.dcm")
    (root / "prearchive" / "p" / "away").symlink_to(outside)
    (root / "prearchive" / "p" / "here").symlink_to(root / "prearchive" / "p" / "t")
    layout = Layout(root)
    cases = [
        ["prearchive/p/s/SCANS/1/DICOM/a.dcm", "prearchive/p/s/SCANS/1/DICOM/missing.dcm"],
        ["prearchive/p/s/SCANS/1/DICOM/in.dcm"],
        ["prearchive/p/here/x.dcm", "prearchive/p/t/../s/SCANS/1/DICOM/a.dcm"],
        ["prearchive/p/s/SCANS/1/DICOM/out.dcm"],
        ["prearchive/p/away/secret.dcm"],
        ["../outside/secret.dcm"],
        ["prearchive/.."],
        ["prearchive/p/s/SCANS/1/DICOM/a.dcm", "prearchive/p/s/SCANS/1/DICOM/../../../../../../.."],
    ]
    refused = 0
    for relatives in cases:
        expected = _answer(lambda rs: [layout.resolve(r) for r in rs], relatives)
        assert _answer(layout.resolve_all, relatives) == expected, relatives
        refused += isinstance(expected, str)
    assert refused == 5  # the data directory itself is refused too


@pytest.mark.parametrize("relative", ["/etc/passwd", "prearchive/../../etc/passwd"])
def test_resolve_all_refuses_absolute_and_dotdot(tmp_path: Path, relative: str) -> None:
    (tmp_path / "prearchive").mkdir()
    with pytest.raises(ValueError, match="leaves the data directory"):
        Layout(tmp_path).resolve_all([relative])
