"""napari's own plugin validation accepts the manifest, and it is discovered by napari."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from npe2 import PluginManifest
from testutils import moving_square

from napari_diffseg._reader import napari_get_reader


def test_npe2_validate_accepts_the_manifest():
    npe2 = Path(sys.executable).with_name("npe2")
    result = subprocess.run(
        [str(npe2), "validate", "napari-diffseg", "--imports"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout.lower()


def test_manifest_contributions():
    manifest = PluginManifest.from_distribution("napari-diffseg")
    assert manifest.name == "napari-diffseg"
    (reader,) = manifest.contributions.readers
    assert reader.accepts_directories
    for pattern in ["*.mp4", "*.avi", "*.mov", "*.gif", "*.dcm", "*.tif", "*.tiff"]:
        assert pattern in reader.filename_patterns
    writers = {w.display_name: w for w in manifest.contributions.writers}
    assert writers["multi-page TIFF"].filename_extensions == [".tif", ".tiff"]
    assert writers["DAVIS annotations folder"].filename_extensions == []  # a directory writer
    (sample,) = manifest.contributions.sample_data
    assert sample.display_name == "Synthetic coronary angiogram"


def test_reader_declines_what_it_cannot_read(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    (tmp_path / "README").write_bytes(b"plain text, no DICM magic" * 10)
    assert napari_get_reader(str(tmp_path / "README")) is None


def _readers_napari_offers(path) -> set[str]:
    """The plugins napari lists for `path` (more than one: the "choose reader" dialog)."""
    import npe2
    from napari.plugins import _npe2

    npe2.PluginManager.instance().discover()
    return set(_npe2.get_readers(str(path)))


@pytest.mark.parametrize(
    "name", ["table.csv", "array.npy", "arrays.npz", "still.png", "photo.jpg", "store.zarr",
             "notes.txt", "data.h5"]
)
def test_napari_does_not_offer_our_reader_for_other_files(tmp_path, name):
    """The reader used to claim "*": every PNG, CSV or NPY opened a choose-reader dialog."""
    path = tmp_path / name
    path.write_bytes(b"0123456789" * 20)
    assert "napari-diffseg" not in _readers_napari_offers(path)
    assert napari_get_reader(str(path)) is None


def test_napari_offers_our_reader_for_what_it_reads(tmp_path, make_dicom):
    dicom, _ = make_dicom("cine.dcm")
    bare_dicom, _ = make_dicom("IM000001")  # DICOM media: 8-character names, no extension
    video = tmp_path / "run.mp4"
    iio.imwrite(video, np.repeat(moving_square()[..., None], 3, axis=-1), plugin="pyav",
                codec="libx264", fps=10)
    frames = tmp_path / "frames"
    frames.mkdir()
    for t, frame in enumerate(moving_square()):
        iio.imwrite(frames / f"{t:05d}.png", frame)
    for path in (dicom, bare_dicom, video, frames):
        assert "napari-diffseg" in _readers_napari_offers(path), path
        assert napari_get_reader(str(path)) is not None, path


def test_reader_declines_a_zarr_folder_without_listing_it(tmp_path, monkeypatch):
    """npe2 offers every directory reader for any folder; ours says no at once to a zarr
    store (it would otherwise scan its many chunk files for images)."""
    import os

    store = tmp_path / "big.zarr"
    store.mkdir()
    (store / ".zarray").write_text("{}")

    def no_listing(*_args, **_kwargs):
        raise AssertionError("listed the zarr store")

    monkeypatch.setattr(os, "scandir", no_listing)
    assert napari_get_reader(str(store)) is None
