"""Synthetic data in the MOSXAV class scheme and folder layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_diffseg.data import (
    DEFAULT_CLASSES,
    SyntheticConfig,
    generate_sequence,
    make_mosxav,
)
from napari_diffseg.data.dataset import sequence_seeds
from napari_diffseg.io import MOSXAV_CLASSES, MOSXAV_COLORS, list_split, read, read_dataset

FRAMES, SIZE = 11, 64


def test_mosxav_scheme_maps_ids():
    default = generate_sequence(SyntheticConfig(size=SIZE, frames=8, seed=3, guidewire=True))
    mosxav = generate_sequence(
        SyntheticConfig(size=SIZE, frames=8, seed=3, guidewire=True, scheme="mosxav")
    )

    assert default.classes == DEFAULT_CLASSES and mosxav.classes == MOSXAV_CLASSES
    balloon = mosxav.labels == 4  # drawn only in the mosxav scheme, over vessel/catheter
    # guidewire -> "others", catheter -> contrast catheter or catheter (by frame)
    for old, new in ((0, (0,)), (1, (1,)), (2, (2, 3)), (3, (5,))):
        np.testing.assert_array_equal((default.labels == old) & ~balloon,
                                      np.isin(mosxav.labels, new))
    assert set(np.unique(default.labels)) >= {1, 2, 3}
    with pytest.raises(ValueError, match="scheme"):
        SyntheticConfig(scheme="voc")


@pytest.mark.parametrize("encoding", ["rgb", "index"])
def test_make_mosxav_writes_the_download_layout(tmp_path, encoding):
    out = make_mosxav(tmp_path / "mosxav", trainval=4, test=2, frames=FRAMES, size=SIZE,
                      seed=1, label_every=5, encoding=encoding)

    assert sorted(p.name for p in out.iterdir()) == ["test", "trainval"]
    trainval, test = out / "trainval", out / "test"
    assert sorted(p.name for p in trainval.iterdir()) == [
        "Annotations_Semantic", "ImageSets", "JPEGImages", "labels.json"]
    assert sorted(p.name for p in (trainval / "ImageSets").iterdir()) == ["train.txt", "val.txt"]
    assert sorted(p.name for p in (test / "ImageSets").iterdir()) == ["test.txt"]
    assert list_split(trainval, "train") == ["v01", "v02", "v03"]
    assert list_split(trainval, "val") == ["v04"]
    assert list_split(test, "test") == ["v05", "v06"]
    for root in (trainval, test):
        assert json.loads((root / "labels.json").read_text()) == list(MOSXAV_CLASSES.values())
    jpgs = sorted(p.name for p in (trainval / "JPEGImages" / "v02").iterdir())
    assert jpgs == [f"{t:05d}.jpg" for t in range(FRAMES)]
    masks = sorted(p.name for p in (trainval / "Annotations_Semantic" / "v02").iterdir())
    assert masks == ["00000.png", "00005.png", "00010.png"]
    assert len(list((test / "Annotations_Semantic" / "v06").iterdir())) == FRAMES
    with Image.open(trainval / "Annotations_Semantic" / "v01" / "00005.png") as image:
        assert image.mode == ("RGB" if encoding == "rgb" else "P")

    seeds = sequence_seeds(1, 6)
    videos = read_dataset(out)
    assert [v.sequence for v in videos] == [f"v{i:02d}" for i in range(1, 7)]
    for i, video in enumerate(videos):
        expected = generate_sequence(SyntheticConfig(size=SIZE, frames=FRAMES, seed=seeds[i],
                                                     scheme="mosxav"))
        assert video.meta.extra["mask_encoding"] == encoding
        assert video.labelled == ([0, 5, 10] if i < 4 else list(range(FRAMES)))
        np.testing.assert_array_equal(video.labels[video.labelled],
                                      expected.labels[video.labelled])
        assert np.abs(video.frames.astype(float) - expected.frames).mean() < 3  # JPEG 95
        assert video.classes == MOSXAV_CLASSES


def test_rgb_masks_use_the_class_colours(tmp_path):
    out = make_mosxav(tmp_path / "m", trainval=1, test=0, frames=6, size=SIZE, seed=2)
    video = read(out / "trainval", sequence="v01")
    with Image.open(out / "trainval" / "Annotations_Semantic" / "v01" / "00005.png") as image:
        rgb = np.asarray(image)

    for class_id in np.unique(video.labels[5]):
        colours = np.unique(rgb[video.labels[5] == class_id], axis=0)
        assert [tuple(c) for c in colours] == [MOSXAV_COLORS[int(class_id)]]
    assert list_split(out / "trainval", "val") == []
