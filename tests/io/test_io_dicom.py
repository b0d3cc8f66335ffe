"""Multi-frame DICOM written with pydicom."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import ImplicitVRLittleEndian, JPEGLSLossless, RLELossless
from testutils import H, W

from napari_diffseg.io import ReadError, detect_format, read


@pytest.mark.parametrize("name", ["cine.dcm", "IM000001", "run.DICOM"])
@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_read_multiframe_dicom(make_dicom, name, bits, photometric):
    path, stored = make_dicom(name, bits=bits, photometric=photometric)

    video = read(path)

    assert detect_format(path) == "dicom"
    assert video.meta.source_format == "dicom"
    assert video.frames.shape == (4, H, W)
    assert video.frames.dtype == (np.uint16 if bits == 16 else np.uint8)
    if photometric == "MONOCHROME1":
        max_value = 2**12 - 1 if bits == 16 else 255
        np.testing.assert_array_equal(video.frames, max_value - stored)
        assert video.meta.extra["monochrome1_inverted"] is True
    else:
        np.testing.assert_array_equal(video.frames, stored)
    assert video.meta.fps == pytest.approx(1000 / 66.7)
    assert video.meta.spacing == pytest.approx((0.2, 0.3))
    assert video.meta.frame_names == ["00000", "00001", "00002", "00003"]


def test_dicom_extra_is_json_and_patient_free(make_dicom):
    path, _ = make_dicom()

    extra = read(path).meta.extra

    text = json.dumps(extra)
    assert extra["Modality"] == "XA"
    assert extra["NumberOfFrames"] == 4 and extra["BitsStored"] == 12
    assert extra["PhotometricInterpretation"] == "MONOCHROME2"
    assert "Doe" not in text and "SECRET-123" not in text


def test_single_frame_dicom_gets_time_axis(make_dicom):
    path, stored = make_dicom("single.dcm", n_frames=1)

    video = read(path)

    assert video.frames.shape == (1, H, W)
    np.testing.assert_array_equal(video.frames[0], stored[0])


@pytest.mark.parametrize(
    ("attributes", "fps", "spacing"),
    [
        ({"CineRate": 12}, 12.0, (0.2, 0.3)),
        ({"RecommendedDisplayFrameRate": 7}, 7.0, (0.2, 0.3)),
        ({"CineRate": 12, "PixelSpacing": [0.5, 0.25]}, 12.0, (0.5, 0.25)),
        ({}, None, (0.2, 0.3)),
    ],
)
def test_dicom_fps_and_spacing_fallbacks(make_dicom, attributes, fps, spacing):
    path, _ = make_dicom(frame_time=None, **attributes)

    meta = read(path).meta

    assert meta.fps == (pytest.approx(fps) if fps else None)
    assert meta.spacing == pytest.approx(spacing)


def test_rgb_dicom_gray_and_keep_color(make_dicom):
    path, stored = make_dicom("rgb.dcm", bits=8, samples=3)

    gray = read(path)
    colour = read(path, keep_color=True)

    assert gray.frames.shape == (4, H, W) and gray.frames.dtype == np.uint8
    expected = np.rint(stored @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    np.testing.assert_array_equal(gray.frames, expected)
    np.testing.assert_array_equal(colour.frames, stored)


def test_dicom_without_pixel_data(make_dicom):
    path, _ = make_dicom("nopix.dcm", pixels=False)

    with pytest.raises(ReadError, match="no pixel data") as info:
        read(path)
    assert "nopix.dcm" in str(info.value)


@pytest.mark.skipif(
    get_decoder(JPEGLSLossless).is_available, reason="a JPEG-LS handler is installed"
)
def test_compressed_dicom_without_handler(make_dicom):
    path, _ = make_dicom("jpegls.dcm")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xf7 not really jpeg-ls"] * 4)
    ds.save_as(path, enforce_file_format=True)

    with pytest.raises(ReadError, match="handler") as info:
        read(path)
    assert "jpegls.dcm" in str(info.value)
    assert "JPEG-LS" in str(info.value)


def _rewrite(path, **changes):
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    return ds


def test_large_dicom_matches_pydicom(tmp_path, make_dicom):
    """Big enough for pydicom to defer reading the pixel data: our direct read must agree."""
    path, _ = make_dicom("big.dcm", n_frames=4)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 2**16, (4, 256, 256), dtype=np.uint16)  # stray bits above 12
    ds = _rewrite(path, Rows=256, Columns=256, PixelData=pixels.tobytes())
    ds.save_as(path, enforce_file_format=True)

    frames = read(path).frames

    np.testing.assert_array_equal(frames, pydicom.dcmread(path).pixel_array)
    np.testing.assert_array_equal(frames, pixels & 0x0FFF)


def test_large_uint16_cine_is_neither_widened_nor_copied(tmp_path, make_dicom):
    """A 1024x1024x120 uint16 MONOCHROME1 cine (240 MB) is read as uint16 and inverted in
    place: the reader's peak allocation stays close to the frames themselves."""
    import tracemalloc

    path, _ = make_dicom("cine1024.dcm", n_frames=1, photometric="MONOCHROME1")
    t, h, w = 120, 1024, 1024
    pixels = np.zeros((t, h, w), dtype=np.uint16)
    pixels[:, 500:520, :] = 4095
    ds = _rewrite(path, Rows=h, Columns=w, NumberOfFrames=t, PixelData=pixels.tobytes())
    ds.save_as(path, enforce_file_format=True)
    del ds, pixels

    tracemalloc.start()
    try:
        frames = read(path).frames
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert frames.dtype == np.uint16 and frames.shape == (t, h, w)
    assert frames[0, 510, 0] == 0 and frames[-1, 0, 0] == 4095  # MONOCHROME1 inverted
    assert peak < 1.2 * frames.nbytes, f"peak {peak / 1e6:.0f} MB for {frames.nbytes / 1e6:.0f} MB"


@pytest.mark.parametrize("variant", ["rle", "implicit", "signed"])
def test_dicom_variants_match_pydicom(make_dicom, variant):
    path, stored = make_dicom("variant.dcm")
    ds = pydicom.dcmread(path)
    if variant == "rle":
        ds.compress(RLELossless)
    elif variant == "implicit":
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:  # signed 12-bit in 16: pydicom sign-extends
        ds.PixelRepresentation = 1
        ds.PixelData = (stored.astype(np.int16) - 2048).astype(np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)

    frames = read(path).frames

    np.testing.assert_array_equal(frames, pydicom.dcmread(path).pixel_array)
    if variant == "signed":
        assert frames.dtype == np.int16 and frames.min() < 0
    else:
        np.testing.assert_array_equal(frames, stored)
