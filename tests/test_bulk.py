"""Batch import: archives, folders, single files; hostile archives; all-or-nothing."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path
from typing import Iterator

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomd.bulk import Limits, detect, stage_batch
from dicomd.catalog import PREARCHIVE
from dicomd.config import load
from dicomd.stores import Stores
from dicomd.errors import HostileArchive, InvalidInput
from dicomd.testing.generator import generate_study, write_study
from dicomd.ingest import Source
from tests.conftest import write_config

SOURCE = Source("HTTP", address="127.0.0.1")


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    s = Stores.open(load(write_config(tmp_path)))
    yield s
    s.close()


@pytest.fixture
def study(tmp_path: Path) -> list[Path]:
    datasets = generate_study(seed=3, series=2, instances_per_series=3, rows=16, cols=16)
    return write_study(datasets, tmp_path / "study")


def make_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def study_files(paths: list[Path], prefix: str = "") -> dict[str, bytes]:
    return {f"{prefix}{p.name}": p.read_bytes() for p in paths}


def prearchive_files(stores: Stores) -> list[Path]:
    return [p for p in stores.layout.prearchive.rglob("*") if p.is_file()]


def assert_nothing_staged(stores: Stores) -> None:
    assert stores.catalog.sessions(PREARCHIVE) == []
    assert prearchive_files(stores) == []
    assert list(stores.layout.tmp.iterdir()) == []


def test_zip_is_staged_as_one_session(stores: Stores, study: list[Path], tmp_path: Path) -> None:
    # Given a zip of a six-instance study with a nested folder and a macOS resource fork
    files = study_files(study, "a/b/")
    files["__MACOSX/a/._junk"] = b"not dicom"
    archive = make_zip(tmp_path / "upload.bin", files)
    # When it is staged
    result = stage_batch(stores, archive, SOURCE)
    # Then every instance is in one session and nothing is left in tmp
    assert (result.staged, result.duplicates, result.quarantined) == (6, 0, 0)
    assert len(result.sessions) == 1 and result.sessions[0].instances == 6
    assert len(prearchive_files(stores)) == 6
    assert list(stores.layout.tmp.iterdir()) == []
    assert archive.exists()


def test_tar_gz_and_duplicates(stores: Stores, study: list[Path], tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "upload.tgz", study_files(study, "x/"))
    assert detect(archive) == "tar"
    first = stage_batch(stores, archive, SOURCE)
    again = stage_batch(stores, archive, SOURCE)
    assert first.staged == 6
    assert (again.staged, again.duplicates) == (0, 6)
    assert len(stores.catalog.sessions(PREARCHIVE)) == 1


def test_plain_tar(stores: Stores, study: list[Path], tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "upload.tar", study_files(study), mode="w")
    assert detect(archive) == "tar"
    assert stage_batch(stores, archive, SOURCE).staged == 6


def test_folder_is_copied_recursively_and_hidden_files_skipped(stores: Stores, study: list[Path], tmp_path: Path) -> None:
    (study[0].parent / "deep" / "er").mkdir(parents=True)
    study[0].rename(study[0].parent / "deep" / "er" / study[0].name)
    (study[0].parent / ".DS_Store").write_bytes(b"junk")
    result = stage_batch(stores, study[0].parent, Source("CLI"))
    assert result.staged == 6 and result.quarantined == 0
    # originals are left in place unless the caller gives them up
    assert len([p for p in study[0].parent.rglob("*") if p.is_file()]) == 7


def test_single_file_detected_by_content(stores: Stores, tmp_path: Path) -> None:
    src = Path(get_testdata_file("CT_small.dcm"))
    upload = tmp_path / "upload.zip"  # the name lies; the bytes decide
    upload.write_bytes(src.read_bytes())
    assert detect(upload) == "file"
    result = stage_batch(stores, upload, SOURCE, consume=True)
    assert result.staged == 1
    assert not upload.exists()


def test_one_bad_member_fails_the_whole_batch(stores: Stores, study: list[Path], tmp_path: Path) -> None:
    files = study_files(study)
    files["notes.txt"] = b"hello"
    files["cut.dcm"] = study[0].read_bytes()[:600]
    archive = make_zip(tmp_path / "upload.zip", files)
    with pytest.raises(InvalidInput) as info:
        stage_batch(stores, archive, SOURCE)
    message = str(info.value)
    # the corrupt DICOM member refuses the batch; the stray text file is no reason to
    assert "cut.dcm" in message and "1 unparseable" in message and "notes.txt" not in message
    assert_nothing_staged(stores)


def test_ignore_unparsable_quarantines_the_bad_members(stores: Stores, study: list[Path], tmp_path: Path) -> None:
    files = study_files(study)
    files["notes.txt"] = b"hello"
    cut = study[0].read_bytes()[:600]
    files["cut.dcm"] = cut
    archive = make_zip(tmp_path / "upload.zip", files)
    result = stage_batch(stores, archive, SOURCE, ignore_unparsable=True)
    assert (result.staged, result.quarantined) == (6, 1)
    assert result.bad[0][0] == "cut.dcm"
    assert result.skipped == (("notes.txt", "not a DICOM file"),)
    assert result.skipped_text() == "skipped 1 non-DICOM file(s): notes.txt"
    held = stores.catalog.quarantine()
    assert len(held) == 1 and "cut.dcm" in held[0].reason
    data = stores.layout.root / held[0].path
    assert data.read_bytes() == cut
    assert "cut.dcm" in (data.parent / "reason.txt").read_text()
    assert list(stores.layout.tmp.iterdir()) == []


def test_failure_part_way_rolls_back(stores: Stores, study: list[Path], tmp_path: Path) -> None:
    # Given a study already staged by an earlier upload, and a batch that adds a second study
    earlier = stage_batch(stores, study[0], SOURCE)
    other = write_study(generate_study(seed=9, series=1, instances_per_series=3, rows=16, cols=16), tmp_path / "o")
    archive = make_zip(tmp_path / "upload.zip", {**study_files(study[1:]), **study_files(other)})

    class Interrupted(Exception):
        pass

    def interrupt(done: int, total: int) -> None:
        if done == total - 1:
            raise Interrupted()

    # When the batch is interrupted before its last member
    with pytest.raises(Interrupted):
        stage_batch(stores, archive, SOURCE, progress=interrupt)
    # Then only the earlier upload is left, with its own instance
    sessions = stores.catalog.sessions(PREARCHIVE)
    assert [s.id for s in sessions] == [earlier.sessions[0].id]
    assert sessions[0].instances == 1
    assert len(prearchive_files(stores)) == 1
    assert list(stores.layout.tmp.iterdir()) == []


def test_zip_slip_is_refused(stores: Stores, study: list[Path], tmp_path: Path) -> None:
    files = study_files(study)
    files["../../evil.dcm"] = study[0].read_bytes()
    with pytest.raises(HostileArchive, match="escapes"):
        stage_batch(stores, make_zip(tmp_path / "u.zip", files), SOURCE)
    assert_nothing_staged(stores)
    assert not (tmp_path / "evil.dcm").exists()


@pytest.mark.parametrize("name", ["/etc/evil.dcm", "C:\\evil.dcm", "a\\..\\..\\evil.dcm"])
def test_absolute_and_backslash_paths_are_refused(stores: Stores, study: list[Path], tmp_path: Path, name: str) -> None:
    with pytest.raises(HostileArchive):
        stage_batch(stores, make_tar(tmp_path / "u.tgz", {name: study[0].read_bytes()}), SOURCE)
    assert_nothing_staged(stores)


def test_symlink_members_are_refused(stores: Stores, study: list[Path], tmp_path: Path) -> None:
    # zip: a member whose unix mode says symbolic link
    path = tmp_path / "link.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("link.dcm")
        info.create_system = 3
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(HostileArchive, match="symbolic link"):
        stage_batch(stores, path, SOURCE)
    # tar: symlink and hard link members
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
        tpath = tmp_path / f"link{kind!r}.tar"
        with tarfile.open(tpath, "w") as tf:
            info = tarfile.TarInfo("link.dcm")
            info.type = kind
            info.linkname = "/etc/passwd"
            tf.addfile(info)
        with pytest.raises(HostileArchive, match="link"):
            stage_batch(stores, tpath, SOURCE)
    assert_nothing_staged(stores)


def test_device_member_is_refused(stores: Stores, tmp_path: Path) -> None:
    tpath = tmp_path / "dev.tar"
    with tarfile.open(tpath, "w") as tf:
        info = tarfile.TarInfo("null")
        info.type = tarfile.CHRTYPE
        tf.addfile(info)
    with pytest.raises(HostileArchive, match="device"):
        stage_batch(stores, tpath, SOURCE)


def test_too_many_members(stores: Stores, study: list[Path], tmp_path: Path) -> None:
    limits = Limits(max_members=5)
    with pytest.raises(HostileArchive, match="5"):
        stage_batch(stores, make_zip(tmp_path / "u.zip", study_files(study)), SOURCE, limits=limits)
    with pytest.raises(HostileArchive, match="more than 5 members"):
        stage_batch(stores, make_tar(tmp_path / "u.tgz", study_files(study)), SOURCE, limits=limits)
    assert_nothing_staged(stores)


def test_bombs_are_refused_by_bytes_written(stores: Stores, tmp_path: Path) -> None:
    zeros = b"\0" * (4 * 2**20)
    small = Limits(max_uncompressed_bytes=3 * 2**20)
    with pytest.raises(HostileArchive, match="expands past"):
        stage_batch(stores, make_zip(tmp_path / "bomb.zip", {"a.dcm": zeros}), SOURCE, limits=small)
    per_member = Limits(max_member_bytes=2**20)
    with pytest.raises(HostileArchive):
        stage_batch(stores, make_tar(tmp_path / "bomb.tgz", {"a.dcm": zeros}), SOURCE, limits=per_member)
    # many small members that add up
    many = {f"{i}.dcm": b"\0" * 2**20 for i in range(4)}
    with pytest.raises(HostileArchive, match="expands past"):
        stage_batch(stores, make_tar(tmp_path / "many.tgz", many), SOURCE, limits=small)
    assert_nothing_staged(stores)


def test_zip_lying_about_sizes_is_cut_at_the_real_bytes(stores: Stores, tmp_path: Path) -> None:
    # Given a zip whose local and central headers claim 10 bytes for a 4 MB member
    path = make_zip(tmp_path / "liar.zip", {"a.dcm": b"\0" * (4 * 2**20)})
    data = bytearray(path.read_bytes())
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(sig)
        data[at + offset : at + offset + 4] = (10).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    # Then it is refused or cut short, never expanded past the limit
    with pytest.raises(InvalidInput):
        stage_batch(stores, path, SOURCE, limits=Limits(max_uncompressed_bytes=2**20))
    assert_nothing_staged(stores)


def test_empty_and_corrupt_archives(stores: Stores, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no files"):
        stage_batch(stores, make_zip(tmp_path / "empty.zip", {}), SOURCE)
    corrupt = tmp_path / "corrupt.tgz"
    corrupt.write_bytes(b"\x1f\x8b\x08\x00garbage-garbage")
    with pytest.raises(InvalidInput, match="tar"):
        stage_batch(stores, corrupt, SOURCE)
    assert_nothing_staged(stores)


def test_pydicom_test_files_in_one_zip(stores: Stores, tmp_path: Path) -> None:
    names = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm"]
    files = {n: Path(get_testdata_file(n)).read_bytes() for n in names}
    result = stage_batch(stores, make_zip(tmp_path / "t.zip", files), SOURCE)
    assert result.staged == 3
    studies = {pydicom.dcmread(get_testdata_file(n), stop_before_pixels=True).StudyInstanceUID for n in names}
    assert len(result.sessions) == len(studies)


def test_same_instance_twice_in_one_archive(stores: Stores, study: list[Path], tmp_path: Path) -> None:
    # Given a zip that holds one instance under two names (same bytes) and the rest once
    files = study_files(study)
    files["copy/again.dcm"] = study[0].read_bytes()
    result = stage_batch(stores, make_zip(tmp_path / "u.zip", files), SOURCE)
    # Then the repeat is a duplicate, not a second instance
    assert (result.staged, result.duplicates) == (6, 1)
    assert result.sessions[0].instances == 6
    assert len(prearchive_files(stores)) == 6


def test_stale_batch_folders_are_cleaned(stores: Stores, study: list[Path]) -> None:
    import os

    stale = stores.layout.tmp / "batch-crashed"
    (stale / "sub").mkdir(parents=True)
    (stale / "000001-x.dcm").write_bytes(b"left over")
    os.utime(stale, (0, 0))
    fresh = stores.layout.tmp / "batch-running"
    fresh.mkdir()
    stage_batch(stores, study[0], SOURCE)
    assert not stale.exists() and fresh.exists()


def test_giant_tar_header_is_refused_unread(stores: Stores, tmp_path: Path) -> None:
    # Given a tar.gz whose pax header for one member is 20 MB (tiny once compressed)
    path = tmp_path / "pax.tgz"
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tf:
        info = tarfile.TarInfo("a.dcm")
        info.pax_headers = {"comment": "x" * (20 * 2**20)}
        tf.addfile(info, io.BytesIO(b""))
    assert path.stat().st_size < 2**20
    # Then it is refused as hostile, not read into memory
    with pytest.raises(HostileArchive, match="header"):
        stage_batch(stores, path, SOURCE)
    assert_nothing_staged(stores)


def test_limits_come_from_the_config(tmp_path: Path, study: list[Path]) -> None:
    config = write_config(tmp_path, "[archive_limits]\nmax_members = 2\n")
    s = Stores.open(load(config))
    try:
        with pytest.raises(HostileArchive, match="2"):
            stage_batch(s, make_zip(tmp_path / "u.zip", study_files(study)), SOURCE)
    finally:
        s.close()
