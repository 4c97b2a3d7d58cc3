"""Hostile input for the receivers: pydicom's test files, truncations, random bytes, a 4 GB declared
length, deep sequence nesting, bad character sets; and a C-STORE SCU that sends raw bytes."""

from __future__ import annotations

import contextlib
import io
import random
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pydicom.data
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, SecondaryCaptureImageStorage
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicomd.testing.generator import generate_study, instance_bytes
from dicomd.scp import TRANSFER_SYNTAXES


@dataclass(frozen=True)
class Sample:
    name: str
    data: bytes  # the data set as sent in the C-STORE (no preamble, no file meta)
    transfer_syntax: str
    sop_instance_uid: str


def _uid(n: int) -> str:
    return f"2.25.{77000000000 + n}"


def split(raw: bytes) -> tuple[bytes, str, str]:
    """(data set bytes, transfer syntax, SOP Instance UID or '') of a file's bytes."""
    if len(raw) >= 132 and raw[128:132] == b"DICM":
        with tempfile.NamedTemporaryFile(suffix=".dcm") as fh:
            fh.write(raw)
            fh.flush()
            try:
                meta, offset = split_dataset(Path(fh.name))
                ts = str(meta.get("TransferSyntaxUID", "") or ExplicitVRLittleEndian)
                return raw[offset:], ts, str(meta.get("MediaStorageSOPInstanceUID", "") or "")
            except Exception:  # noqa: BLE001 - a broken file meta: send the whole thing
                return raw[132:], str(ExplicitVRLittleEndian), ""
    return raw, str(ImplicitVRLittleEndian), ""


def pydicom_test_files() -> Iterator[Sample]:
    paths = [p for p in sorted(pydicom.data.get_testdata_files()) if Path(p).is_file()]
    for i, path in enumerate(paths):
        data, ts, uid = split(Path(path).read_bytes())
        if ts not in TRANSFER_SYNTAXES:
            ts = str(ExplicitVRLittleEndian)
        name = "/".join(Path(path).parts[-2:]) if Path(path).parent.name != "test_files" else Path(path).name
        yield Sample(f"pydicom:{name}", data, ts, _clean_uid(uid) or _uid(i))


def _clean_uid(uid: str) -> str:
    uid = uid.strip("\0 ")
    return uid if uid and len(uid) <= 64 and all(c in "0123456789." for c in uid) else ""


