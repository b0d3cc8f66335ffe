"""Format detection (cheap, used by the napari reader hook) and package hygiene."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from testutils import H, W

import napari_diffseg.io as nio
from napari_diffseg.io import detect_format


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.mp4", "video"),
        ("a.AVI", "video"),
        ("a.Mov", "video"),
        ("a.gif", "video"),
        ("a.dcm", "dicom"),
        ("a.DICOM", "dicom"),
        ("a.tif", "tiff"),
        ("a.TIFF", "tiff"),
        ("a.png", None),
        ("a.txt", None),
        ("noext", None),
    ],
)
def test_detect_files_by_extension(tmp_path, name, expected):
    path = tmp_path / name
    path.write_bytes(b"x" * 200)
    assert detect_format(path) == expected


def test_detect_dicom_by_magic(make_dicom):
    path, _ = make_dicom("1.2.840.99.7")  # UID-style name with a meaningless "extension"
    assert detect_format(path) == "dicom"


def test_detect_folders(make_davis, tmp_path):
    root = make_davis()
    frames = tmp_path / "frames"
    frames.mkdir()
    Image.fromarray(np.zeros((H, W), np.uint8)).save(frames / "0001.JPG")
    empty = tmp_path / "empty"
    empty.mkdir()

    assert detect_format(root) == "davis"
    assert detect_format(root / "JPEGImages" / "seq") == "davis"
    assert detect_format(root / "Annotations" / "seq") == "davis"
    assert detect_format(root / "JPEGImages") is None  # holds sequence folders, not frames
    assert detect_format(frames) == "frames"
    assert detect_format(empty) is None
    assert detect_format(tmp_path / "missing") is None
    assert detect_format(str(frames)) == "frames"


def test_public_api():
    for name in (
        "ReadError WriteError Video VideoMetadata read detect_format list_sequences "
        "read_dataset read_classes write_annotations write_davis write_tiff DEFAULT_PALETTE"
    ).split():
        assert hasattr(nio, name), name
    assert issubclass(nio.ReadError, ValueError) and issubclass(nio.WriteError, ValueError)


def test_io_imports_no_torch_qt_or_napari():
    code = (
        "import sys, napari_diffseg.io; "
        "bad = [m for m in ('torch', 'napari', 'qtpy', 'PyQt5', 'PySide2', 'PySide6') "
        "if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
