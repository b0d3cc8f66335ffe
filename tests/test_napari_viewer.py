"""A real napari viewer (virtual display) opens every format through the plugin's reader."""

from __future__ import annotations

import napari
import numpy as np
import pytest
import tifffile
from PIL import Image
from testutils import label_frames, moving_square

from napari_diffseg._layers import CLASS_COLORS

PLUGIN = "napari-diffseg"
CLASSES = {0: "background", 1: "vessel", 2: "catheter"}
VIDEO_CODECS = {"mp4": "libx264", "avi": "mpeg4", "mov": "libx264"}


def _make(kind: str, tmp_path, make_dicom):
    import imageio.v3 as iio

    frames = moving_square()
    if kind in VIDEO_CODECS:
        path = tmp_path / f"clip.{kind}"
        iio.imwrite(path, frames, plugin="pyav", codec=VIDEO_CODECS[kind], fps=10,
                    in_pixel_format="gray")
        return path, frames
    if kind == "gif":
        path = tmp_path / "clip.gif"
        iio.imwrite(path, frames, plugin="pillow", duration=100, loop=0)
        return path, frames
    if kind == "dicom":
        return make_dicom("cine.dcm", bits=16)
    if kind == "dicom-noext":
        return make_dicom("IM0001", bits=8)
    if kind == "tiff":
        path = tmp_path / "stack.tif"
        tifffile.imwrite(path, frames)
        return path, frames
    if kind == "pngs":
        folder = tmp_path / "frames"
        folder.mkdir()
        for i, frame in enumerate(frames):
            iio.imwrite(folder / f"{i + 1}.png", frame)
        return folder, frames
    raise AssertionError(kind)


KINDS = [*VIDEO_CODECS, "gif", "dicom", "dicom-noext", "tiff", "pngs"]


@pytest.mark.parametrize("kind", KINDS)
def test_viewer_opens_each_format(make_napari_viewer_proxy, tmp_path, make_dicom, kind):
    path, frames = _make(kind, tmp_path, make_dicom)
    viewer = make_napari_viewer_proxy()
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert len(layers) == 1
    layer = viewer.layers[0]
    assert isinstance(layer, napari.layers.Image)
    assert layer.data.shape == frames.shape
    assert layer.data.dtype == frames.dtype
    if kind in (*VIDEO_CODECS, "gif"):  # lossy: the bright square is where it should be
        diff = np.abs(np.asarray(layer.data, dtype=float) - frames.astype(float))
        assert diff.mean() < 6
    else:
        np.testing.assert_array_equal(np.asarray(layer.data), frames)
    assert layer.metadata["source_format"] in {"video", "dicom", "tiff", "frames"}
    if kind == "dicom":
        assert tuple(layer.scale[1:]) == pytest.approx((0.2, 0.3))
        assert layer.metadata["fps"] == pytest.approx(1000 / 66.7, rel=1e-3)


def test_viewer_opens_davis_sequence_with_class_colours(make_napari_viewer_proxy, make_davis):
    root = make_davis(sequences=("v01",), n_frames=11, classes=CLASSES)
    frames, labels = moving_square(11), label_frames(11)
    viewer = make_napari_viewer_proxy()
    viewer.open(str(root / "JPEGImages" / "v01"), plugin=PLUGIN)
    assert [lay.name for lay in viewer.layers] == ["v01", "v01 labels"]
    image, lab = viewer.layers
    assert np.abs(np.asarray(image.data, dtype=float) - frames).max() < 12  # JPEG frames
    assert lab.metadata["labelled"] == [0, 5, 10]
    for i in range(11):
        expected = labels[i] if i % 5 == 0 else np.zeros_like(labels[i])
        np.testing.assert_array_equal(np.asarray(lab.data[i]), expected)
    # each class shows in its colour; the class name is in the layer's features
    from napari.utils.colormaps.standardize_color import transform_color

    for cid, name in CLASSES.items():
        if cid == 0:
            continue
        np.testing.assert_allclose(lab.get_color(cid), transform_color(CLASS_COLORS[name])[0])
    assert list(lab.features["class"]) == ["background", "vessel", "catheter"]


def test_viewer_opens_davis_root_with_several_sequences(make_napari_viewer_proxy, make_davis):
    root = make_davis(sequences=("a", "b"), n_frames=6, classes=CLASSES)
    viewer = make_napari_viewer_proxy()
    viewer.open(str(root), plugin=PLUGIN)
    names = [lay.name for lay in viewer.layers]
    assert names == ["a", "a labels", "b", "b labels"]
    assert [lay.visible for lay in viewer.layers] == [True, True, False, False]
    assert viewer.layers["b labels"].data.shape == (6, *label_frames(6).shape[1:])


def test_bad_file_raises_a_message_naming_it(make_napari_viewer_proxy, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"")
    viewer = make_napari_viewer_proxy()
    with pytest.raises(Exception, match="broken.mp4"):
        viewer.open(str(bad), plugin=PLUGIN)
    assert len(viewer.layers) == 0


