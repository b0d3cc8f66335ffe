"""DAVIS-style datasets: JPEGImages/<seq>, Annotations/<seq>, classes.json."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from testutils import H, W, label_frames, moving_square

from napari_diffseg.io import (
    ReadError,
    detect_format,
    list_sequences,
    read,
    read_classes,
    read_dataset,
)

CLASSES = {0: "background", 1: "vessel", 2: "catheter"}


@pytest.mark.parametrize("annotation_mode", ["P", "L"])
@pytest.mark.parametrize(
    "classes_json",
    [
        None,
        {"0": "background", "1": "vessel", "2": "catheter"},
        ["background", "vessel", "catheter"],
    ],
)
def test_read_davis_sequence(make_davis, annotation_mode, classes_json):
    root = make_davis(annotation_mode=annotation_mode, classes=classes_json)
    expected = label_frames(10)

    video = read(root)

    assert video.meta.source_format == "davis"
    assert video.sequence == "seq"
    assert video.meta.frame_names == [f"{t:05d}" for t in range(10)]
    assert video.frames.shape == (10, H, W) and video.frames.dtype == np.uint8
    assert np.abs(video.frames.astype(float) - moving_square(10)).mean() < 3
    assert video.labelled == [0, 5]
    assert video.labels.shape == (10, H, W) and video.labels.dtype == np.uint8
    np.testing.assert_array_equal(video.labels[[0, 5]], expected[[0, 5]])
    assert not video.labels[[1, 2, 3, 4, 6, 7, 8, 9]].any()
    assert video.classes == (None if classes_json is None else CLASSES)


@pytest.mark.parametrize("sub", ["JPEGImages/seq", "Annotations/seq"])
def test_davis_sequence_folders(make_davis, sub):
    root = make_davis()

    video = read(root / sub)

    assert detect_format(root / sub) == "davis"
    assert video.sequence == "seq"
    assert video.labelled == [0, 5]
    assert video.meta.path == root / sub


def test_several_sequences(make_davis):
    root = make_davis(sequences=("seq10", "seq2", "seq1"))

    assert list_sequences(root) == ["seq1", "seq2", "seq10"]
    videos = read_dataset(root)
    assert [v.sequence for v in videos] == ["seq1", "seq2", "seq10"]
    assert all(v.labelled == [0, 5] for v in videos)
    assert read(root, sequence="seq2").sequence == "seq2"
    with pytest.raises(ReadError) as info:
        read(root)
    message = str(info.value)
    assert "seq1, seq2, seq10" in message and "sequence=" in message
    assert str(root) in message
    with pytest.raises(ReadError, match="seq3"):
        read(root, sequence="seq3")


def test_unannotated_sequence_has_zero_labels(make_davis):
    root = make_davis(every=100)
    for png in (root / "Annotations" / "seq").glob("*.png"):
        png.unlink()

    video = read(root)

    assert video.labelled == []
    assert video.labels.shape == (10, H, W) and not video.labels.any()


def test_sixteen_bit_annotation(make_davis):
    root = make_davis()
    ids = np.zeros((H, W), np.uint16)
    ids[3:9, 3:9] = 300
    Image.fromarray(ids).save(root / "Annotations" / "seq" / "00003.png")

    video = read(root)

    assert video.labels.dtype == np.uint16
    assert video.labelled == [0, 3, 5]
    np.testing.assert_array_equal(video.labels[3], ids)
    np.testing.assert_array_equal(video.labels[5], label_frames(10)[5])


def test_read_classes_forms(tmp_path):
    dict_path = tmp_path / "a.json"
    dict_path.write_text('{"1": "vessel", "0": "background"}')
    list_path = tmp_path / "b.json"
    list_path.write_text('["background", "vessel"]')

    assert read_classes(dict_path) == {0: "background", 1: "vessel"}
    assert read_classes(list_path) == {0: "background", 1: "vessel"}
