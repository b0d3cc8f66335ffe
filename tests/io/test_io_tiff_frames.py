"""TIFF stacks (tifffile) and folders of numbered frames (PNG / JPEG / TIFF)."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from PIL import Image
from testutils import H, W, moving_square

from napari_diffseg.io import read

LUMA = np.array([0.299, 0.587, 0.114])


def test_tiff_uint16_stack(tmp_path):
    stack = moving_square(5, dtype=np.uint16, fg=40000)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")

    video = read(path)

    assert video.meta.source_format == "tiff"
    assert video.frames.dtype == np.uint16
    np.testing.assert_array_equal(video.frames, stack)
    assert video.meta.frame_names == [f"{t:05d}" for t in range(5)]


def test_tiff_single_page_gets_time_axis(tmp_path):
    image = moving_square(1)[0]
    path = tmp_path / "one.TIFF"
    tifffile.imwrite(path, image)

    video = read(path)

    assert video.frames.shape == (1, H, W)
    np.testing.assert_array_equal(video.frames[0], image)


@pytest.mark.parametrize("channels", [3, 4])
def test_tiff_colour_stack(tmp_path, channels):
    rgb = np.zeros((4, H, W, channels), np.uint8)
    rgb[..., 0] = moving_square(4)
    rgb[..., 1] = 60
    if channels == 4:
        rgb[..., 3] = 255
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, rgb, photometric="rgb")

    gray = read(path)
    colour = read(path, keep_color=True)

    assert gray.frames.shape == (4, H, W)
    expected = np.rint(rgb[..., :3] @ LUMA).astype(np.uint8)
    np.testing.assert_array_equal(gray.frames, expected)
    assert colour.frames.shape == (4, H, W, 3)
    np.testing.assert_array_equal(colour.frames, rgb[..., :3])


def test_png_folder_natural_order(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(1, 12):  # 1.png .. 11.png; frame value encodes its number
        iio.imwrite(folder / f"{i}.png", np.full((H, W), i * 10, np.uint8))
    (folder / ".hidden.png").write_bytes(b"junk")
    (folder / "notes.txt").write_text("not a frame")
    (folder / "sub").mkdir()

    video = read(folder)

    assert video.meta.source_format == "frames"
    assert video.meta.frame_names == [str(i) for i in range(1, 12)]
    assert video.frames.shape == (11, H, W)
    assert video.frames[:, 0, 0].tolist() == [i * 10 for i in range(1, 12)]


def test_prefixed_names_natural_order(tmp_path):
    for i in (10, 2, 1):
        Image.fromarray(np.full((H, W), i, np.uint8)).save(tmp_path / f"frame_{i}.BMP")

    video = read(tmp_path)

    assert video.meta.frame_names == ["frame_1", "frame_2", "frame_10"]
    assert video.frames[:, 0, 0].tolist() == [1, 2, 10]


def test_16bit_png_folder_stays_uint16(tmp_path):
    frames = moving_square(3, dtype=np.uint16, fg=60000)
    for t, frame in enumerate(frames):
        iio.imwrite(tmp_path / f"img{t:03d}.png", frame)

    video = read(tmp_path)

    assert video.frames.dtype == np.uint16
    np.testing.assert_array_equal(video.frames, frames)


def test_colour_jpeg_folder(tmp_path):
    rgb = np.zeros((3, H, W, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[..., 2] = moving_square(3)
    for t in range(3):
        Image.fromarray(rgb[t]).save(tmp_path / f"{t}.jpg", quality=100, subsampling=0)

    gray = read(tmp_path)
    colour = read(tmp_path, keep_color=True)

    assert gray.frames.shape == (3, H, W)
    assert colour.frames.shape == (3, H, W, 3)
    assert np.abs(colour.frames.astype(float) - rgb).mean() < 3
    assert np.abs(gray.frames.astype(float) - rgb @ LUMA).mean() < 3


def test_tif_frames_folder(tmp_path):
    frames = moving_square(3, dtype=np.uint16, fg=1000)
    for t, frame in enumerate(frames):
        tifffile.imwrite(tmp_path / f"t{t}.tif", frame)

    np.testing.assert_array_equal(read(tmp_path).frames, frames)
