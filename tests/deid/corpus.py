"""A de-identification test corpus: pydicom's bundled vendor files with identifiers planted where
real systems put them, and the list of strings that must not survive.

Vendors and kinds: GE CT and NM (private GEMS blocks), Toshiba MR, Siemens MR with overlays
(private SIEMENS MEDCOM blocks), HMC CT (UN private elements), Mortara ECG waveform, SR documents,
RT plan / dose / structure set, a segmentation, private sequences nested in private sequences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from dicomd.anonymize.pseudonyms import well_known_uid

FILES = (
    "CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "examples_overlay.dcm", "test-SR.dcm", "reportsi.dcm",
    "rtplan.dcm", "rtdose.dcm", "rtstruct.dcm", "liver_1frame.dcm", "waveform_ecg.dcm",
    "J2K_pixelrep_mismatch.dcm", "priv_SQ.dcm", "nested_priv_SQ.dcm", "MR_small_implicit.dcm",
)
HOST = "pacs.stbrigid-hospital.example"
# category -> planted strings (each one distinctive enough to grep the encoded bytes for)
PLANTED = {
    "names": ("Quattlebaum", "Zbigniew", "Fenwick", "Ottoline", "Prudhomme", "Casimir", "Wetherspoon"),
    "ids": ("MRN-99812734", "ACC-77345120", "STBRIGID-MRN", "STBRIGID-NAMESPACE", "1.2.826.0.1.99812.7",
            "STBRIGID-RIS-NS", "020 7946 0321"),
    "institution": ("Saint Brigid Royal Infirmary", "14 Harbour Road", "Brigid Neuroradiology"),
    "device": ("STBRIGID-CT-07",),
    "network": (HOST, "STBRIGIDSCU1", "STBRIGIDSEND", "STBRIGIDRECV"),
    "dates": ("20200131", "2020-01-31", "2019.12.31", "20191230", "20200201"),
}
_GENERIC = {"observer", "verifying", "operator", "anonymous", "enter text", "name", "first", "last", "test",
            "mid", "pre", "compressedsamples"}


@dataclass
class Sample:
    name: str
    ds: Dataset
    originals: dict[str, set[str]] = field(default_factory=dict)  # category -> identifying strings
    uids: set[str] = field(default_factory=set)  # instance UIDs that must be remapped


def _originals(ds: Dataset) -> tuple[dict[str, set[str]], set[str]]:
    found: dict[str, set[str]] = {"names": set(), "ids": set(), "institution": set(), "device": set(),
                                  "dates": set()}
    uids: set[str] = set()
    for elem in ds.iterall():
        if elem.tag.is_private or elem.VR == "SQ" or elem.is_empty:
            continue
        values = elem.value if isinstance(elem.value, (list, tuple, pydicom.multival.MultiValue)) else [elem.value]
        for value in values:
            text = str(value).strip()
            keyword = elem.keyword or ""
            if elem.VR == "PN":
                for part in text.replace("=", "^").split("^"):
                    if len(part) >= 4 and part.lower() not in _GENERIC:
                        found["names"].add(part)
            elif keyword in ("PatientID", "OtherPatientIDs", "AccessionNumber") and len(text) >= 5:
                found["ids"].add(text)
            elif keyword in ("InstitutionName", "InstitutionAddress") and len(text) >= 5:
                found["institution"].add(text)
            elif keyword in ("StationName", "DeviceSerialNumber") and len(text) >= 5 and text.strip("0-") != "":
                found["device"].add(text)
            elif elem.VR == "DA" and len(text) == 8 and text.isdigit():
                found["dates"].add(text)
            elif elem.VR == "UI" and not well_known_uid(text) and len(text) >= 8 and not keyword.endswith(
                    ("ClassUID", "CodingSchemeUID", "ContextUID", "MappingResourceUID")):
                uids.add(text)
    vendor = str(ds.get("Manufacturer", "")).lower()
    found["institution"] = {v for v in found["institution"] if v.lower() not in vendor}  # e.g. TOSHIBA
    return found, uids


def _item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _code(value: str, scheme: str, meaning: str) -> Sequence:
    return Sequence([_item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)])


def plant(ds: Dataset) -> None:
    """Identifiers where real systems put them (in place)."""
    study_uid = str(ds.get("StudyInstanceUID", "1.2.3"))
    # other persons in PN attributes the table does not name, and in the patient module
    ds.OtherPatientNames = "Quattlebaum^Zbigniew^Horatio"
    ds.add(DataElement(0x00142006, "PN", "Fenwick^Ottoline"))  # Evaluator Name
    ds.add(DataElement(0x00140104, "PN", "Prudhomme^Casimir"))  # Secondary Reviewer Name
    ds.OperatorsName = "Wetherspoon^Ann"
    # identifiers and their issuers
    ds.OtherPatientIDs = "MRN-99812734"
    ds.AccessionNumber = "ACC-77345120"
    ds.IssuerOfPatientID = "STBRIGID-MRN"
    ds.IssuerOfPatientIDQualifiersSequence = Sequence([_item(
        UniversalEntityID="urn:oid:1.2.826.0.1.99812.7", UniversalEntityIDType="ISO",
        LocalNamespaceEntityID="STBRIGID-NAMESPACE")])
    ds.IssuerOfAccessionNumberSequence = Sequence([_item(LocalNamespaceEntityID="STBRIGID-RIS-NS")])
    # where the study can be fetched: the hospital's host and the original Study UID
    ds.RetrieveURL = f"https://{HOST}/wado?requestType=WADO&studyUID={study_uid}"
    # institution, station
    ds.InstitutionName = "Saint Brigid Royal Infirmary"
    ds.InstitutionAddress = "14 Harbour Road, Kilmore"
    ds.InstitutionalDepartmentName = "Brigid Neuroradiology"
    ds.StationName = "STBRIGID-CT-07"
    # names and a phone number in descriptions
    ds.SeriesDescription = "T1 AX by Wetherspoon, call 020 7946 0321"
    ds.ImageComments = "Quattlebaum consented; reviewed by Fenwick"
    # nested text: an acquisition context with a TEXT item naming the referrer
    ds.AcquisitionContextSequence = Sequence([_item(
        ValueType="TEXT", ConceptNameCodeSequence=_code("121106", "DCM", "Comment"),
        TextValue="Referred by Dr Prudhomme, Saint Brigid Royal Infirmary")])
    # dates in odd forms: ISO date, ACR-NEMA date, multi-valued, DT with offset and fraction
    ds.add(DataElement(0x00080012, "DA", "2020-01-31"))  # Instance Creation Date, illegal ISO form
    ds.add(DataElement(0x00181200, "DA", ["20191230", "2019.12.31"]))  # Date of Last Calibration
    ds.add(DataElement(0x00181201, "TM", ["101010.123456", "12:30:00"]))  # Time of Last Calibration
    ds.add(DataElement(0x0008002A, "DT", "20200131120000.123456+0100"))  # Acquisition DateTime
    ds.ContributingEquipmentSequence = Sequence([_item(
        Manufacturer="Brigid Tools", InstitutionName="Saint Brigid Royal Infirmary",
        StationName="STBRIGID-CT-07", ContributionDateTime="20200101-20200201",
        PurposeOfReferenceCodeSequence=_code("109103", "DCM", "Modifying Equipment"))])
    # a private block with a name, an ID, a date and a private sequence holding a person
    block = ds.private_block(0x0009, "STBRIGID PRIVATE", create=True)
    block.add_new(0x01, "LO", "Quattlebaum^Zbigniew")
    block.add_new(0x02, "SH", "MRN-99812734")
    block.add_new(0x03, "DA", "20200131")
    inner = Dataset()
    inner.private_block(0x0011, "STBRIGID NESTED", create=True).add_new(0x01, "PN", "Fenwick^Ottoline")
    inner.PersonName = "Prudhomme^Casimir"
    block.add_new(0x04, "SQ", Sequence([inner]))
    if "ContentSequence" in ds:  # SR: a nested TEXT item and a PNAME item deep in the tree
        container = ds.ContentSequence[-1]
        target = container.ContentSequence if "ContentSequence" in container else ds.ContentSequence
        target.append(_item(RelationshipType="CONTAINS", ValueType="TEXT",
                            ConceptNameCodeSequence=_code("121106", "DCM", "Comment"),
                            TextValue="Dictated by Fenwick for Quattlebaum, MRN-99812734"))
        target.append(_item(RelationshipType="CONTAINS", ValueType="PNAME",
                            ConceptNameCodeSequence=_code("121008", "DCM", "Person Observer Name"),
                            PersonName="Prudhomme^Casimir"))
    # AE titles and presentation addresses in the file meta
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = FileMetaDataset()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7")
        meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "1.2.3.4")
        ds.file_meta = meta
    meta.SourceApplicationEntityTitle = "STBRIGIDSCU1"
    meta.SendingApplicationEntityTitle = "STBRIGIDSEND"
    meta.ReceivingApplicationEntityTitle = "STBRIGIDRECV"
    meta.add(DataElement(0x00020026, "UR", f"dicom://{HOST}:104"))  # Source Presentation Address


def build(directory: Path) -> list[tuple[Path, Sample]]:
    """Write the planted corpus to `directory`; return each file with what it holds."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for name in FILES:
        source = get_testdata_file(name)
        if source is None:  # pragma: no cover - a bundled file went missing
            raise FileNotFoundError(name)
        ds = pydicom.dcmread(source, force=True)
        originals, uids = _originals(ds)
        plant(ds)
        ds.preamble = ds.preamble or b"\x00" * 128
        path = directory / name
        ds.save_as(path, enforce_file_format=False)
        out.append((path, Sample(name, ds, originals, uids)))
    return out
