"""Size fields in headers are checked against the file's real length before anything is
allocated: a hand-crafted file that claims terabytes is refused at once with a message naming
the file and the field (not a MemoryError, not minutes of swapping)."""

from __future__ import annotations

import json
import resource
import struct

import numpy as np
import pydicom
import pytest
import tifffile
from pydicom.encaps import encapsulate
from pydicom.uid import JPEG2000Lossless, RLELossless

from napari_diffseg.io import ReadError, read


@pytest.fixture(autouse=True)
def _limit_memory():
    """A reader that believes the header allocates more than 2 GB and fails differently."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (min(hard, 8 << 30) if hard > 0 else 8 << 30, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _hostile_dicom(make_dicom, name, **header):
    path, _ = make_dicom(name, n_frames=2)
    ds = pydicom.dcmread(path)
    for key, value in header.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("header, field", [
    ({"NumberOfFrames": 2_000_000_000}, "NumberOfFrames"),
    ({"Rows": 65535, "Columns": 65535}, "Rows x Columns x BitsAllocated"),
    ({"NumberOfFrames": 3}, "NumberOfFrames"),  # one frame too many: truncated, not absurd
])
def test_uncompressed_dicom_claiming_more_than_the_file(make_dicom, header, field):
    path = _hostile_dicom(make_dicom, "claims.dcm", **header)

    with pytest.raises(ReadError) as info:
        read(path)

    message = str(info.value)
    assert message.startswith(f"{path}: could not be decoded as DICOM: header field {field} "
                              "does not fit the file"), message


@pytest.mark.parametrize("header, field", [
    ({"NumberOfFrames": 1_000_000}, "NumberOfFrames"),
    ({"Rows": 65535, "Columns": 65535}, "Rows x Columns x BitsAllocated"),
])
@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "jpeg2000"])
def test_compressed_dicom_claiming_more_than_the_file(make_dicom, header, field, syntax):
    path, source = make_dicom("packed.dcm", n_frames=2)
    ds = pydicom.dcmread(path)
    ds.compress(syntax, source)
    for key, value in header.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)

    with pytest.raises(ReadError, match=rf"packed\.dcm: .*header field {field} ") as info:
        read(path)
    assert "MemoryError" not in str(info.value)


def test_compressed_dicom_with_more_frames_than_fragments(make_dicom):
    path, _ = make_dicom("frames.dcm", n_frames=2)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([struct.pack("<16I", 0, *([0] * 15)) + b"\x00" * 8] * 2)
    ds.NumberOfFrames = 40
    ds.save_as(path, enforce_file_format=True)

    with pytest.raises(ReadError, match=r"frames\.dcm: .*header field NumberOfFrames \(40\) "
                       r"exceeds the 2 compressed fragment"):
        read(path)


def test_tiff_whose_shape_metadata_claims_a_billion_pages(tmp_path):
    path = tmp_path / "pages.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint16), metadata=None,
                     description=json.dumps({"shape": [100_000_000, 64, 64]}))

    with pytest.raises(ReadError) as info:
        read(path)

    message = str(info.value)
    assert message.startswith(f"{path}: ") and "pages" in message and "100000000" in message
    assert "the file holds 1 page" in message


def test_tiff_page_claiming_more_pixels_than_its_strips(tmp_path):
    """ImageWidth x ImageLength rewritten to 60000 x 60000 in an uncompressed page."""
    path = tmp_path / "page.tif"
    tifffile.imwrite(path, np.zeros((2, 64, 64), np.uint8), photometric="minisblack")
    data = bytearray(path.read_bytes())
    with tifffile.TiffFile(path) as tif:
        for page in tif.pages:
            for tag in ("ImageWidth", "ImageLength"):
                t = page.tags[tag]
                fmt = "<H" if t.dtype == 3 else "<I"
                struct.pack_into(fmt, data, t.valueoffset, 60000)
    path.write_bytes(bytes(data))

    with pytest.raises(ReadError) as info:
        read(path)

    message = str(info.value)
    assert message.startswith(f"{path}: ") and "ImageWidth x ImageLength" in message


def _avi_claiming(tmp_path, frames_claimed: int):
    """A real 5-frame FFV1 AVI whose avih/strh headers claim `frames_claimed` frames."""
    import imageio.v3 as iio

    path = tmp_path / "claims.avi"
    iio.imwrite(path, np.zeros((5, 32, 32, 3), np.uint8), plugin="pyav", codec="ffv1", fps=10)
    data = bytearray(path.read_bytes())
    avih, strh = data.find(b"avih"), data.find(b"strh")
    struct.pack_into("<I", data, avih + 8 + 16, frames_claimed)  # dwTotalFrames
    struct.pack_into("<I", data, strh + 8 + 32, frames_claimed)  # dwLength
    path.write_bytes(bytes(data))
    return path


def test_video_whose_header_claims_more_frames_than_bytes(tmp_path):
    path = _avi_claiming(tmp_path, 2_000_000_000)

    with pytest.raises(ReadError) as info:
        read(path)

    message = str(info.value)
    assert message.startswith(f"{path}: could not be decoded as video: its header's frame "
                              "count (2000000000 frames) exceeds"), message


def test_video_frame_count_is_only_a_hint(tmp_path, monkeypatch):
    """A plausible but false count preallocates no more than 64 x the file; the real frames
    come out."""
    from napari_diffseg.io import _stack

    path = _avi_claiming(tmp_path, 1000)
    sizes = []
    real_empty = np.empty

    def recording_empty(shape, *args, **kwargs):
        sizes.append(int(np.prod(shape)))
        return real_empty(shape, *args, **kwargs)

    monkeypatch.setattr(_stack.np, "empty", recording_empty)

    video = read(path)

    assert video.frames.shape == (5, 32, 32)
    assert max(sizes) <= 64 * path.stat().st_size
