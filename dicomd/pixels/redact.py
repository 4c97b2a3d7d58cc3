"""Clean Pixel Data: blank a rule's rectangles in every frame of an instance, in place.

The pixel data is decoded (native, or compressed through pydicom's plugins: pylibjpeg, Pillow),
the rectangles are set to black (the lowest value for MONOCHROME2, the highest for MONOCHROME1,
0 for RGB and palette indices, Y=0 Cb=Cr=mid for YBR_FULL) and everything else stays as decoded,
sample for sample. Native data is written back native (Explicit VR Little Endian when it was big
endian or deflated); compressed data is re-encoded as RLE Lossless, so nothing is lost twice. A
lossy source stays flagged lossy (Lossy Image Compression 01, its ratio and method kept or the
method added); a decoder that hands back RGB for YBR data has the Photometric Interpretation
corrected. Bits above Bits Stored (overlay planes) are cleared. Burned In Annotation becomes NO and
code 113101 (Clean Pixel Data Option) joins the De-identification Method Code Sequence.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from typing import TYPE_CHECKING

import pydicom.uid as uids
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from dicomd.config import PixelRuleConfig
from dicomd.pixels.detect import NOT_IMAGES, VIDEO_TRANSFER_SYNTAXES, transfer_syntax
from dicomd.pixels.rules import Box, clipped

if TYPE_CHECKING:  # imported where pixels are decoded: a receiver process never loads NumPy
    import numpy as np

logger = logging.getLogger(__name__)

CLEAN_PIXEL_CODE = ("113101", "Clean Pixel Data Option")
_LOSSLESS = frozenset(str(u) for u in (
    *uids.UncompressedTransferSyntaxes, *uids.RLETransferSyntaxes, uids.JPEGLossless, uids.JPEGLosslessSV1,
    uids.JPEGLSLossless, uids.JPEG2000Lossless, uids.HTJ2KLossless, uids.HTJ2KLosslessRPCL,
))
_NATIVE_KEPT = frozenset({str(uids.ExplicitVRLittleEndian), str(uids.ImplicitVRLittleEndian)})
_LOSSY_METHODS = (
    (uids.JPEGTransferSyntaxes, "ISO_10918_1"),
    (uids.JPEGLSTransferSyntaxes, "ISO_14495_1"),
    ((uids.JPEG2000, uids.JPEG2000MC), "ISO_15444_1"),
    ((uids.HTJ2K,), "ISO_15444_15"),
)


class CannotRedact(Exception):
    """The rule matched but its rectangles cannot be blanked (no image, video, undecodable data).
    The message is PHI-free."""


@dataclass(frozen=True)
class Redaction:
    """What one rule did to one instance."""

    rule: str
    frames: int
    boxes: tuple[Box, ...]
    transfer_syntax: str  # as written
    photometric: str  # as written


def blank_value(photometric: str, bits_stored: int, signed: bool) -> tuple[int, ...]:
    """The sample values of black, per sample, for the decoded data's photometric interpretation."""
    if photometric == "MONOCHROME1":
        return ((1 << (bits_stored - 1)) - 1 if signed else (1 << bits_stored) - 1,)
    if photometric == "MONOCHROME2":
        return (-(1 << (bits_stored - 1)) if signed else 0,)
    if photometric.startswith("YBR"):
        mid = 1 << (bits_stored - 1)
        return (0, mid, mid)
    if photometric == "PALETTE COLOR":
        return (0,)
    return (0, 0, 0)


def check_redactable(ds: Dataset) -> None:
    """Raise CannotRedact when ``ds`` has no pixel data a rectangle could clean."""
    if str(ds.get("SOPClassUID", "")) in NOT_IMAGES:
        raise CannotRedact("an encapsulated document has no pixels to redact")
    if "PixelData" not in ds and ("Rows" not in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds):
        raise CannotRedact("no Pixel Data to redact (float or no image)")  # a header read without pixels has Rows
    syntax = transfer_syntax(ds)
    if syntax in VIDEO_TRANSFER_SYNTAXES:
        raise CannotRedact(f"video ({VIDEO_TRANSFER_SYNTAXES[syntax]}) cannot be redacted frame by frame")


def decode(ds: Dataset) -> tuple[np.ndarray, str]:
    """All frames as (frames, rows, columns, samples), and the photometric interpretation of that array.
    Native data comes as stored (YBR stays YBR); compressed data as its decoder gives it (RGB for YBR JPEG)."""
    from pydicom.pixels import get_decoder

    syntax = uids.UID(transfer_syntax(ds) or uids.ExplicitVRLittleEndian)
    try:
        decoder = get_decoder(syntax)
        arr, meta = decoder.as_array(ds, as_rgb=syntax.is_compressed)
    except Exception as exc:  # noqa: BLE001 - any decoder failure means: cannot redact
        raise CannotRedact(f"the pixel data cannot be decoded ({type(exc).__name__})") from None
    rows, columns = int(ds.Rows), int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel") or 1)
    photometric = str(meta.get("photometric_interpretation") or ds.get("PhotometricInterpretation", "MONOCHROME2"))
    return arr.reshape(-1, rows, columns, samples), photometric


