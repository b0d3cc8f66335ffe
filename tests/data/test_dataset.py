"""Tests of make_dataset: DAVIS tree layout, classes.json and round-trip of frames/labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_diffseg.data import DEFAULT_CLASSES, SyntheticConfig, generate_sequence, make_dataset
from napari_diffseg.data.dataset import sequence_seeds


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    root = make_dataset(out, sequences=2, frames=11, size=64, label_every=5, seed=7)
    return root


def test_tree_layout(dataset):
    assert sorted(p.name for p in (dataset / "JPEGImages").iterdir()) == ["seq000", "seq001"]
    assert sorted(p.name for p in (dataset / "Annotations").iterdir()) == ["seq000", "seq001"]
    for seq in ("seq000", "seq001"):
        frames = sorted(p.name for p in (dataset / "JPEGImages" / seq).glob("*.png"))
        assert frames == [f"{i:05d}.png" for i in range(11)]
        annotations = sorted(p.name for p in (dataset / "Annotations" / seq).glob("*.png"))
        assert annotations == ["00000.png", "00005.png", "00010.png"]


def test_classes_json(dataset):
    content = json.loads((dataset / "classes.json").read_text())
    assert content == {"0": "background", "1": "vessel", "2": "catheter", "3": "guidewire"}
    assert content == {str(k): v for k, v in DEFAULT_CLASSES.items()}


def test_round_trip_equals_generated(dataset):
    for i, seed in enumerate(sequence_seeds(7, 2)):
        name = f"seq{i:03d}"
        seq = generate_sequence(SyntheticConfig(size=64, frames=11, seed=seed), name=name)
        for t in range(11):
            image = np.asarray(Image.open(dataset / "JPEGImages" / name / f"{t:05d}.png"))
            np.testing.assert_array_equal(image, seq.frames[t])
        for t in (0, 5, 10):
            with Image.open(dataset / "Annotations" / name / f"{t:05d}.png") as im:
                assert im.mode == "P"
                np.testing.assert_array_equal(np.asarray(im), seq.labels[t])


def test_sequences_differ_and_seeds_are_prefix_stable():
    assert sequence_seeds(7, 2) == sequence_seeds(7, 5)[:2]
    assert len(set(sequence_seeds(7, 5))) == 5
    assert sequence_seeds(7, 2) != sequence_seeds(8, 2)


def test_label_every_one_and_custom_writer(tmp_path):
    calls = []

    def writer(root, sequence, labels, *, frames=None, classes=None, images=None, **_):
        calls.append((root, sequence, labels.shape, list(frames), dict(classes), images.shape))
        return root

    make_dataset(tmp_path, sequences=1, frames=4, size=(64, 80), label_every=1, writer=writer)
    assert calls == [(tmp_path, "seq000", (4, 64, 80), [0, 1, 2, 3], DEFAULT_CLASSES,
                      (4, 64, 80))]


@pytest.mark.parametrize("kwargs", [dict(sequences=0), dict(label_every=0)])
def test_invalid_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        make_dataset(tmp_path, **kwargs)
