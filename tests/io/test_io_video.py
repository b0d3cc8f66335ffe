"""Video files (MP4 / AVI / MOV via PyAV, GIF via Pillow) written with imageio.v3."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
from testutils import FOREGROUND, SQUARE, H, T, W, centroid, moving_square, square_origin

from napari_diffseg.io import read

LUMA = np.array([0.299, 0.587, 0.114])


def _rgb(frames: np.ndarray) -> np.ndarray:
    return np.repeat(frames[..., None], 3, axis=-1)


@pytest.mark.parametrize(
    ("name", "codec", "tolerance"),
    [
        ("clip.mp4", "libx264", 6.0),
        ("clip.avi", "mpeg4", 8.0),
        ("clip.avi", "ffv1", 1.0),
        ("clip.mov", "libx264", 6.0),
        ("CLIP.MP4", "libx264", 6.0),
    ],
)
def test_read_video_files(tmp_path, name, codec, tolerance):
    expected = moving_square()
    path = tmp_path / name
    iio.imwrite(path, _rgb(expected), plugin="pyav", codec=codec, fps=10)

    video = read(path)

    assert video.frames.shape == (T, H, W)
    assert video.frames.dtype == np.uint8
    assert video.meta.source_format == "video"
    assert video.meta.fps == pytest.approx(10.0)
    assert video.meta.frame_names == [f"{t:05d}" for t in range(T)]
    assert video.labels is None
    error = np.abs(video.frames.astype(float) - expected).mean()
    assert error < tolerance
    for t in range(T):  # the bright square is where it was drawn, in every frame
        r, c = square_origin(t)
        assert centroid(video.frames[t]) == pytest.approx(
            (r + (SQUARE - 1) / 2, c + (SQUARE - 1) / 2), abs=0.75
        )


def test_colour_mp4_to_gray_and_keep_color(tmp_path):
    rgb = np.zeros((T, H, W, 3), np.uint8)
    rgb[..., 2] = 160  # blue background
    for t in range(T):
        r, c = square_origin(t)
        rgb[t, r : r + SQUARE, c : c + SQUARE] = (230, 20, 20)  # red square
    path = tmp_path / "colour.mp4"
    iio.imwrite(path, rgb, plugin="pyav", codec="libx264", fps=25)

    gray = read(path)
    colour = read(path, keep_color=True)

    assert gray.frames.shape == (T, H, W)
    assert colour.frames.shape == (T, H, W, 3)
    assert gray.meta.fps == pytest.approx(25.0)
    expected_gray = np.rint(rgb @ LUMA)
    assert np.abs(gray.frames.astype(float) - expected_gray).mean() < 8
    r, c = square_origin(3)
    patch = colour.frames[3, r + 2 : r + 6, c + 2 : c + 6].reshape(-1, 3).mean(axis=0)
    assert patch[0] > 180 and patch[2] < 80  # still red


def _colour_gif_frames() -> np.ndarray:
    rgb = np.zeros((T, H, W, 3), np.uint8)
    rgb[..., 1] = 90
    for t in range(T):
        r, c = square_origin(t)
        rgb[t, r : r + SQUARE, c : c + SQUARE] = (250, 40, 10 + 20 * t)
    return rgb


def test_colour_gif(tmp_path):
    rgb = _colour_gif_frames()
    path = tmp_path / "anim.gif"
    iio.imwrite(path, rgb, plugin="pillow", duration=100, loop=0)

    gray = read(path)
    colour = read(path, keep_color=True)

    assert gray.frames.shape == (T, H, W) and gray.frames.dtype == np.uint8
    np.testing.assert_array_equal(gray.frames, np.rint(rgb @ LUMA).astype(np.uint8))
    assert colour.frames.shape == (T, H, W, 3)
    np.testing.assert_array_equal(colour.frames, rgb)
    assert gray.meta.fps == pytest.approx(10.0)
    assert gray.meta.source_format == "video"


def test_gray_gif_stays_gray_with_keep_color(tmp_path):
    frames = moving_square()
    path = tmp_path / "gray.gif"
    iio.imwrite(path, _rgb(frames), plugin="pillow", duration=50)

    video = read(path, keep_color=True)

    assert video.frames.shape == (T, H, W)
    np.testing.assert_array_equal(video.frames, frames)
    assert video.meta.fps == pytest.approx(20.0)
    assert video.frames.max() == FOREGROUND
