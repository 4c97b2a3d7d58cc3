"""The optional OCR check: Tesseract (Debian's `tesseract-ocr`, through pytesseract) reads one frame.

OCR is off when the `tesseract` binary (or pytesseract) is missing: `availability()` says why, for
`dicomd status`. What Tesseract reads is patient data: the words are logged at DEBUG only and never
leave this module; callers get counts and boxes in pixel coordinates.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where pixels are read: a receiver process never loads NumPy or Pillow
    import numpy as np
    from PIL import Image

logger = logging.getLogger(__name__)

INSTALL_HINT = "apt-get install tesseract-ocr tesseract-ocr-eng"


@dataclass(frozen=True)
class Availability:
    available: bool
    engine: str  # "tesseract 5.3.0", or why not


@dataclass(frozen=True)
class TextBox:
    """A word Tesseract read: where (pixels, from the top left corner) and how many characters."""

    x: int
    y: int
    width: int
    height: int
    characters: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.width, self.height


class OcrFailed(Exception):
    """Tesseract could not read the frame (timeout, crash, undecodable pixels); PHI-free message."""


def availability() -> Availability:
    """Whether OCR can run here, and with what (or the reason it cannot)."""
    if shutil.which("tesseract") is None:
        return Availability(False, f"off: the tesseract binary is not installed ({INSTALL_HINT})")
    try:
        import pytesseract
    except ImportError:
        return Availability(False, "off: the pytesseract package is not installed")
    try:
        version = pytesseract.get_tesseract_version()
    except Exception as exc:  # noqa: BLE001 - a broken binary is 'off', with the reason
        return Availability(False, f"off: tesseract does not run ({type(exc).__name__})")
    return Availability(True, f"tesseract {version}")


def frame_image(path: Path, index: int = 0) -> Image.Image:
    """Frame ``index`` of an instance as an 8-bit grey image with dark text on a light ground."""
    from pydicom.dataset import Dataset
    from pydicom.pixels import pixel_array

    header = Dataset()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            frames = _frames(path)
            arr = pixel_array(str(path), index=index if frames > 1 else None, ds_out=header)
    except Exception as exc:  # noqa: BLE001 - undecodable pixels: no OCR for this series
        raise OcrFailed(f"the pixel data cannot be decoded ({type(exc).__name__})") from None
    return to_grey(arr, str(header.get("PhotometricInterpretation", "MONOCHROME2")))


def _frames(path: Path) -> int:
    import pydicom

    header = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    return int(header.get("NumberOfFrames") or 1)


def to_grey(arr: np.ndarray, photometric: str) -> Image.Image:
    """A decoded frame (rows x columns [x 3]) as 8-bit grey, light ground (Tesseract reads dark text best)."""
    import numpy as np
    from PIL import Image

    if arr.ndim == 3:
        grey = Image.fromarray(arr.astype(np.uint8) if arr.dtype != np.uint8 else arr).convert("L")
        values = np.asarray(grey, dtype=np.float64)
    else:
        values = arr.astype(np.float64)
        low, high = float(values.min()), float(values.max())
        values = (values - low) * (255.0 / ((high - low) or 1.0))
        if photometric == "MONOCHROME1":
            values = 255.0 - values
    if values.mean() < 128:
        values = 255.0 - values
    return Image.fromarray(values.clip(0, 255).astype(np.uint8), mode="L")


def find_text(image: Image.Image, *, timeout: float = 20.0, min_confidence: int = 50) -> list[TextBox]:
    """The words Tesseract reads in ``image`` (sparse text: labels anywhere on the frame)."""
    import pytesseract

    try:
        data = pytesseract.image_to_data(image, output_type=pytesseract.Output.DICT, config="--psm 11",
                                         timeout=timeout)
    except RuntimeError as exc:  # pytesseract's timeout
        raise OcrFailed(f"tesseract did not finish in {timeout:g} s") from exc
    except Exception as exc:  # noqa: BLE001 - a crashed tesseract: no OCR for this frame
        raise OcrFailed(f"tesseract failed ({type(exc).__name__})") from None
    boxes: list[TextBox] = []
    for text, conf, x, y, w, h in zip(data["text"], data["conf"], data["left"], data["top"], data["width"],
                                      data["height"]):
        word = str(text).strip()
        if not word or not any(c.isalnum() for c in word) or float(conf) < min_confidence:
            continue
        logger.debug("ocr read %r at %d,%d %dx%d (confidence %s)", word, x, y, w, h, conf)  # PHI: DEBUG only
        boxes.append(TextBox(int(x), int(y), int(w), int(h), len(word)))
    return boxes
