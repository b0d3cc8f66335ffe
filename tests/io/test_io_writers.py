"""Writers: palette PNG annotations, DAVIS datasets, TIFF label stacks; round trips, atomicity."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image
from testutils import H, W, label_frames, moving_square

import napari_diffseg.io.writers as writers
from napari_diffseg.io import (
    DEFAULT_PALETTE,
    WriteError,
    read,
    write_annotations,
    write_davis,
    write_tiff,
)
from napari_diffseg.io.davis import read_annotation

CLASSES = {0: "background", 1: "vessel", 2: "catheter"}


def _leftovers(folder):
    """Hidden or temporary files a crashed or sloppy writer would leave behind."""
    return [p for p in folder.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_default_palette():
    assert DEFAULT_PALETTE.shape == (256, 3) and DEFAULT_PALETTE.dtype == np.uint8
    assert DEFAULT_PALETTE[:4].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert len({tuple(c) for c in DEFAULT_PALETTE}) == 256


def test_write_annotations_palette_pngs(tmp_path):
    labels = label_frames(6)
    out = tmp_path / "ann" / "seq"

    paths = write_annotations(out, labels, frames=[4, 1, 4])

    assert paths == [out / "00001.png", out / "00004.png"]
    assert sorted(p.name for p in out.iterdir()) == ["00001.png", "00004.png"]
    with Image.open(paths[0]) as image:
        assert image.mode == "P"
        palette = np.frombuffer(image.palette.tobytes(), np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(palette[:3], DEFAULT_PALETTE[:3])
    np.testing.assert_array_equal(read_annotation(paths[0]), labels[1])
    np.testing.assert_array_equal(read_annotation(paths[1]), labels[4])
    assert _leftovers(tmp_path) == []


def test_write_annotations_custom_names(tmp_path):
    labels = label_frames(3)

    paths = write_annotations(tmp_path, labels, frame_names=["a", "b", "c"])

    assert [p.name for p in paths] == ["a.png", "b.png", "c.png"]


@pytest.mark.parametrize(
    ("labels", "kwargs", "needle"),
    [
        (np.zeros((H, W), np.uint8), {}, "(T, H, W)"),
        (np.zeros((2, H, W), np.float32), {}, "integer"),
        (np.full((2, H, W), 256, np.uint16), {}, "0..255"),
        (np.full((2, H, W), -1, np.int16), {}, "0..255"),
        (np.zeros((2, H, W), np.uint8), {"frame_names": ["a"]}, "2 frames"),
        (np.zeros((2, H, W), np.uint8), {"frame_names": ["a", "a"]}, "unique"),
        (np.zeros((2, H, W), np.uint8), {"frame_names": ["a", "../b"]}, "separators"),
        (np.zeros((2, H, W), np.uint8), {"frames": [2]}, "out of range"),
        (np.full((2, H, W), 3, np.uint8), {"classes": CLASSES}, "[3]"),
    ],
)
def test_write_annotations_rejects_bad_input(tmp_path, labels, kwargs, needle):
    out = tmp_path / "out"
    with pytest.raises(WriteError) as info:
        write_annotations(out, labels, **kwargs)
    assert needle in str(info.value)
    assert not out.exists()  # nothing written before validation passed


@pytest.mark.parametrize(
    ("images", "classes"),
    [
        (moving_square(10), CLASSES),
        (moving_square(10, dtype=np.uint16, fg=50000), ["background", "vessel", "catheter"]),
        (
            np.stack(
                [moving_square(10), moving_square(10) // 2, np.full((10, H, W), 7, np.uint8)], -1
            ),
            None,
        ),
    ],
)
def test_write_davis_round_trip(tmp_path, images, classes):
    labels = label_frames(10)
    names = [f"f{t}" for t in range(10)]

    root = write_davis(
        tmp_path / "ds",
        "run 1",
        labels,
        frame_names=names,
        frames=[0, 3, 9],
        classes=classes,
        images=images,
    )
    video = read(root, keep_color=True)

    assert root == tmp_path / "ds"
    assert video.sequence == "run 1"
    assert video.meta.frame_names == names
    assert video.labelled == [0, 3, 9]
    np.testing.assert_array_equal(video.labels[[0, 3, 9]], labels[[0, 3, 9]])
    assert not video.labels[[1, 2, 4, 5, 6, 7, 8]].any()
    np.testing.assert_array_equal(video.frames, images)
    assert video.frames.dtype == images.dtype
    assert video.classes == (None if classes is None else CLASSES)
    if classes is not None:
        assert json.loads((root / "classes.json").read_text()) == {
            "0": "background",
            "1": "vessel",
            "2": "catheter",
        }
    assert _leftovers(tmp_path) == []


def test_write_davis_into_existing_dataset(make_davis):
    root = make_davis(classes={"0": "background", "1": "vessel", "2": "catheter"})
    labels = label_frames(10)
    labels[7] = 1

    write_davis(root, "seq", labels, frames=[7], classes=CLASSES)
    video = read(root)

    assert video.labelled == [0, 5, 7]
    np.testing.assert_array_equal(video.labels[7], labels[7])


def test_write_davis_refuses_conflicting_classes(make_davis):
    root = make_davis(classes={"0": "background", "1": "vessel", "2": "catheter"})
    before = (root / "classes.json").read_bytes()

    with pytest.raises(WriteError, match="classes.json"):
        write_davis(root, "seq", label_frames(10), classes={0: "bg", 1: "artery", 2: "wire"})

    assert (root / "classes.json").read_bytes() == before
    assert read(root).labelled == [0, 5]  # annotations untouched too


def test_write_davis_validates_against_existing_classes(make_davis):
    root = make_davis(classes=["background", "vessel"])
    with pytest.raises(WriteError, match=r"\[2\]"):
        write_davis(root, "seq", label_frames(10))


def test_write_davis_needs_frames_for_annotations(make_davis):
    root = make_davis()
    with pytest.raises(WriteError, match="pass images="):
        write_davis(root, "seq", label_frames(3), frame_names=["x", "y", "z"])


def test_write_davis_rejects_mismatched_images(tmp_path):
    with pytest.raises(WriteError, match="images"):
        write_davis(tmp_path, "seq", label_frames(4), images=moving_square(5))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, bool])
@pytest.mark.parametrize("n_frames", [1, 5])
def test_write_tiff_round_trip(tmp_path, dtype, n_frames):
    labels = (label_frames(n_frames) * 3).astype(dtype)
    path = tmp_path / "labels.tif"

    assert write_tiff(path, labels) == path
    video = read(path)

    assert video.frames.dtype == labels.dtype
    np.testing.assert_array_equal(video.frames, labels)
    assert _leftovers(tmp_path) == []


def test_write_tiff_rejects_2d(tmp_path):
    with pytest.raises(WriteError, match=r"\(T, H, W\)"):
        write_tiff(tmp_path / "x.tif", np.zeros((H, W), np.uint8))


def test_failed_png_write_keeps_existing_file(tmp_path, monkeypatch):
    labels = label_frames(2)
    (old,) = write_annotations(tmp_path, labels, frames=[0])
    before = old.read_bytes()

    def broken_save(self, *args, **kwargs):
        with open(args[0], "wb") as handle:  # start writing, then crash half-way
            handle.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(WriteError, match="00000.png") as info:
        write_annotations(tmp_path, np.zeros_like(labels), frames=[0])

    assert "disk full" in str(info.value)
    assert old.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_failed_tiff_write_keeps_existing_file(tmp_path, monkeypatch):
    path = write_tiff(tmp_path / "labels.tif", label_frames(3))
    before = path.read_bytes()

    def broken_imwrite(file, *args, **kwargs):
        tifffile.imwrite(file, np.zeros((1, 2, 2), np.uint8))
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(writers.tifffile, "imwrite", broken_imwrite, raising=True)
    with pytest.raises(WriteError, match="labels.tif"):
        write_tiff(path, np.zeros((3, H, W), np.uint8))

    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_failed_classes_write_writes_nothing_else(tmp_path, monkeypatch):
    def broken_write_text(self, *args, **kwargs):
        raise OSError("read-only file system")

    monkeypatch.setattr(type(tmp_path), "write_text", broken_write_text)
    with pytest.raises(WriteError, match="classes.json"):
        write_davis(tmp_path, "seq", label_frames(2), classes=CLASSES, images=moving_square(2))
    monkeypatch.undo()

    assert [p.name for p in tmp_path.iterdir()] == []
