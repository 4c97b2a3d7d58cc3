"""dicomd.anonymize.encode writes exactly pydicom's bytes (``save_as(enforce_file_format=False)``):
every file pydicom bundles and the de-identification corpus, as read, with a fresh group 0002,
and de-identified (decoded, emptied, removed and added elements, sequences at any depth)."""

from __future__ import annotations

import copy
import hashlib
import io
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset

from dicomd.anonymize import Anonymizer, Labels, PseudonymStore
from dicomd.anonymize.encode import write_file
from dicomd.anonymize.filemeta import fresh_file_meta
from dicomd.config import AnonymizeConfig

from ..deid.corpus import build


def _pydicom_files() -> list[Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [Path(p) for p in sorted(get_testdata_files()) if Path(p).is_file()]


def _pydicom_bytes(ds: Dataset) -> bytes | str:
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=False)
    except Exception as exc:  # noqa: BLE001 - the same refusal is expected from write_file
        return type(exc).__name__
    return buffer.getvalue()


def _our_bytes(ds: Dataset) -> bytes | str:
    buffer = io.BytesIO()
    try:
        digest, size = write_file(ds, buffer)
    except Exception as exc:  # noqa: BLE001
        return type(exc).__name__
    data = buffer.getvalue()
    assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data))
    return data


def _states(ds: Dataset, anonymizers: list[Anonymizer]) -> list[tuple[str, Dataset]]:
    out = [("as read", ds)]
    fresh = copy.deepcopy(ds)
    try:
        fresh_file_meta(fresh)
    except Exception:  # noqa: BLE001 - no SOP UIDs or transfer syntax to speak of
        pass
    else:
        out.append(("fresh group 0002", fresh))
    for i, anonymizer in enumerate(anonymizers):
        done = copy.deepcopy(ds)
        try:
            anonymizer.apply(done, Labels("P", "S", "E"))
        except Exception:  # noqa: BLE001 - a file the profile cannot take is not this test's
            continue
        out.append((f"de-identified ({i})", done))
    return out


@pytest.fixture(scope="module")
def anonymizers(tmp_path_factory: pytest.TempPathFactory) -> list[Anonymizer]:
    store = PseudonymStore(tmp_path_factory.mktemp("keys") / "pseudonyms.sqlite")
    options = ("retain_safe_private", "retain_long_modified_dates", "clean_structured_content", "clean_graphics",
               "clean_descriptors")
    return [Anonymizer("P", AnonymizeConfig(enabled=True), store),
            Anonymizer("P", AnonymizeConfig(enabled=True, options=options), store)]


def test_same_bytes_as_pydicom(tmp_path: Path, anonymizers: list[Anonymizer]) -> None:
    files = [path for path, _ in build(tmp_path / "deid")] + _pydicom_files()
    compared = written = 0
    for path in files:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path, force=True)
            except Exception:  # noqa: BLE001 - not DICOM at all
                continue
            for state, item in _states(ds, anonymizers):
                expected = _pydicom_bytes(copy.deepcopy(item))
                assert _our_bytes(copy.deepcopy(item)) == expected, f"{path.name}, {state}"
                compared += 1
                written += isinstance(expected, bytes)
    assert compared > 400 and written > 390  # the corpus did not shrink to nothing


def test_pixel_data_is_written_as_read(tmp_path: Path) -> None:
    """The raw pixel data goes to the file as the object read from the prearchive (not copied)."""
    ds = pydicom.dcmread(_pydicom_files()[0].parent / "MR_small.dcm")
    fresh_file_meta(ds)
    pixels = ds.get_item("PixelData").value
    seen: list[bytes] = []

    class Out(io.BytesIO):
        def write(self, data: bytes) -> int:  # type: ignore[override]
            seen.append(data)
            return super().write(data)

    write_file(ds, Out())
    assert any(part is pixels for part in seen)