def truncations(seed: int = 0) -> Iterator[Sample]:
    """Copies of a few realistic instances cut at several offsets."""
    sources = [("generated", instance_bytes(generate_study(seed, series=1, instances_per_series=1, rows=32, cols=32)[0]))]
    for name in ("CT_small.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "rtplan.dcm", "SC_rgb_rle_2frame.dcm"):
        sources.append((name, Path(pydicom.data.get_testdata_file(name)).read_bytes()))  # type: ignore[arg-type]
    n = 0
    for name, raw in sources:
        data, ts, _uid_ = split(raw)
        for fraction in (0.05, 0.3, 0.6, 0.97):
            cut = max(1, int(len(data) * fraction))
            n += 1
            yield Sample(f"truncated:{name}@{fraction}:{cut}", data[:cut], ts, _uid(5000 + n))
        n += 1
        yield Sample(f"truncated:{name}@-1", data[:-1], ts, _uid(5000 + n))


def random_bytes(seed: int = 0, count: int = 12) -> Iterator[Sample]:
    rng = random.Random(seed)
    for i in range(count):
        size = rng.choice([1, 2, 7, 8, 64, 300, 4096, 70000])
        yield Sample(f"random:{i}:{size}", rng.randbytes(size), str(ExplicitVRLittleEndian), _uid(6000 + i))
    # random bytes after a plausible start
    good = instance_bytes(generate_study(seed, series=1, instances_per_series=1, rows=8, cols=8)[0])
    data, ts, _ = split(good)
    yield Sample("random-tail", data[:200] + rng.randbytes(2000), ts, _uid(6100))


def _dataset_bytes(ds: Dataset, implicit: bool = False) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
    return buf.getvalue()


def _base(uid: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = uid + ".1"
    ds.SeriesInstanceUID = uid + ".2"
    ds.PatientID = "BADINPUT"
    ds.Modality = "OT"
    return ds


def special_cases() -> Iterator[Sample]:
    explicit = str(ExplicitVRLittleEndian)
    yield Sample("zero-length", b"", explicit, _uid(7000))
    # Zeros parse as endless (0000,0000) elements: must be refused quickly, not walked
    yield Sample("zeros-8MB", b"\0" * (8 * 2**20), explicit, _uid(7005))
    # An element declaring ~4 GB (0xFFFFFFF0 bytes) with a few bytes behind it.
    head = _dataset_bytes(_base(_uid(7001)))
    huge = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFF0) + b"\0" * 64
    yield Sample("4GB-declared-length", head + huge, explicit, _uid(7001))
    # The same with an implicit VR header whose 4-byte length claims 4 GB for a text value.
    ds = _base(_uid(7002))
    head = _dataset_bytes(ds, implicit=True)
    yield Sample("4GB-implicit-text", head + struct.pack("<HHI", 0x0010, 0x4000, 0xFFFFFFF0) + b"abc",
                 str(ImplicitVRLittleEndian), _uid(7002))
    # Deep sequence nesting, undefined lengths: well past Python's recursion limit.
    yield Sample("deep-nesting-5000", _deep(_uid(7003), 5000), explicit, _uid(7003))
    yield Sample("deep-nesting-200", _deep(_uid(7004), 200), explicit, _uid(7004))
    # Invalid / unknown character sets and undecodable text.
    for i, (charset, name) in enumerate([
        ("ISO_IR 999", b"Bad^Charset"),
        ("ISO_IR 192", b"\xff\xfe\xc3\x28^Invalid UTF8"),
        ("ISO 2022 IR 87", b"\x1b$B\xff\xff\x1b(B^Broken Escape"),
        ("\\\\\\", b"\x00\x01\x02"),
    ]):
        ds = _base(_uid(7010 + i))
        ds.SpecificCharacterSet = charset
        ds.PatientName = "placeholder"
        ds.StudyDescription = "placeholder"
        data = _dataset_bytes(ds).replace(b"placeholder\x00", b"placeholder ")
        data = data.replace(b"placeholder", name.ljust(11, b" ")[:11]) if len(name) <= 11 else data
        yield Sample(f"charset:{charset!r}", data, explicit, _uid(7010 + i))
    # Required UIDs missing, and a SOP Instance UID that is not a UID at all.
    ds = _base(_uid(7020))
    del ds.StudyInstanceUID
    yield Sample("no-study-uid", _dataset_bytes(ds), explicit, _uid(7020))
    ds = _base(_uid(7021))
    ds.SOPInstanceUID = "../../../etc/passwd"
    yield Sample("path-traversal-uid", _dataset_bytes(ds), explicit, _uid(7021))


def _deep(uid: str, depth: int) -> bytes:
    head = _dataset_bytes(_base(uid))
    seq_start = struct.pack("<HH2sHI", 0x0040, 0x0275, b"SQ", 0, 0xFFFFFFFF)
    item_start = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    seq_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return head + (seq_start + item_start) * depth + (item_end + seq_end) * depth


def all_samples() -> list[Sample]:
    return [*pydicom_test_files(), *truncations(), *random_bytes(), *special_cases()]


class RawSender:
    """A C-STORE SCU that sends arbitrary bytes as the data set (pynetdicom's chunked file send)."""

    def __init__(self, port: int, folder: Path, timeout: float = 20) -> None:
        self.port = port
        self.folder = folder
        self.timeout = timeout
        self.assoc = None

    def _associate(self) -> None:
        ae = AE(ae_title="FUZZER")
        for ts in TRANSFER_SYNTAXES:
            ae.add_requested_context(SecondaryCaptureImageStorage, ts)
        ae.add_requested_context(Verification)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        self.assoc = ae.associate("127.0.0.1", self.port, ae_title="DICOMD")
        if not self.assoc.is_established:
            raise ConnectionError("association not established")

    def send(self, sample: Sample) -> int:
        """The C-STORE status, or -1 when the association died without answering."""
        if self.assoc is None or not self.assoc.is_established:
            self._associate()
        path = self.folder / "outgoing.dcm"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = sample.sop_instance_uid
        meta.TransferSyntaxUID = sample.transfer_syntax
        buf = io.BytesIO()
        buf.write(b"\0" * 128 + b"DICM")
        write_file_meta_info(buf, meta, enforce_standard=True)
        path.write_bytes(buf.getvalue() + sample.data)
        assert _config.STORE_SEND_CHUNKED_DATASET, "use the chunked_send() context manager"
        status = self.assoc.send_c_store(path)  # type: ignore[union-attr]
        return int(status.Status) if status and "Status" in status else -1

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()


@contextlib.contextmanager
def chunked_send() -> Iterator[None]:
    """pynetdicom sends a file's bytes as they are (process-wide switch, restored afterwards)."""
    before = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = before
