"""Generated images with text drawn into their pixels (Pillow), for the burned-in text tests.

US, SC and XA instances, single- or multi-frame, MONOCHROME2, RGB, YBR_FULL (native) and
YBR_FULL_422 (JPEG baseline, encoded by Pillow), with the header of a generated study (patient,
study, series) so they go through ingest and de-identification like scanner data.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    ExplicitVRLittleEndian, JPEGBaseline8Bit, MultiFrameTrueColorSecondaryCaptureImageStorage,
    SecondaryCaptureImageStorage, UltrasoundImageStorage, UltrasoundMultiFrameImageStorage, XRayAngiographicImageStorage,
    generate_uid,
)

from dicomd.testing.generator import generate_study

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
ROWS, COLUMNS = 240, 320
# the header band and the corner label a scanner would burn in; the rules blank these
HEADER = (0, 0, 320, 40)
CORNER = (200, 200, 120, 40)
HEADER_TEXT = "DOE JOHN 123456"
CORNER_TEXT = "ACC 7788"
SOP_CLASSES = {
    ("US", False): UltrasoundImageStorage, ("US", True): UltrasoundMultiFrameImageStorage,
    ("SC", False): SecondaryCaptureImageStorage, ("SC", True): MultiFrameTrueColorSecondaryCaptureImageStorage,
    ("XA", False): XRayAngiographicImageStorage, ("XA", True): XRayAngiographicImageStorage,
}


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.truetype(str(FONT), size) if FONT.exists() else ImageFont.load_default(size)


def picture(frame: int = 0, *, colour: bool, header: str = HEADER_TEXT, corner: str = CORNER_TEXT) -> np.ndarray:
    """A dark 'anatomy' gradient with white text in the header band and the corner label."""
    yy, xx = np.mgrid[0:ROWS, 0:COLUMNS]
    blob = (80 * np.exp(-(((xx - 150 - 10 * frame) / 70.0) ** 2 + ((yy - 130) / 50.0) ** 2))).astype(np.uint8)
    rgb = np.stack([blob + 20, blob + 10 * (frame + 1), blob // 2 + 30], axis=-1).astype(np.uint8)
    image = Image.fromarray(rgb if colour else rgb[..., 0], "RGB" if colour else "L")
    draw = ImageDraw.Draw(image)
    fill = (255, 255, 255) if colour else 255
    if header:
        draw.text((8, 6), header, fill=fill, font=font(26))
    if corner:
        draw.text((206, 206), corner, fill=fill, font=font(22))
    return np.asarray(image)


def make_instance(modality: str = "US", *, photometric: str = "MONOCHROME2", frames: int = 1, jpeg: bool = False,
                  seed: int = 0, model: str = "Sono 5", series: int = 1, number: int = 1,
                  bits16: bool = False, base: Dataset | None = None) -> Dataset:
    """One instance; ``base`` (a generated MR instance) gives the patient and study."""
    ds = copy.deepcopy(base) if base is not None else generate_study(seed, series=1, instances_per_series=1)[0]
    for keyword in ("RescaleIntercept", "RescaleSlope", "RescaleType", "WindowCenter", "WindowWidth",
                    "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness"):
        if keyword in ds:
            delattr(ds, keyword)
    multi = frames > 1
    ds.SOPClassUID = SOP_CLASSES[(modality, multi)]
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[str(seed), modality, photometric, str(frames), str(jpeg),
                                                   str(series), str(number)])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[str(seed), modality, "series", str(series)])
    ds.SeriesNumber, ds.InstanceNumber = series, number
    ds.Modality = modality
    ds.Manufacturer, ds.ManufacturerModelName = "ACME Imaging", model
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    colour = photometric != "MONOCHROME2"
    arrays = [picture(f, colour=colour) for f in range(frames)]
    data = np.stack(arrays)
    ds.Rows, ds.Columns = ROWS, COLUMNS
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PixelRepresentation = 0
    if multi:
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = 0x00181063
        ds.FrameTime = 33.3
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = (16, 10, 9) if bits16 else (8, 8, 7)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if jpeg:
        ds.PhotometricInterpretation = "YBR_FULL_422" if colour else "MONOCHROME2"
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate([_jpeg(a, colour) for a in arrays])
        ds["PixelData"].VR = "OB"
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = 8.5
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        return ds
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    if bits16:
        data = data.astype(np.uint16) * 4  # 10 bits stored
        data[:, 100:110, 100:110] |= 1 << 12  # an overlay plane drawn in a high bit
    if photometric == "YBR_FULL":
        data = convert_color_space(data, "RGB", "YBR_FULL")
    ds.PhotometricInterpretation = photometric
    ds.PixelData = np.ascontiguousarray(data).tobytes()
    ds["PixelData"].VR = "OW" if bits16 else "OB"
    return ds


def _jpeg(arr: np.ndarray, colour: bool) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB" if colour else "L").save(buf, format="JPEG", quality=95,
                                                        **({"subsampling": 1} if colour else {}))
    return buf.getvalue()


def write(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