def blank(frames: np.ndarray, boxes: Sequence[Box], value: Sequence[int]) -> None:
    """Set every box of every frame to ``value`` (in place)."""
    import numpy as np

    fill = np.asarray(value, dtype=frames.dtype)
    for x, y, width, height in boxes:
        frames[:, y:y + height, x:x + width, :] = fill


def redact(ds: Dataset, rule: PixelRuleConfig) -> Redaction:
    """Blank ``rule``'s rectangles in every frame of ``ds`` and record it in the header (in place)."""
    import numpy as np

    check_redactable(ds)
    if "PixelData" not in ds:
        raise CannotRedact("no Pixel Data to redact")
    source = transfer_syntax(ds) or str(uids.ExplicitVRLittleEndian)
    bits_allocated = int(ds.get("BitsAllocated") or 8)
    bits_stored = int(ds.get("BitsStored") or bits_allocated)
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    frames, photometric = decode(ds)
    frames = np.array(frames, copy=True)  # the decoder's array may be read-only
    if not signed and bits_allocated > 1 and bits_stored < frames.dtype.itemsize * 8:
        frames &= np.asarray((1 << bits_stored) - 1, dtype=frames.dtype)  # overlay planes in the high bits
    boxes = tuple(clipped(rule, int(ds.Rows), int(ds.Columns)))
    blank(frames, boxes, blank_value(photometric, bits_stored, signed)[: frames.shape[-1]])
    written = _store(ds, frames, source, photometric, bits_allocated)
    _flag(ds, source, rule)
    logger.debug("rule %s blanked %d rectangle(s) in %d frame(s)", rule.name, len(boxes), frames.shape[0])
    return Redaction(rule.name, frames.shape[0], boxes, written, photometric)


def _store(ds: Dataset, frames: np.ndarray, source: str, photometric: str, bits_allocated: int) -> str:
    """Write ``frames`` back into ``ds``: native as native, compressed as RLE Lossless. Returns the syntax."""
    import numpy as np

    samples = frames.shape[-1]
    single = frames.shape[0] == 1 and int(ds.get("NumberOfFrames") or 1) == 1
    shaped = frames[0] if single else frames
    if samples == 1:
        shaped = shaped[..., 0]
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        ds.PlanarConfiguration = 0  # the decoded array is pixel-interleaved
    if not uids.UID(source).is_compressed:
        syntax = source if source in _NATIVE_KEPT else str(uids.ExplicitVRLittleEndian)
        if bits_allocated == 1:
            from pydicom.pixels import pack_bits

            data = pack_bits(shaped)
        else:
            data = np.ascontiguousarray(shaped).astype(shaped.dtype.newbyteorder("<"), copy=False).tobytes()
        ds.PixelData = data + (b"\0" if len(data) % 2 else b"")
        ds["PixelData"].VR = "OW" if bits_allocated > 8 else "OB"
        ds["PixelData"].is_undefined_length = False
        ds.file_meta.TransferSyntaxUID = uids.UID(syntax)
        return syntax
    from pydicom.pixels import get_encoder

    plugins = get_encoder(uids.RLELossless).available_plugins
    plugin = "pylibjpeg" if "pylibjpeg" in plugins else ""  # pylibjpeg-rle's encoder, in Rust: fast
    try:
        ds.compress(uids.RLELossless, np.ascontiguousarray(shaped), encoding_plugin=plugin,
                    generate_instance_uid=False)
    except Exception as exc:  # noqa: BLE001 - the data was decoded: an encoder failure means no redaction
        raise CannotRedact(f"cannot re-encode the redacted pixels as RLE ({type(exc).__name__})") from None
    return str(uids.RLELossless)


def _flag(ds: Dataset, source: str, rule: PixelRuleConfig) -> None:
    """Burned In Annotation NO, the lossy flags kept truthful, 113101 in the method codes."""
    ds.BurnedInAnnotation = "NO"
    if source not in _LOSSLESS or str(ds.get("LossyImageCompression", "")).strip() == "01":
        ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds:
            method = next((m for group, m in _LOSSY_METHODS if source in {str(u) for u in group}), "")
            if method:
                ds.LossyImageCompressionMethod = method
    codes = ds.get("DeidentificationMethodCodeSequence")
    items = list(codes) if codes is not None else []
    if not any(str(item.get("CodeValue", "")) == CLEAN_PIXEL_CODE[0] for item in items):
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = CLEAN_PIXEL_CODE[0], "DCM", CLEAN_PIXEL_CODE[1]
        items.append(item)
    ds.DeidentificationMethodCodeSequence = DicomSequence(items)
    method = ds.get("DeidentificationMethod", "")
    methods = [str(m) for m in method] if not isinstance(method, str) else ([method] if method else [])
    note = f"Clean Pixel Data: rule {rule.name}"[:64]
    if note not in methods:
        ds.DeidentificationMethod = [*methods, note] if methods else note
