"""Clean Pixel Data on generated US, SC and XA images with text in their pixels: exactly the rule's
rectangles are blanked in every frame, everything else is the decoded source sample for sample;
transfer syntax, lossy flags and Photometric Interpretation tell the truth."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless

from dicomd.config import PixelMatchConfig, PixelRuleConfig
from dicomd.pixels.redact import CannotRedact, blank_value, redact
from tests.pixels.images import CORNER, HEADER, make_instance, write

RULE = PixelRuleConfig("acme-sono5", PixelMatchConfig(ManufacturerModelName="Sono 5"), (HEADER, CORNER))

CASES = [
    pytest.param(dict(modality="US"), id="US-mono-1frame"),
    pytest.param(dict(modality="US", photometric="RGB", frames=3), id="US-rgb-3frames"),
    pytest.param(dict(modality="US", photometric="YBR_FULL"), id="US-ybr_full-native"),
    pytest.param(dict(modality="US", photometric="RGB", frames=2, jpeg=True), id="US-ybr_full_422-jpeg-2frames"),
    pytest.param(dict(modality="SC", photometric="RGB"), id="SC-rgb"),
    pytest.param(dict(modality="SC", jpeg=True), id="SC-mono-jpeg"),
    pytest.param(dict(modality="XA", frames=2, bits16=True), id="XA-mono16-overlay-2frames"),
    pytest.param(dict(modality="XA", frames=3, jpeg=True), id="XA-mono-jpeg-3frames"),
]


def frames_of(ds: pydicom.Dataset, *, as_rgb: bool = True) -> np.ndarray:
    arr, _meta = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, as_rgb=as_rgb)
    return arr.reshape(-1, int(ds.Rows), int(ds.Columns), int(ds.SamplesPerPixel))


def mask(ds: pydicom.Dataset) -> np.ndarray:
    inside = np.zeros((int(ds.Rows), int(ds.Columns)), dtype=bool)
    for x, y, w, h in RULE.rectangles:
        inside[y:y + h, x:x + w] = True
    return inside


@pytest.mark.parametrize("kwargs", CASES)
def test_a_rule_blanks_exactly_its_rectangles_in_every_frame(tmp_path, kwargs):
    # Given an instance with text in its pixels, written and read back as a scanner would send it
    source = pydicom.dcmread(write(make_instance(**kwargs), tmp_path / "in.dcm"))
    before = frames_of(source)
    was_compressed = source.file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    # When the rule runs and the result is written
    done = redact(source, RULE)
    write(source, tmp_path / "out.dcm")
    out = pydicom.dcmread(tmp_path / "out.dcm")
    after = frames_of(out)
    # Then every frame is the source outside the rectangles, and black inside them
    inside = mask(out)
    assert after.shape == before.shape and done.frames == before.shape[0]
    bits = int(out.BitsStored)
    overlay_free = before & ((1 << bits) - 1) if out.BitsAllocated > 8 else before
    for n in range(before.shape[0]):
        assert np.array_equal(after[n][~inside], overlay_free[n][~inside]), f"frame {n} changed outside the rectangles"
    raw = frames_of(out, as_rgb=False)
    black = np.asarray(blank_value(str(out.PhotometricInterpretation), bits, False)[: raw.shape[-1]])
    assert (raw[:, inside] == black).all(), "a rectangle is not blanked in every frame"
    # and the header tells the truth
    assert out.BurnedInAnnotation == "NO"
    assert "113101" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    if was_compressed:
        assert out.file_meta.TransferSyntaxUID == RLELossless
        assert out.LossyImageCompression == "01"  # it was lossy once: it stays flagged lossy
        assert out.LossyImageCompressionMethod == "ISO_10918_1" and float(out.LossyImageCompressionRatio) == 8.5
        if out.SamplesPerPixel == 3:
            assert out.PhotometricInterpretation == "RGB"  # decoded from YBR_FULL_422
    else:
        assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert "LossyImageCompression" not in out
        assert out.PhotometricInterpretation == source.PhotometricInterpretation


def test_overlay_bits_in_the_high_bits_are_cleared(tmp_path):
    source = pydicom.dcmread(write(make_instance("XA", frames=2, bits16=True), tmp_path / "in.dcm"))
    stored = np.frombuffer(source.PixelData, dtype="<u2")
    assert (stored >> 10).any()  # the generator drew an overlay plane in bit 12 of the stored words
    redact(source, RULE)
    assert not (np.frombuffer(source.PixelData, dtype="<u2") >> 10).any()


def test_a_document_cannot_be_redacted():
    ds = make_instance("SC")
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF
    with pytest.raises(CannotRedact, match="document"):
        redact(ds, RULE)
