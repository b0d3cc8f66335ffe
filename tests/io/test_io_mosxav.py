"""MOSXAV downloads: semantic/instance masks, index or RGB encoding, ImageSets splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from testutils import H, W, moving_square, save_palette_png

from napari_diffseg.io import (
    MOSXAV_CLASSES,
    MOSXAV_COLORS,
    ReadError,
    WriteError,
    detect_format,
    list_split,
    read,
    read_dataset,
    write_mosxav,
)

N = 6


def semantic_ids(n: int = N) -> np.ndarray:
    """``(n, H, W)`` ids using every MOSXAV class: square = vessel, bars = the others."""
    ids = (moving_square(n) > 100).astype(np.uint8)
    for k in range(2, 6):
        ids[:, 2 * k : 2 * k + 2, 2:40] = k
    return ids


def instance_ids(n: int = N) -> np.ndarray:
    ids = (moving_square(n) > 100).astype(np.uint8)
    ids[:, 25:28, 3:30] = 2
    return ids


def save_mask(path: Path, ids: np.ndarray, encoding: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if encoding == "P":
        image = Image.fromarray(ids)
        palette = np.zeros((256, 3), np.uint8)
        palette[list(MOSXAV_COLORS)] = list(MOSXAV_COLORS.values())
        image.putpalette(palette.tobytes())
        image.save(path)
    elif encoding == "L":
        Image.fromarray(ids).save(path)
    else:
        lut = np.zeros((256, 3), np.uint8)
        lut[list(MOSXAV_COLORS)] = list(MOSXAV_COLORS.values())
        Image.fromarray(lut[ids]).save(path)


def make_split(
    split_root: Path,
    sequences: tuple[str, ...] = ("v01", "v02"),
    *,
    encoding: str = "rgb",
    every: int = 2,
    labels_json: object = None,
    imagesets: dict[str, list[str]] | None = None,
) -> Path:
    """A MOSXAV split folder built by hand (JPEG frames, masks every ``every`` frames)."""
    frames, sem, inst = moving_square(N), semantic_ids(), instance_ids()
    for seq in sequences:
        for t in range(N):
            jpg = split_root / "JPEGImages" / seq / f"{t:05d}.jpg"
            jpg.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frames[t]).save(jpg, quality=95)
            if t % every == 0:
                save_mask(split_root / "Annotations_Semantic" / seq / f"{t:05d}.png", sem[t],
                          encoding)
                inst_path = split_root / "Annotations" / seq / f"{t:05d}.png"
                inst_path.parent.mkdir(parents=True, exist_ok=True)
                save_palette_png(inst_path, inst[t])
    for split, names in (imagesets or {}).items():
        path = split_root / "ImageSets" / f"{split}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(names) + "\n")
    if labels_json is not None:
        (split_root / "labels.json").write_text(json.dumps(labels_json))
    return split_root


@pytest.mark.parametrize("encoding", ["P", "L", "rgb"])
def test_read_semantic_masks_in_every_encoding(tmp_path, encoding):
    root = make_split(tmp_path / "trainval", encoding=encoding)

    video = read(root / "JPEGImages" / "v02")

    assert detect_format(root / "JPEGImages" / "v02") == "mosxav"
    assert video.meta.source_format == "mosxav"
    assert video.sequence == "v02"
    assert video.meta.extra["annotations"] == "semantic"
    assert video.meta.extra["mask_encoding"] == ("rgb" if encoding == "rgb" else "index")
    assert video.frames.shape == (N, H, W)
    assert video.labelled == [0, 2, 4]
    np.testing.assert_array_equal(video.labels[[0, 2, 4]], semantic_ids()[[0, 2, 4]])
    assert not video.labels[[1, 3, 5]].any()
    assert video.classes == MOSXAV_CLASSES


def test_class_names_from_labels_json_list_mapping_or_parent(tmp_path):
    names = ["bg", "vessel", "contrast catheter", "catheter", "balloon", "others"]
    root = make_split(tmp_path / "a" / "trainval", labels_json=names)
    assert read(root, sequence="v01").classes == dict(enumerate(names))

    parent = tmp_path / "b"
    make_split(parent / "test")
    (parent / "labels.json").write_text(json.dumps({str(i): n for i, n in enumerate(names)}))
    assert read(parent / "test" / "Annotations_Semantic" / "v01").classes == dict(
        enumerate(names)
    )


def test_unknown_colour_names_file_pixel_and_colour(tmp_path):
    root = make_split(tmp_path / "trainval")
    bad = root / "Annotations_Semantic" / "v01" / "00002.png"
    rgb = np.asarray(Image.open(bad).convert("RGB")).copy()
    rgb[7, 11] = (1, 2, 3)
    Image.fromarray(rgb).save(bad)

    with pytest.raises(ReadError) as info:
        read(root, sequence="v01")

    message = str(info.value)
    assert str(bad) in message and "row 7, col 11" in message and "[1, 2, 3]" in message
    assert info.value.path == bad


def test_mask_of_wrong_size_names_file_and_sizes(tmp_path):
    root = make_split(tmp_path / "trainval")
    bad = root / "Annotations_Semantic" / "v01" / "00004.png"
    save_mask(bad, np.zeros((H + 2, W), np.uint8), "rgb")

    with pytest.raises(ReadError) as info:
        read(root, sequence="v01")

    message = str(info.value)
    assert str(bad) in message and f"({H + 2}, {W})" in message and f"({H}, {W})" in message


def test_index_above_classes_is_an_error(tmp_path):
    root = make_split(tmp_path / "trainval", encoding="L", labels_json=["bg", "vessel"])

    with pytest.raises(ReadError, match="labels.json"):
        read(root, sequence="v01")


def test_imagesets_splits_are_honoured(tmp_path):
    sets = {"train": ["v01", "v03"], "val": ["v02"]}
    root = make_split(tmp_path / "trainval", ("v01", "v02", "v03"), imagesets=sets)
    make_split(tmp_path / "test", ("v09",), every=1, imagesets={"test": ["v09"]})

    assert list_split(root, "train") == ["v01", "v03"]
    assert [v.sequence for v in read_dataset(root, split="val")] == ["v02"]
    assert [v.sequence for v in read_dataset(root)] == ["v01", "v02", "v03"]
    assert list_split(tmp_path, "test") == ["test/v09"]
    assert [v.sequence for v in read_dataset(tmp_path, split="train")] == ["v01", "v03"]
    assert len(read_dataset(tmp_path)) == 4
    assert read_dataset(tmp_path, split="test")[0].labelled == list(range(N))
    with pytest.raises(ReadError, match="split=") as info:
        read_dataset(tmp_path / "nowhere", split="val")
    with pytest.raises(ReadError) as info:
        list_split(root, "test")
    assert str(root / "ImageSets" / "test.txt") in str(info.value)
    (root / "ImageSets" / "val.txt").write_text("v02\nv07\n")
    with pytest.raises(ReadError, match="v07") as info:
        list_split(root, "val")
    assert "val.txt" in str(info.value)


def test_download_root_needs_a_sequence(tmp_path):
    make_split(tmp_path / "trainval", ("v01", "v02"))
    make_split(tmp_path / "test", ("v05",))

    assert detect_format(tmp_path) == "mosxav"
    assert read(tmp_path, sequence="trainval/v02").sequence == "v02"
    assert read(tmp_path, sequence="v05").meta.extra["subset"] == "test"
    with pytest.raises(ReadError) as info:
        read(tmp_path)
    assert "trainval/v01, trainval/v02, test/v05" in str(info.value)
    with pytest.raises(ReadError, match="v99"):
        read(tmp_path, sequence="v99")


def test_instance_annotations(tmp_path):
    root = make_split(tmp_path / "trainval")

    by_request = read(root, sequence="v01", annotations="instance")
    by_folder = read(root / "Annotations" / "v01")

    for video in (by_request, by_folder):
        assert video.meta.extra["annotations"] == "instance"
        assert video.labelled == [0, 2, 4]
        np.testing.assert_array_equal(video.labels[[0, 2, 4]], instance_ids()[[0, 2, 4]])
        assert video.classes == {0: "background", 1: "branch 1", 2: "branch 2"}
    with pytest.raises(ReadError, match="semantic"):
        read(root, sequence="v01", annotations="panoptic")


@pytest.mark.parametrize("encoding", ["index", "rgb"])
def test_write_then_read_round_trips_exactly(tmp_path, encoding):
    root = make_split(tmp_path / "trainval", ("v01",))
    labels = semantic_ids()[::-1].copy()
    names = [f"{t:05d}" for t in range(N)]

    write_mosxav(root, "v01", labels, frame_names=names, frames=[1, 3, 5], encoding=encoding)
    video = read(root, sequence="v01")

    assert video.labelled == [0, 1, 2, 3, 4, 5]  # the hand-made masks 0, 2, 4 remain
    np.testing.assert_array_equal(video.labels[[1, 3, 5]], labels[[1, 3, 5]])
    assert json.loads((root / "labels.json").read_text()) == list(MOSXAV_CLASSES.values())
    with Image.open(root / "Annotations_Semantic" / "v01" / "00001.png") as image:
        assert image.mode == ("P" if encoding == "index" else "RGB")
        rgb = np.asarray(image.convert("RGB"))
    assert tuple(rgb[labels[1] == 4][0]) == MOSXAV_COLORS[4]


def test_write_mosxav_rejects_bad_input(tmp_path):
    root = make_split(tmp_path / "trainval", ("v01",))
    names = [f"{t:05d}" for t in range(N)]
    labels = semantic_ids()

    with pytest.raises(WriteError, match="encoding"):
        write_mosxav(root, "v01", labels, frame_names=names, encoding="jpeg")
    with pytest.raises(WriteError, match=r"\[6\]"):
        write_mosxav(root, "v01", np.full_like(labels, 6), frame_names=names)
    write_mosxav(root, "v01", labels, frame_names=names, classes=["bg", "vessel", "a", "b", "c",
                                                                    "d"])
    with pytest.raises(WriteError, match="different classes"):
        write_mosxav(root, "v01", labels, frame_names=names)


def test_plain_davis_is_still_davis(make_davis):
    root = make_davis()

    assert detect_format(root) == "davis"
    assert read(root).meta.source_format == "davis"
    with pytest.raises(ReadError, match="MOSXAV"):
        read_dataset(root, split="train")
