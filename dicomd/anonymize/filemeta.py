"""File Meta Information (group 0002) written fresh for every file dicomd writes.

PS3.15 E.1.1: the File Meta Information is replaced whenever a file is stored or modified during
de-identification. Nothing of the sender's group 0002 survives but the Transfer Syntax (the pixel
data is encoded in it): no Source / Sending / Receiving AE Titles or presentation addresses, no
Private Information; the implementation is dicomd's; the Media Storage SOP Class and Instance
UIDs are those of the dataset.
"""

from __future__ import annotations

import logging
from typing import Final

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

logger = logging.getLogger(__name__)

# A UUID-derived UID (PS3.5 B.2): uuid5(NAMESPACE_URL, "urn:dicomd:implementation")
IMPLEMENTATION_CLASS_UID: Final = UID("2.25.71431133760651983112178767126964716505")
IMPLEMENTATION_VERSION_NAME: Final = "DICOMD_0_1"


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if syntax:
        return UID(str(syntax))
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRBigEndian if little is False else ExplicitVRLittleEndian


def fresh_file_meta(ds: Dataset) -> None:
    """Replace `ds.file_meta` with a new group 0002 (the transfer syntax kept) and a zeroed preamble."""
    meta = FileMetaDataset()
    meta.FileMetaInformationGroupLength = 0  # computed by pydicom when the file is written
    meta.FileMetaInformationVersion = b"\x00\x01"
    if "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = _transfer_syntax(ds)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    ds.preamble = b"\x00" * 128  # a Part 10 file: zeroed preamble, DICM prefix
