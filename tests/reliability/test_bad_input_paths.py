"""Guarantee 4 through the other doors: the hostile corpus dropped into a drop folder and uploaded
over HTTP (single files, one zip, hostile archives). Every dropped file leaves the folder (staged or
quarantined with a reason), every upload gets 200 or a 4xx (never 5xx), and the daemon keeps serving."""

from __future__ import annotations

import io
import random
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import SecondaryCaptureImageStorage

from dicomd.catalog import Catalog
from dicomd.daemon import Daemon
from dicomd.testing.generator import generate_study, instance_bytes
from dicomd.layout import Layout
from dicomd.storecheck import check_store
from tests.conftest import send, wait_for, write_config
from tests.reliability.badinput import Sample, all_samples, special_cases
from tests.reliability.harness import echo

pytestmark = pytest.mark.both_engines

PASSWORD = "correct-horse-1"


@pytest.fixture(autouse=True)
def _restore_tempdir() -> Iterator[None]:
    before = tempfile.tempdir
    yield
    tempfile.tempdir = before


def as_file(sample: Sample, with_meta: bool = True) -> bytes:
    if not with_meta:
        return sample.data
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sample.sop_instance_uid
    meta.TransferSyntaxUID = sample.transfer_syntax
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue() + sample.data


def _daemon(tmp_path: Path, make_daemon: Callable[..., Daemon], http: bool = False) -> Daemon:
    path = write_config(tmp_path, f"""
[[drop_folders]]
path = "{tmp_path / 'drop'}"
project = "demo"
stable_seconds = 0.1
""")
    if http:
        path.write_text(path.read_text().replace("[http]\nenabled = false\n", "[http]\nenabled = true\nport = 0\n"))
    return make_daemon(path)


def _still_serving(daemon: Daemon) -> None:
    assert echo(daemon.dicom_port())
    assert send(daemon.dicom_port(), generate_study(3, series=1, instances_per_series=1, rows=8, cols=8)) == [0]


def _consistent(daemon: Daemon) -> None:
    data = daemon.config.data_dir
    daemon.stop()
    report = check_store(Layout(data), Catalog(Layout(data).catalog))
    assert report.ok, report.describe()


@pytest.mark.slow
def test_hostile_files_in_the_drop_folder(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    daemon = _daemon(tmp_path, make_daemon)
    drop = tmp_path / "drop"
    staging = tmp_path / "staging"
    staging.mkdir()
    samples = all_samples()
    for i, sample in enumerate(samples):
        # every other file without its preamble and file meta, as some tools write them
        (staging / f"{i:03d}.dcm").write_bytes(as_file(sample, with_meta=i % 2 == 0))
    for file in sorted(staging.iterdir()):
        file.rename(drop / file.name)
    wait_for(lambda: not any(drop.iterdir()), timeout=120, interval=0.2)
    held = daemon.stores.catalog.quarantine()  # type: ignore[union-attr]
    assert held and all(entry.reason.strip() for entry in held)
    broken = {"zero-length", "4GB-declared-length", "4GB-implicit-text", "no-study-uid"}
    assert len(held) >= len(broken)
    _still_serving(daemon)
    _consistent(daemon)


def _zip(entries: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


def test_hostile_http_uploads(tmp_path: Path, make_daemon: Callable[..., Daemon]) -> None:
    pytest.importorskip("dicomd.http.server")
    daemon = _daemon(tmp_path, make_daemon, http=True)
    from dicomd.auth import Auth

    Auth(daemon.stores.catalog).add_user("admin", PASSWORD, admin=True)  # type: ignore[union-attr]
    server = next(s for s in daemon.services if type(s).__name__ == "HttpServer")
    good = instance_bytes(generate_study(8, series=1, instances_per_series=1, rows=8, cols=8)[0])
    rng = random.Random(4)
    samples = all_samples()
    corpus = {f"{i:03d}.dcm": as_file(s) for i, s in enumerate(samples)}
    uploads: dict[str, tuple[bytes, dict[str, str]]] = {
        "zip-of-everything-ignore-unparsable": (_zip(corpus), {"Ignore-Unparsable": "true"}),
        "zip-of-everything": (_zip(corpus), {}),
        "zip-path-traversal": (_zip({"../../evil.dcm": good, "/abs/evil2.dcm": good}), {}),
        "zip-bomb": (_zip({"zeros.dcm": b"\0" * (64 * 2**20)}), {}),
        "zip-truncated": (_zip({"a.dcm": good})[:-30], {}),
        "zip-nested": (_zip({"inner.zip": _zip({"a.dcm": good})}), {}),
        "zip-stored-random": (_zip({"r.dcm": rng.randbytes(5000)}, zipfile.ZIP_STORED), {}),
        "tar-symlink": (_tar({"a.dcm": good}, {"link.dcm": "/etc/passwd"}), {}),
        "tar-traversal": (_tar({"../../x.dcm": good}), {}),
        "random-bytes": (rng.randbytes(10000), {}),
        "gzip-of-random": (b"\x1f\x8b\x08\x00" + rng.randbytes(500), {}),
        "empty": (b"", {}),
    }
    for sample in special_cases():
        uploads[f"single:{sample.name}"] = (as_file(sample), {})
    statuses: dict[str, int] = {}
    with httpx.Client(base_url=server.url, auth=("admin", PASSWORD), timeout=60) as client:
        for name, (body, params) in uploads.items():
            reply = client.post("/data/services/import", params={"project": "demo", **params}, content=body)
            statuses[name] = reply.status_code
            assert reply.status_code < 500, f"{name}: {reply.status_code} {reply.text[:300]}"
        assert client.get("/health").status_code == 200
    assert statuses["zip-of-everything-ignore-unparsable"] == 200
    for name in ("zip-of-everything", "zip-bomb", "zip-truncated", "random-bytes", "empty", "single:zero-length"):
        assert 400 <= statuses[name] < 500, (name, statuses[name])
    assert not (tmp_path / "evil.dcm").exists() and not (tmp_path.parent / "evil.dcm").exists()
    _still_serving(daemon)
    _consistent(daemon)
