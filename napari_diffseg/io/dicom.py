"""Reader for (multi-frame) DICOM files, e.g. X-ray angiography cine runs."""

from __future__ import annotations

import logging
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from ._stack import rgb_stack_to_gray
from .core import Video, numbered_video
from .errors import ReadError, check_file, decode_errors

logger = logging.getLogger(__name__)

DICOM_MAGIC = b"DICM"
_MAGIC_OFFSET = 128
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

#: Technical, patient-free attributes copied into ``VideoMetadata.extra``.
EXTRA_KEYWORDS = (
    "Modality",
    "SOPClassUID",
    "Manufacturer",
    "ManufacturerModelName",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "FrameTime",
    "CineRate",
    "RecommendedDisplayFrameRate",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "WindowCenter",
    "WindowWidth",
    "RescaleIntercept",
    "RescaleSlope",
    "PositionerPrimaryAngle",
    "PositionerSecondaryAngle",
    "DistanceSourceToDetector",
    "DistanceSourceToPatient",
)


def has_dicom_magic(path: str | Path) -> bool:
    """True if the file has the ``DICM`` marker after the 128-byte preamble."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(_MAGIC_OFFSET + len(DICOM_MAGIC))
    except OSError:
        return False
    return head[_MAGIC_OFFSET:] == DICOM_MAGIC


def read_dicom(path: str | Path, *, keep_color: bool = False) -> Video:
    """Read a single- or multi-frame DICOM file into ``(T, H, W)`` frames.

    The native dtype is kept (uint8, uint16, ...); a single frame gives ``(1, H, W)``.
    MONOCHROME1 data is inverted in place to MONOCHROME2 (bright = high). RGB data is
    converted to grey unless ``keep_color`` (then ``(T, H, W, 3)``). ``fps`` comes from
    FrameTime, CineRate or RecommendedDisplayFrameRate, ``spacing`` from PixelSpacing or
    ImagerPixelSpacing.
    """
    path = check_file(path)
    ds = _read_header(path)
    if not any(keyword in ds for keyword in _PIXEL_KEYWORDS):
        raise ReadError(f"{path}: DICOM file has no pixel data", path=path)
    _check_decoder(path, ds)
    _check_pixel_size(path, ds)  # before anything is allocated from the header's word
    arr = _read_native(path, ds)
    if arr is None:
        with decode_errors(path, "DICOM pixel data"):
            arr = pixel_array(path)
    arr = _to_frames(path, ds, arr)
    extra = _extra(ds)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        arr = _invert_monochrome1(arr, ds)
        extra["monochrome1_inverted"] = True
    if arr.ndim == 4 and not keep_color:
        arr = rgb_stack_to_gray(arr)
    return numbered_video(arr, path, "dicom", fps=_fps(ds), spacing=_spacing(ds), extra=extra)


def _read_header(path: Path) -> pydicom.Dataset:
    try:
        ds = pydicom.dcmread(path, defer_size="256 KB")
    except InvalidDicomError as exc:
        raise ReadError(
            f"{path}: not a valid DICOM file (no 'DICM' marker after the 128-byte preamble)",
            path=path,
        ) from exc
    except Exception as exc:
        raise ReadError(
            f"{path}: could not be decoded as DICOM; the file may be truncated or corrupt "
            f"({type(exc).__name__}: {exc})",
            path=path,
        ) from exc
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        raise ReadError(
            f"{path}: could not be decoded as DICOM: the file meta information has no "
            "Transfer Syntax UID; the file may be truncated or corrupt",
            path=path,
        )
    return ds


def _check_decoder(path: Path, ds: pydicom.Dataset) -> None:
    """Raise a helpful :class:`ReadError` when no installed handler can decode the data."""
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise ReadError(
            f"{path}: pixel data uses transfer syntax {syntax.name} ({syntax}), which "
            "pydicom cannot decode",
            path=path,
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise ReadError(
            f"{path}: pixel data is compressed ({syntax.name}) and no pixel-data handler for "
            f"it is installed. Install one of: {missing}",
            path=path,
        )


def _header_int(path: Path, ds: pydicom.Dataset, keyword: str, default: int | None = None
                ) -> int:
    value = ds.get(keyword, default)
    try:
        number = int(value if value not in (None, "") else default)
    except (TypeError, ValueError) as exc:
        raise ReadError(f"{path}: header field {keyword} is {value!r}, not a whole number; "
                        "the file is corrupt", path=path) from exc
    if number < 1:
        raise ReadError(f"{path}: header field {keyword} is {number}; it must be at least 1, "
                        "the file is corrupt", path=path)
    return number


def _check_pixel_size(path: Path, ds: pydicom.Dataset) -> None:
    """Refuse a header whose Rows x Columns x NumberOfFrames x SamplesPerPixel x
    BitsAllocated claims more pixel data than the file can hold, before anything is
    allocated: uncompressed, the claim must fit in the bytes after the Pixel Data tag;
    compressed, every frame needs a fragment of its own and the claim may exceed the
    compressed bytes at most :data:`MAX_COMPRESSION` times. Raises ReadError naming the file
    and the field."""
    if "PixelData" not in ds:
        return  # float pixel data: left to pydicom
    rows = _header_int(path, ds, "Rows")
    cols = _header_int(path, ds, "Columns")
    frames = _header_int(path, ds, "NumberOfFrames", 1)
    samples = _header_int(path, ds, "SamplesPerPixel", 1)
    bits = _header_int(path, ds, "BitsAllocated")
    frame_bytes = (rows * cols * samples * bits + 7) // 8
    claimed = frame_bytes * frames
    element = ds.get_item("PixelData", keep_deferred=True)
    size = path.stat().st_size
    start = getattr(element, "value_tell", None)
    available = size - start if isinstance(start, int) else size
    syntax = ds.file_meta.TransferSyntaxUID
    bad = f"{path}: could not be decoded as DICOM: header field"
    where = (f"{frames} frame(s) of {rows} x {cols} x {samples} sample(s) x {bits} bits = "
             f"{claimed} bytes")
    if not syntax.is_encapsulated:
        if claimed <= available:
            return
        field = ("NumberOfFrames" if frames > 1 and frame_bytes <= available
                 else "Rows x Columns x BitsAllocated")
        raise ReadError(f"{bad} {field} does not fit the file: it claims {where} "
                        f"of pixel data but only {max(available, 0)} bytes follow; the header "
                        "is corrupt or the file truncated", path=path)
    fragments, compressed = _count_fragments(path, start, size)
    if fragments is not None and frames > fragments:
        raise ReadError(f"{bad} NumberOfFrames ({frames}) exceeds the "
                        f"{fragments} compressed fragment(s) in the file; the header is corrupt "
                        "or the file truncated", path=path)
    ratio = MAX_COMPRESSION.get(str(syntax), MAX_COMPRESSION["*"])
    if claimed > max(compressed if compressed is not None else available, 1) * ratio:
        field = "NumberOfFrames" if frames > 1 and frame_bytes * ratio <= available else (
            "Rows x Columns x BitsAllocated")
        raise ReadError(f"{bad} {field} does not fit the file: it claims {where} "
                        f"of pixel data, more than {ratio} times the "
                        f"{compressed or available} compressed bytes that follow "
                        f"({syntax.name}); the header is corrupt", path=path)


#: How many times its compressed size a frame may decode to: RLE's longest run is 128 bytes in
#: 2; JPEG 2000 and JPEG-LS code a blank 16-bit 1024 x 1024 frame in ~150 bytes (14 000:1).
MAX_COMPRESSION = {str(RLELossless): 130, "*": 1 << 16}


def _count_fragments(path: Path, start: int | None, size: int) -> tuple[int | None, int | None]:
    """(fragments, bytes in them) of encapsulated pixel data at ``start`` by walking the item
    headers (8 bytes each) without reading the data; (None, None) if it cannot be walked."""
    if not isinstance(start, int):
        return None, None
    count = total = 0
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            first = True
            while True:
                head = handle.read(8)
                if len(head) < 8:
                    break
                group, element, length = struct.unpack("<HHI", head)
                if (group, element) == (0xFFFE, 0xE0DD):  # sequence delimiter
                    break
                if (group, element) != (0xFFFE, 0xE000) or length == 0xFFFFFFFF:
                    return None, None
                if not first:  # the first item is the Basic Offset Table
                    count += 1
                    total += min(length, size - handle.tell())
                first = False
                handle.seek(length, 1)
    except OSError:
        return None, None
    return count, total


def _read_native(path: Path, ds: pydicom.Dataset) -> np.ndarray | None:
    """Read uncompressed little-endian pixel data straight from the file into its array.

    pydicom would first hold the raw bytes and then copy them into a writeable array
    (twice the memory of a long cine run). Returns ``None`` for anything unusual
    (compressed, big-endian, bit-packed, planar, YBR, sign-extended data), which is
    left to pydicom.
    """
    syntax = ds.file_meta.TransferSyntaxUID
    element = ds.get_item("PixelData", keep_deferred=True) if "PixelData" in ds else None
    try:
        bits = int(ds.BitsAllocated)
        stored = int(ds.get("BitsStored", bits))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        samples = int(ds.get("SamplesPerPixel", 1))
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
        rows, cols = int(ds.Rows), int(ds.Columns)
        planar = int(ds.get("PlanarConfiguration", 0) or 0)
        photometric = str(ds.get("PhotometricInterpretation", ""))
    except (AttributeError, TypeError, ValueError):
        return None
    if (
        syntax not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        or not isinstance(element, RawDataElement)
        or element.length == 0xFFFFFFFF
        or bits not in (8, 16, 32)
        or (signed and stored != bits)
        or not (samples == 1 or (samples == 3 and planar == 0 and photometric == "RGB"))
        or min(n_frames, rows, cols) <= 0
    ):
        return None
    shape = (n_frames, rows, cols) + ((samples,) if samples > 1 else ())
    arr = np.empty(shape, dtype=np.dtype(f"<{'i' if signed else 'u'}{bits // 8}"))
    with decode_errors(path, "DICOM pixel data"), open(path, "rb") as handle:
        handle.seek(element.value_tell)
        got = handle.readinto(memoryview(arr).cast("B"))
    if got < arr.nbytes or element.length < arr.nbytes:
        raise ReadError(
            f"{path}: could not be decoded as DICOM pixel data; expected {arr.nbytes} bytes "
            f"for {shape} but the file holds {min(got, element.length)}, it is truncated",
            path=path,
        )
    if not signed and stored < bits:
        np.bitwise_and(arr, (1 << stored) - 1, out=arr)  # as pydicom: drop bits above stored
    return arr


def _to_frames(path: Path, ds: pydicom.Dataset, arr: np.ndarray) -> np.ndarray:
    """Reshape the decoded array to ``(T, H, W)`` or ``(T, H, W, 3)`` (a view)."""
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    frame_ndim = 2 if samples == 1 else 3
    if arr.ndim == frame_ndim:
        arr = arr[np.newaxis]
    if arr.ndim != frame_ndim + 1 or (samples > 1 and arr.shape[-1] != 3):
        raise ReadError(
            f"{path}: unsupported DICOM pixel layout {arr.shape} with SamplesPerPixel "
            f"{samples}; expected grey or RGB frames",
            path=path,
        )
    return arr


def _invert_monochrome1(arr: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """Invert MONOCHROME1 to MONOCHROME2 in place (copying only a read-only array)."""
    if not arr.flags.writeable:
        arr = arr.copy()
    if arr.dtype.kind == "f":
        np.subtract(arr.max() + arr.min(), arr, out=arr)
    elif int(ds.get("PixelRepresentation", 0) or 0) == 1 or arr.dtype.kind == "i":
        np.invert(arr, out=arr)  # -1 - x maps the signed range onto itself, reversed
    else:
        bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8) or arr.dtype.itemsize * 8)
        maxval = min(2**bits - 1, int(np.iinfo(arr.dtype).max))
        if maxval < np.iinfo(arr.dtype).max:
            np.minimum(arr, maxval, out=arr)  # ignore stray bits above BitsStored
        np.subtract(maxval, arr, out=arr)
    return arr


def _fps(ds: pydicom.Dataset) -> float | None:
    frame_time = _number(ds.get("FrameTime"))
    if frame_time:
        return 1000.0 / frame_time
    for keyword in ("CineRate", "RecommendedDisplayFrameRate"):
        rate = _number(ds.get(keyword))
        if rate:
            return rate
    return None


def _spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is None:
            continue
        try:
            row, col = (float(v) for v in value)
        except (TypeError, ValueError):
            logger.warning("ignoring malformed %s %r", keyword, value)
            continue
        if row > 0 and col > 0:
            return (row, col)
    return None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _extra(ds: pydicom.Dataset) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None:
        extra["TransferSyntaxUID"] = str(syntax)
    for keyword in EXTRA_KEYWORDS:
        if keyword in ds:
            value = _jsonable(ds[keyword].value)
            if value is not None:
                extra[keyword] = value
    return extra


def _jsonable(value: Any) -> Any:
    """Convert DICOM element values (DS, IS, UID, MultiValue) to JSON types."""
    if isinstance(value, (bytes, bytearray)):
        return None
    if isinstance(value, (list, tuple, MultiValue)):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    return str(value)
