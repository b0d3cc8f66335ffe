"""The real angiography files beside the project (../shared/realdata) open and segment.

They are real clinical and phantom acquisitions without ground truth (see their README): the
tests check what a reader must get right (frame count, frame time, pixel spacing, dtype) and
that the bundled model runs on them; they skip where the folder is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_diffseg.io import read

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"no real data at {REAL}")


@pytest.mark.parametrize("name, frames", [("vukicevic_phantom_XA_IM7.dcm", 9),
                                          ("vukicevic_phantom_XA_IM8.dcm", 8)])
def test_jpeg_lossless_xa_dicom_opens(name, frames):
    """Multi-frame XA, JPEG Lossless Process 14 SV1: frame time 66.67 ms, spacing 0.39 mm."""
    video = read(REAL / "dicom" / name)
    assert video.frames.shape == (frames, 512, 512)
    assert video.frames.dtype == np.uint8
    assert video.meta.fps == pytest.approx(1000 / 66.67, rel=1e-3)
    assert float(video.meta.extra["FrameTime"]) == pytest.approx(66.67, abs=0.01)
    assert video.meta.extra["NumberOfFrames"] == frames
    assert video.meta.spacing == pytest.approx((0.390625, 0.390625))
    # decoded pixels, not a blank buffer: a phantom's vessels and background differ
    assert float(video.frames.std()) > 5


@pytest.mark.parametrize("folder, frames", [("vukicevic_clinical_sample2_proj0", 37),
                                            ("vukicevic_clinical_sample2_proj1", 40)])
def test_clinical_jpeg_frame_folders_open_in_order(folder, frames):
    video = read(REAL / "video" / folder)
    assert video.frames.shape[:3] == (frames, 512, 512)
    numbers = [int(name.split("_")[-1]) for name in video.meta.frame_names]
    assert numbers == list(range(1, frames + 1))


def test_bundled_model_segments_a_real_frame():
    """Smoke: one real clinical frame through the bundled model (1 step x 1 sample)."""
    from napari_diffseg.engine import SegmentOptions, segment
    from napari_diffseg.engine.inference import load_for_inference
    from napari_diffseg.models import default_model_path

    video = read(REAL / "video" / "vukicevic_clinical_sample2_proj1")
    model, ckpt = load_for_inference(default_model_path(), "cpu")
    seg = segment(model, video.frames[10:11], normalisation=ckpt.normalisation,
                  timesteps=ckpt.schedule["timesteps"],
                  options=SegmentOptions(steps=1, samples=1, seed=0, batch_size=1))
    assert seg.labels.shape == (1, 512, 512)
    assert np.isfinite(seg.entropy).all()