def test_sample_data_contribution(make_napari_viewer_proxy):
    viewer = make_napari_viewer_proxy()
    viewer.open_sample(PLUGIN, "synthetic_angiogram")
    image, labels = viewer.layers
    assert image.data.shape == (40, 512, 512)
    assert labels.data.shape == (40, 512, 512)
    present = set(np.unique(np.asarray(labels.data[20])).tolist())
    assert {0, 1, 2}.issubset(present)


def _writer(display_name: str):
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest(PLUGIN)
    return next(w for w in manifest.contributions.writers if w.display_name == display_name)


def test_corrected_labels_save_back_into_the_dataset(make_napari_viewer_proxy, make_davis):
    """Correct an unlabelled frame, save the layer into the dataset's Annotations folder through
    napari's save machinery, reopen: the correction is there, the other frames unchanged."""
    root = make_davis(sequences=("v01",), n_frames=11, classes=CLASSES)
    viewer = make_napari_viewer_proxy()
    viewer.open(str(root / "JPEGImages" / "v01"), plugin=PLUGIN)
    lab = viewer.layers["v01 labels"]
    lab.data[3, 0:5, 0:5] = 2  # the user paints on a frame that had no annotation
    viewer.layers.selection = {lab}
    viewer.layers.save(str(root / "Annotations" / "v01"), selected=True, plugin=PLUGIN,
                       _writer=_writer("DAVIS annotations folder"))
    ann = sorted(p.stem for p in (root / "Annotations" / "v01").glob("*.png"))
    assert ann == ["00000", "00003", "00005", "00010"]

    viewer2 = make_napari_viewer_proxy()
    viewer2.open(str(root / "JPEGImages" / "v01"), plugin=PLUGIN)
    lab2 = viewer2.layers["v01 labels"]
    assert lab2.metadata["labelled"] == [0, 3, 5, 10]
    np.testing.assert_array_equal(np.asarray(lab2.data), np.asarray(lab.data))


def test_labels_layer_saves_as_tiff(make_napari_viewer_proxy, tmp_path):
    from napari_diffseg.io import read

    labels = label_frames()
    viewer = make_napari_viewer_proxy()
    layer = viewer.add_labels(labels, name="seg")
    viewer.layers.selection = {layer}
    viewer.layers.save(str(tmp_path / "seg.tif"), selected=True, plugin=PLUGIN)
    np.testing.assert_array_equal(read(tmp_path / "seg.tif").frames, labels)


def test_viewer_opens_a_mosxav_split_in_mosxav_colours(make_napari_viewer_proxy, tmp_path):
    from napari.utils.colormaps.standardize_color import transform_color

    from napari_diffseg.data import make_mosxav
    from napari_diffseg.io import MOSXAV_COLORS

    root = make_mosxav(tmp_path / "mosxav", trainval=2, test=1, frames=6, size=64)
    viewer = make_napari_viewer_proxy()
    viewer.open(str(root / "trainval"), plugin=PLUGIN)
    assert [lay.name for lay in viewer.layers] == ["v01", "v01 labels", "v02", "v02 labels"]
    lab = viewer.layers["v01 labels"]
    assert lab.metadata["labelled"] == [0, 5]
    assert lab.metadata["source_format"] == "mosxav"
    for cid, rgb in MOSXAV_COLORS.items():
        if cid:
            np.testing.assert_allclose(lab.get_color(cid), transform_color(np.array(rgb) / 255)[0])
    assert list(lab.features["class"])[:3] == ["background", "vessel", "contrast catheter"]


@pytest.mark.parametrize("encoding", ["rgb", "index"])
def test_mosxav_corrections_save_back_in_the_source_encoding(make_napari_viewer_proxy, tmp_path,
                                                             encoding):
    from napari_diffseg.data import make_mosxav

    root = make_mosxav(tmp_path / "m", trainval=1, test=0, frames=6, size=64, encoding=encoding)
    split = root / "trainval"
    viewer = make_napari_viewer_proxy()
    viewer.open(str(split / "JPEGImages" / "v01"), plugin=PLUGIN)
    lab = viewer.layers["v01 labels"]
    lab.data[2, 0:4, 0:4] = 3  # paint "catheter" on an unlabelled frame
    viewer.layers.selection = {lab}
    target = split / "Annotations_Semantic" / "v01"
    viewer.layers.save(str(target), selected=True, plugin=PLUGIN,
                       _writer=_writer("DAVIS annotations folder"))
    assert sorted(p.stem for p in target.glob("*.png")) == ["00000", "00002", "00005"]
    mask = np.asarray(Image.open(target / "00002.png"))
    assert mask.ndim == (3 if encoding == "rgb" else 2)
    viewer2 = make_napari_viewer_proxy()
    viewer2.open(str(split / "JPEGImages" / "v01"), plugin=PLUGIN)
    np.testing.assert_array_equal(np.asarray(viewer2.layers["v01 labels"].data),
                                  np.asarray(lab.data))
