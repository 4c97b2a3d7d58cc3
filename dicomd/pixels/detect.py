"""Why an instance might carry burned-in text (or a face): short, PHI-free reasons.

Every reason is built from a fixed vocabulary (attribute names, modality codes and pydicom's SOP
class and transfer syntax names), never from a free-text value of the dataset.
"""

from __future__ import annotations

from types import MappingProxyType

from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

#: Modalities whose images commonly carry text in their pixels.
BURNED_IN_MODALITIES = MappingProxyType({
    "US": "ultrasound", "SC": "secondary capture", "XA": "X-ray angiography", "ES": "endoscopy",
    "OP": "ophthalmic photography", "XC": "external camera photography", "OT": "other",
})
FACES = "RecognizableVisualFeatures=YES"


def _uids(kind: str, *words: str) -> MappingProxyType[str, str]:
    """pydicom's UIDs of ``kind`` whose name holds one of ``words`` -> their short name."""
    found = {}
    for uid, entry in UID_dictionary.items():
        name, uid_type = entry[0], entry[1]
        if uid_type == kind and any(word in name for word in words):
            found[str(uid)] = name.removesuffix(" SOP Class").removesuffix(" Transfer Syntax")
    return MappingProxyType(found)


#: The secondary-capture family, encapsulated documents (PDF, CDA, STL, OBJ, MTL) and video.
BURNED_IN_SOP_CLASSES = _uids("SOP Class", "Secondary Capture", "Encapsulated", "Video")
#: Video transfer syntaxes (MPEG-2, MPEG-4 AVC, HEVC, SMPTE 2110): frames of a camera or screen.
VIDEO_TRANSFER_SYNTAXES = _uids("Transfer Syntax", "MPEG", "HEVC", "SMPTE ST 2110")
#: SOP classes whose data is not an image a rectangle can clean (documents, 3D models).
NOT_IMAGES = frozenset(uid for uid, name in BURNED_IN_SOP_CLASSES.items() if name.startswith("Encapsulated"))


def _yes(ds: Dataset, keyword: str) -> bool:
    return str(ds.get(keyword, "") or "").strip().upper() == "YES"


def _values(ds: Dataset, keyword: str) -> list[str]:
    value = ds.get(keyword)
    if value is None:
        return []
    items = [value] if isinstance(value, (str, bytes)) else list(value)
    return [str(v).strip().upper() for v in items]


def transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def burned_in_reasons(ds: Dataset) -> tuple[str, ...]:
    """Every reason this instance might carry burned-in text or a recognizable face; () when none."""
    reasons: list[str] = []
    if _yes(ds, "BurnedInAnnotation"):
        reasons.append("BurnedInAnnotation=YES")
    if _yes(ds, "RecognizableVisualFeatures"):
        reasons.append(FACES)
    image_type = _values(ds, "ImageType")
    for word in ("SECONDARY", "SCREEN SAVE"):
        if word in image_type:
            reasons.append(f"ImageType {word}")
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in BURNED_IN_MODALITIES:
        reasons.append(f"modality {modality} ({BURNED_IN_MODALITIES[modality]})")
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class in BURNED_IN_SOP_CLASSES:
        reasons.append(BURNED_IN_SOP_CLASSES[sop_class])
    syntax = transfer_syntax(ds)
    if syntax in VIDEO_TRANSFER_SYNTAXES:
        reasons.append(f"video ({VIDEO_TRANSFER_SYNTAXES[syntax]})")
    return tuple(reasons)


def has_faces(reasons: tuple[str, ...]) -> bool:
    return FACES in reasons
