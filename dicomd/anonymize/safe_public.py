"""What the Basic Profile keeps that Table E.1-1 does not name, and what an IOD requires. Pure data.

The profile is default-deny: a public attribute the table does not name is kept only when it is
safe by construction, i.e. listed here (docs/anonymization.md names these lists):

- `BINARY_VRS`: binary numbers and tags (US, FL, AT...) cannot spell a name or an identifier;
- `CODED_GROUPS`: in these groups CS / DS / IS values are codes, counts and measurements of the
  acquisition, the image or the treatment (their text attributes are not covered);
- `SAFE_KEYWORDS`: a reviewed list, one group per purpose;
- `CLEANED_LABELS`: short labels that a type 1 or 2 rule needs kept; identifying tokens are
  removed from them, as Clean Descriptors does;
- `SAFE_BULK`: OB / OW data that is image or signal, not text (Pixel Data is always kept).

Everything else goes by VR (see `profile.py`). `REQUIRED` says which attributes common IODs
require (type 1 or 2), so that removing a value keeps the object valid: a type 2 attribute is
emptied instead, a type 1 attribute gets a VR-valid dummy.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final, Mapping

from pydicom.datadict import tag_for_keyword

BINARY_VRS: Final = frozenset({"US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT", "OF", "OD", "OL", "OV"})
CODED_VRS: Final = frozenset({"CS", "DS", "IS"})
CODED_GROUPS: Final = frozenset({
    0x0018,  # acquisition parameters (CT, MR, US, NM, X-ray, enhanced MR functional groups)
    0x0020,  # relationship and geometry: numbers, positions, orientations, laterality
    0x0022,  # ophthalmic acquisition
    0x0028,  # image pixel, presentation, LUTs
    0x003A,  # waveform channels
    0x0040,  # SR content items (value type, relationship, numeric values), procedure codes
    0x0048,  # whole-slide microscopy
    0x0052,  # intravascular OCT
    0x0054,  # NM / PET
    0x0062,  # segmentation
    0x0066,  # surfaces
    0x0068,  # implant templates
    0x0070,  # presentation state geometry and display
    0x2050,  # presentation LUT
    0x3002, 0x3004, 0x3006, 0x3008, 0x300A, 0x300C, 0x300E,  # RT image, dose, structures, plan, review
    0x5200,  # multi-frame functional groups
    0x5400,  # waveform
})

_SAFE: dict[str, tuple[str, ...]] = {
    # what the object is and how its text is encoded
    "object": ("SpecificCharacterSet", "ImageType", "Modality", "ConversionType", "PresentationIntentType",
               "FrameType", "PixelPresentation", "VolumetricProperties", "VolumeBasedCalculationTechnique",
               "ComplexImageComponent", "AcquisitionContrast", "InstanceNumber", "SeriesNumber",
               "AcquisitionNumber", "RecognizableVisualFeatures", "BurnedInAnnotation",
               "PatientIdentityRemoved", "LongitudinalTemporalInformationModified", "ContentQualification"),
    # the kind of device (make, model, software): the table removes the individual device's identity
    "device type": ("Manufacturer", "ManufacturerModelName", "SoftwareVersions"),
    # coded concepts: a code and its meaning from a coding scheme
    "codes": ("CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning", "LongCodeValue",
              "URNCodeValue", "ContextIdentifier", "ContextUID", "MappingResource", "ContextGroupExtensionFlag",
              "MappingResourceName", "CodingSchemeIdentificationSequence", "CodingSchemeUID"),
    # references between instances (their UIDs are remapped)
    "references": ("ReferencedFrameNumber", "ReferencedSegmentNumber", "ReferencedWaveformChannels",
                   "ReferencedTimeOffsets", "ReferencedSamplePositions"),
    # acquisition and reconstruction parameters written as text by their VR
    "acquisition text": ("SequenceName", "ImagedNucleus", "TransmitCoilName", "ReceiveCoilName", "FilterType",
                         "ConvolutionKernel", "ContrastBolusRoute", "TransducerData", "ProcessingFunction",
                         "PulseSequenceName", "PositionReferenceIndicator", "RescaleType",
                         "WindowCenterWidthExplanation", "DimensionDescriptionLabel", "LossyImageCompressionMethod",
                         "ReceiveCoilManufacturerName", "MultiCoilElementName",
                         "DiffusionDirectionality", "ChemicalShiftReference"),
}
SAFE_KEYWORDS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(_SAFE)

# Labels an IOD requires that operators may type freely: kept, with identifying tokens removed.
CLEANED_LABELS: Final = frozenset({
    "SegmentLabel", "SegmentDescription", "SegmentAlgorithmName", "ContentLabel", "ContentDescription",
    "BeamName", "GraphicLayer", "GraphicLayerDescription",
})

SAFE_BULK: Final = frozenset({
    "RedPaletteColorLookupTableData", "GreenPaletteColorLookupTableData", "BluePaletteColorLookupTableData",
    "AlphaPaletteColorLookupTableData", "SegmentedRedPaletteColorLookupTableData",
    "SegmentedGreenPaletteColorLookupTableData", "SegmentedBluePaletteColorLookupTableData", "LUTData",
    "ICCProfile", "WaveformData", "ChannelMinimumValue", "ChannelMaximumValue", "WaveformPaddingValue",
    "FloatPixelData", "DoubleFloatPixelData", "PixelData",
})

# Type of attributes the profile touches, by IOD family (the strictest over the family's modules).
# "image": the General Image/Series/Study/Equipment modules; "enhanced": multi-frame functional group
# IODs (Enhanced General Equipment, Multi-frame Functional Groups); "sr": SR Document General;
# "rt": RT Series, RT General Plan, Structure Set, RT Dose; "pr": presentation states.
_REQUIRED: dict[str, dict[str, int]] = {
    "any": {"StudyDate": 2, "StudyTime": 2, "ReferringPhysicianName": 2, "StudyID": 2, "AccessionNumber": 2,
            "PatientName": 2, "PatientID": 2, "PatientBirthDate": 2, "PatientSex": 2, "Manufacturer": 2,
            "PositionReferenceIndicator": 2, "Laterality": 2, "SeriesNumber": 2, "InstanceNumber": 2,
            "PatientOrientation": 2, "ContentDate": 2, "ContentTime": 2, "AcquisitionContextSequence": 2},
    "enhanced": {"ContentDate": 1, "ContentTime": 1, "AcquisitionDateTime": 1, "Manufacturer": 1,
                 "ManufacturerModelName": 1, "DeviceSerialNumber": 1, "SoftwareVersions": 1,
                 "ContentLabel": 1, "ContentDescription": 2, "ContentCreatorName": 2},
    "sr": {"ContentDate": 1, "ContentTime": 1, "InstanceNumber": 1, "SeriesNumber": 1,
           "ReferencedPerformedProcedureStepSequence": 2},
    "waveform": {"ContentDate": 1, "ContentTime": 1, "AcquisitionDateTime": 1},
    "rt": {"OperatorsName": 2, "StructureSetLabel": 1, "StructureSetDate": 2, "StructureSetTime": 2,
           "RTPlanLabel": 1, "RTPlanDate": 2, "RTPlanTime": 2, "ROIName": 2, "ROIObservationLabel": 3,
           "ReviewDate": 1, "ReviewTime": 1, "ReviewerName": 2, "InstanceCreationDate": 3,
           "TreatmentMachineName": 2},
    "pr": {"ContentLabel": 1, "ContentDescription": 2, "ContentCreatorName": 2, "PresentationCreationDate": 1,
           "PresentationCreationTime": 1},
}
# attributes of sequence items: (sequence, attribute) -> type
_NESTED: dict[tuple[str, str], int] = {
    ("BeamSequence", "TreatmentMachineName"): 2,
    ("ContributingEquipmentSequence", "Manufacturer"): 1,
    ("ROIContourSequence", "ReferencedROINumber"): 1,
    ("StructureSetROISequence", "ROIName"): 2,
    ("RTROIObservationsSequence", "ROIInterpreter"): 2,
    ("ApprovalSequence", "ReviewerName"): 2,
}
# inside an SR content item, the value attribute its Value Type names is type 1
CONTENT_ITEM_VALUE: Final[Mapping[str, str]] = MappingProxyType({
    "TEXT": "TextValue", "PNAME": "PersonName", "DATE": "Date", "TIME": "Time", "DATETIME": "DateTime",
    "UIDREF": "UID",
})
# enumerated CS values that a dummy must use (any other CS dummy is a defined term of the attribute)
CS_DUMMIES: Final[Mapping[str, str]] = MappingProxyType({
    "PatientSex": "O", "ImageLaterality": "U", "ApprovalStatus": "UNAPPROVED",
    "ContentLabel": "ANONYMIZED",
})


def _tags(names: tuple[str, ...] | frozenset[str]) -> frozenset[int]:
    tags = set()
    for name in names:
        tag = tag_for_keyword(name)
        if tag is None:
            raise ValueError(f"not a DICOM keyword: {name}")
        tags.add(int(tag))
    return frozenset(tags)


SAFE_TAGS: Final = _tags(tuple(k for group in _SAFE.values() for k in group))
CLEANED_TAGS: Final = _tags(CLEANED_LABELS)
SAFE_BULK_TAGS: Final = _tags(SAFE_BULK)
REQUIRED: Final[Mapping[str, Mapping[int, int]]] = MappingProxyType(
    {family: MappingProxyType({int(tag_for_keyword(k)): t for k, t in rows.items()})  # type: ignore[arg-type]
     for family, rows in _REQUIRED.items()}
)
NESTED_REQUIRED: Final[Mapping[tuple[int, int], int]] = MappingProxyType(
    {(int(tag_for_keyword(a)), int(tag_for_keyword(b))): t for (a, b), t in _NESTED.items()}  # type: ignore[arg-type]
)
# items of these sequences are HL7v2 Hierarchic Designators: without their identifiers they are dropped
HIERARCHIC_DESIGNATOR: Final = _tags(("LocalNamespaceEntityID", "UniversalEntityID"))
_WAVEFORM_PREFIX = "1.2.840.10008.5.1.4.1.1.9."
_RT_PREFIX = "1.2.840.10008.5.1.4.1.1.481."
_SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
_PR_PREFIX = "1.2.840.10008.5.1.4.1.1.11."


def families(sop_class: str, enhanced: bool) -> tuple[str, ...]:
    """The IOD families whose type rules apply to a top-level dataset of this SOP Class."""
    found = ["any"]
    if enhanced or sop_class == "1.2.840.10008.5.1.4.1.1.66.4":
        found.append("enhanced")
    if sop_class.startswith(_SR_PREFIX):
        found.append("sr")
    if sop_class.startswith(_RT_PREFIX):
        found.append("rt")
    if sop_class.startswith(_PR_PREFIX):
        found.append("pr")
    if sop_class.startswith(_WAVEFORM_PREFIX):
        found.append("waveform")
    return tuple(found)


def required_type(tag: int, fams: tuple[str, ...]) -> int:
    """1, 2 or 3 (optional) for a top-level attribute of an IOD of these families."""
    best = 3
    for family in fams:
        best = min(best, REQUIRED[family].get(tag, 3))
    return best
