"""napari's own plugin validation accepts the manifest, and it is discovered by napari."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from npe2 import PluginManifest


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
    from napari_diffseg._reader import napari_get_reader

    (tmp_path / "notes.txt").write_text("not an image")
    assert napari_get_reader(str(tmp_path / "notes.txt")) is None
    (tmp_path / "README").write_bytes(b"plain text, no DICM magic" * 10)
    assert napari_get_reader(str(tmp_path / "README")) is None
