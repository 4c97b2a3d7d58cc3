"""Read just what ingest needs from a DICOM file, and check that the file is whole.

Values are not decoded beyond the few attributes routing and the catalog need; large values are
skipped with seeks (deferred), so a multi-GB instance is checked without reading it into memory.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset, read_partial
from pydicom.uid import (DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ExplicitVRLittleEndian,
                         ImplicitVRLittleEndian)

from dicomd.errors import InvalidInput
from dicomd.routing import ACCESSION_NUMBER, COMMENT_TAGS, PATIENT_ID, PATIENT_NAME, STUDY_DESCRIPTION

logger = logging.getLogger(__name__)

ROUTING_TAGS = (*COMMENT_TAGS, STUDY_DESCRIPTION, ACCESSION_NUMBER, PATIENT_NAME, PATIENT_ID)
DEFER = 2048  # values longer than this are not read, only skipped
MAX_ELEMENTS = 1_000_000  # top-level elements; real instances have thousands at most
MAX_DISORDER = 1000  # elements out of ascending order before the data is judged not DICOM


@dataclass(frozen=True)
class HeaderInfo:
    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    series_number: str
    series_description: str
    modality: str
    study_date: str
    study_time: str
    transfer_syntax: str
    has_preamble: bool
    routing: Mapping[int, str]

    def meta_prefix(self) -> bytes:
        """Preamble + File Meta to prepend to a file that arrived as a bare dataset."""
        from io import BytesIO

        from pydicom.dataset import FileMetaDataset
        from pydicom.filewriter import write_file_meta_info

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = self.sop_class_uid
        meta.MediaStorageSOPInstanceUID = self.sop_instance_uid
        meta.TransferSyntaxUID = self.transfer_syntax
        buf = BytesIO()
        buf.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(buf, meta, enforce_standard=True)
        return buf.getvalue()


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a malformed value is treated as absent
        return ""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    return str(value).strip().replace("\x00", "")


def _tag_text(ds: pydicom.Dataset, tag: int) -> str:
    try:
        elem = ds.get(tag)
        if elem is None or elem.value is None:
            return ""
        return str(elem.value).strip().replace("\x00", "")
    except Exception:  # noqa: BLE001
        return ""


def read_header(path: Path) -> HeaderInfo:
    """Parse ``path``; raise InvalidInput with a precise reason when it is not a whole DICOM instance."""
    size = os.path.getsize(path)
    if size == 0:
        raise InvalidInput("empty file")
    has_preamble = _has_preamble(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            guard = _Guard()
            with open(path, "rb") as fh:
                if _command_group_first(fh, has_preamble):
                    # pydicom would read every (0000,eeee) "element" first: a file of zeros is millions
                    raise InvalidInput("not a DICOM file: the data set starts with command group (0000) elements")
                ds = read_partial(fh, guard, defer_size=DEFER, force=not has_preamble)
            if guard.problem:
                raise InvalidInput(f"not a DICOM file: {guard.problem}")
        except InvalidInput:
            raise
        except InvalidDicomError as exc:
            raise InvalidInput(f"not a DICOM file: {exc}") from None
        except (EOFError, OSError) as exc:
            raise InvalidInput(f"truncated or unreadable DICOM: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on hostile input
            raise InvalidInput(f"cannot parse DICOM: {type(exc).__name__}: {exc}") from None
        meta = getattr(ds, "file_meta", None) or {}
        deflated = str(getattr(meta, "TransferSyntaxUID", "") or "") == DeflatedExplicitVRLittleEndian
        _check_whole(ds, None if deflated else size)  # a deflated data set's offsets are in the inflated stream
        sop_uid = _text(ds, "SOPInstanceUID") or str(getattr(meta, "MediaStorageSOPInstanceUID", "") or "")
        sop_class = _text(ds, "SOPClassUID") or str(getattr(meta, "MediaStorageSOPClassUID", "") or "")
        study_uid = _text(ds, "StudyInstanceUID")
        if not sop_uid:
            raise InvalidInput("missing SOP Instance UID (0008,0018)")
        if not study_uid:
            raise InvalidInput("missing Study Instance UID (0020,000D)")
        if not has_preamble and len(ds) == 0:
            raise InvalidInput("not a DICOM file: no data elements")
        transfer_syntax = str(getattr(meta, "TransferSyntaxUID", "") or "") or _guess_syntax(ds)
        routing = {tag: _tag_text(ds, tag) for tag in ROUTING_TAGS}
        return HeaderInfo(
            sop_instance_uid=sop_uid,
            sop_class_uid=sop_class,
            study_instance_uid=study_uid,
            series_instance_uid=_text(ds, "SeriesInstanceUID"),
            series_number=_text(ds, "SeriesNumber"),
            series_description=_text(ds, "SeriesDescription")[:256],
            modality=_text(ds, "Modality")[:16],
            study_date=_text(ds, "StudyDate")[:8],
            study_time=_text(ds, "StudyTime")[:16],
            transfer_syntax=transfer_syntax,
            has_preamble=has_preamble,
            routing=routing,
        )


class _Guard:
    """``stop_when`` for pydicom's reader: gives up on data that only looks like elements (a file of
    zeros parses as millions of repeated (0000,0000) elements) instead of walking all of it."""

    def __init__(self) -> None:
        self.last = -1
        self.count = 0
        self.disorder = 0
        self.problem = ""

    def __call__(self, tag: Any, _vr: Any, _length: int) -> bool:
        self.count += 1
        if tag <= self.last:
            self.disorder += 1  # a few out-of-order elements happen in real files; thousands do not
            if self.disorder > MAX_DISORDER:
                self.problem = f"more than {MAX_DISORDER} data elements out of order"
                return True
        self.last = max(self.last, int(tag))
        if self.count > MAX_ELEMENTS:
            self.problem = f"more than {MAX_ELEMENTS} top-level data elements"
            return True
        return False


def _command_group_first(fh: Any, has_preamble: bool) -> bool:
    """True when the data set (after any preamble and file meta) begins with group 0000, which a
    stored instance never holds. Leaves ``fh`` at the start of the file."""
    if has_preamble:
        fh.seek(132)
        read_dataset(fh, is_implicit_VR=False, is_little_endian=True, stop_when=lambda tag, _vr, _n: tag.group != 2)
    group = fh.read(2)
    fh.seek(0)
    return group == b"\x00\x00"


def _has_preamble(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _guess_syntax(ds: pydicom.Dataset) -> str:
    if getattr(ds, "original_encoding", None):
        implicit, little = ds.original_encoding
    else:
        implicit, little = True, True
    if not little:
        return str(ExplicitVRBigEndian)
    return str(ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian)


def _check_whole(ds: pydicom.Dataset, size: int | None) -> None:
    """Every top-level value must end inside the file (catches truncation of deferred values);
    ``size`` None: only that there are elements (pydicom inflated a deflated data set whole)."""
    last: Any = None
    for elem in ds._dict.values():  # raw elements: reading them here would decode every value
        last = elem
        if size is not None and isinstance(elem, RawDataElement) and elem.length not in (0xFFFFFFFF, None):
            end = elem.value_tell + elem.length
            if end > size:
                raise InvalidInput(
                    f"truncated: element ({elem.tag.group:04X},{elem.tag.element:04X}) needs {end} bytes, file has {size}"
                )
    if last is None:
        raise InvalidInput("not a DICOM file: no data elements")
