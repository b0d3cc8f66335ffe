"""Every kind of bad input raises ReadError naming the offending file."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
from PIL import Image
from testutils import H, W, moving_square

from napari_diffseg.io import ReadError, read, read_classes


def _raises(path, *needles):
    with pytest.raises(ReadError) as info:
        read(path)
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    return message


def test_missing_path(tmp_path):
    _raises(tmp_path / "nope.mp4", "nope.mp4", "does not exist")


@pytest.mark.parametrize("name", ["notes.xyz", "README"])
def test_unknown_file_type(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"0123456789" * 20)
    _raises(path, name, "unsupported", ".mp4", "DICOM")


def test_single_image_file(tmp_path):
    path = tmp_path / "still.png"
    iio.imwrite(path, np.zeros((H, W), np.uint8))
    _raises(path, "still.png", "not a video", "folder")


@pytest.mark.parametrize(
    "name", ["a.mp4", "a.avi", "a.MOV", "a.gif", "a.dcm", "a.dicom", "a.tif", "a.tiff"]
)
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.touch()
    _raises(path, name, "empty")


def test_empty_folder(tmp_path):
    _raises(tmp_path, str(tmp_path), "is empty")


def test_folder_without_frames(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    _raises(tmp_path, str(tmp_path), "no readable frames")


def test_empty_frame_in_folder(tmp_path):
    iio.imwrite(tmp_path / "1.png", np.zeros((H, W), np.uint8))
    (tmp_path / "2.png").touch()
    _raises(tmp_path, "2.png", "empty")


def test_corrupt_frame_in_folder(tmp_path):
    iio.imwrite(tmp_path / "1.png", np.zeros((H, W), np.uint8))
    (tmp_path / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    _raises(tmp_path, "2.png", "could not be decoded")


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_mp4(tmp_path):
    path = tmp_path / "cut.mp4"
    frames = np.repeat(moving_square()[..., None], 3, axis=-1)
    iio.imwrite(path, frames, plugin="pyav", codec="libx264", fps=10)
    _truncate(path)
    _raises(path, "cut.mp4", "could not be decoded")


def test_truncated_gif(tmp_path):
    path = tmp_path / "cut.gif"
    iio.imwrite(path, moving_square(), plugin="pillow", duration=100)
    _truncate(path)
    _raises(path, "cut.gif", "could not be decoded")


@pytest.mark.parametrize("keep", [0.9, 0.05])  # inside the pixel data / inside the header
def test_truncated_dicom(make_dicom, keep):
    path, _ = make_dicom("cut.dcm")
    _truncate(path, keep)
    _raises(path, "cut.dcm", "could not be decoded")


@pytest.mark.parametrize("compression", [None, "zlib"])
@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_tiff(tmp_path, compression, keep):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, moving_square(4), photometric="minisblack", compression=compression)
    _truncate(path, keep)
    _raises(path, "cut.tif", "could not be decoded")


def test_dicom_named_file_that_is_not_dicom(tmp_path):
    path = tmp_path / "fake.dcm"
    path.write_bytes(b"hello" * 100)
    _raises(path, "fake.dcm", "DICM")


def test_unequal_frame_sizes(tmp_path):
    for i in range(1, 4):
        iio.imwrite(tmp_path / f"{i}.png", np.zeros((H, W), np.uint8))
    iio.imwrite(tmp_path / "10.png", np.zeros((H + 2, W), np.uint8))
    iio.imwrite(tmp_path / "11.png", np.zeros((H + 4, W), np.uint8))
    message = _raises(tmp_path, "10.png", f"({H + 2}, {W})", f"({H}, {W})")
    assert "11.png" not in message


def test_mixed_dtypes(tmp_path):
    iio.imwrite(tmp_path / "1.png", np.zeros((H, W), np.uint8))
    iio.imwrite(tmp_path / "2.png", np.zeros((H, W), np.uint16))
    _raises(tmp_path, "2.png", "uint16", "uint8")


def test_duplicate_frame_stems(tmp_path):
    iio.imwrite(tmp_path / "1.png", np.zeros((H, W), np.uint8))
    iio.imwrite(tmp_path / "1.bmp", np.zeros((H, W), np.uint8))
    _raises(tmp_path, "1.", "unique")


def test_tiff_pages_of_unequal_size(tmp_path):
    path = tmp_path / "mixed.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.zeros((H, W), np.uint8))
        tif.write(np.zeros((H // 2, W), np.uint8))
    _raises(path, "mixed.tif", "differ")


# --- DAVIS -------------------------------------------------------------------------------


def test_annotation_size_mismatch(make_davis):
    root = make_davis()
    bad = root / "Annotations" / "seq" / "00005.png"
    Image.fromarray(np.zeros((H // 2, W), np.uint8)).save(bad)
    _raises(root, "00005.png", f"({H // 2}, {W})", f"({H}, {W})")


def test_label_id_outside_classes(make_davis):
    root = make_davis(classes={"0": "background", "1": "vessel"})  # the labels also use 2
    message = _raises(root, "00000.png", "[2]", "classes.json")
    assert "[0, 1]" in message


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_colour_annotation(make_davis, mode):
    root = make_davis()
    bad = root / "Annotations" / "seq" / "00005.png"
    Image.new(mode, (W, H)).save(bad)
    _raises(root, "00005.png", "label ids", "palette or grayscale")


def test_annotation_without_frame(make_davis):
    root = make_davis()
    Image.new("L", (W, H)).save(root / "Annotations" / "seq" / "00099.png")
    _raises(root, "00099.png", "matches no frame")


def test_empty_annotation(make_davis):
    root = make_davis()
    (root / "Annotations" / "seq" / "00005.png").write_bytes(b"")
    _raises(root, "00005.png", "empty")


@pytest.mark.parametrize(
    "text",
    ['{"0": "background", ', '{"zero": "background"}', '{"1": 5}', "42", '["a", null]', ""],
)
def test_malformed_classes_json(make_davis, text):
    root = make_davis()
    (root / "classes.json").write_text(text)
    _raises(root, "classes.json")
    with pytest.raises(ReadError, match="classes.json"):
        read_classes(root / "classes.json")


def test_several_sequences_need_a_name(make_davis):
    root = make_davis(sequences=("a", "b"))
    _raises(root, "a, b", "sequence=", "read_dataset")


def test_read_error_is_value_error(tmp_path):
    with pytest.raises(ValueError):
        read(tmp_path / "missing.tif")


def test_summary_leads_with_the_problem_and_names_the_file_only(tmp_path):
    """What a notification shows: the full path and the decoder's words stay in str()."""
    folder = tmp_path / "deep" / "folder"
    folder.mkdir(parents=True)
    path = folder / "cut.mp4"
    path.write_bytes(b"not a video at all")
    with pytest.raises(ReadError) as info:
        read(path)
    assert str(path) in str(info.value) and info.value.detail
    summary = info.value.summary()
    assert summary.startswith("Could not be decoded as video") and summary.endswith(": cut.mp4")
    assert str(folder) not in summary and info.value.detail not in summary
