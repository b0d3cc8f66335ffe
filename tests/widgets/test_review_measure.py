"""The review follows the chosen uncertainty: frame scores, per-class columns and overlay are
the engine's review measure (diffusion mutual information, or test-time augmentation)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_diffseg.engine.inference import iter_segment, load_for_inference, review_options
from napari_diffseg.widgets import DiffSegWidget

PLUGIN = "napari-diffseg"


@pytest.mark.parametrize("mode", ["samples", "tta"])
def test_dock_ranks_frames_by_the_chosen_score(make_napari_viewer, qtbot, video_file,
                                                tiny_checkpoint, mode):
    path, _frames, _labels = video_file
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin=PLUGIN)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Diffusion segmentation")
    assert isinstance(dock, DiffSegWidget)
    dock.model_edit.setText(str(tiny_checkpoint))
    dock.steps_spin.setValue(2)
    dock.samples_spin.setValue(2)
    dock.uncertainty_choice.setCurrentIndex(dock.uncertainty_choice.findData(mode))
    assert dock.start_segmentation("all") is not None
    qtbot.waitUntil(lambda: dock.segment_worker is None, timeout=60_000)

    # what the engine gives for the review measure, frame by frame
    model, ckpt = load_for_inference(tiny_checkpoint, "cpu")
    options = review_options(mode, steps=2, samples=2, seed=0, min_component=16)
    chunks = list(iter_segment(model, dock.session.frames, normalisation=ckpt.normalisation,
                               timesteps=10, options=options))
    scores = np.concatenate([c.frame_scores for c in chunks])
    overlay = np.concatenate([c.uncertainty for c in chunks])
    per_class = np.concatenate([c.class_scores for c in chunks])

    state = dock.session.state
    np.testing.assert_allclose(np.array(state.frame_scores, dtype=float), scores, rtol=1e-4)
    rows = [frame for frame, _ in dock.review.rows()]
    assert rows == list(np.argsort(-scores, kind="stable"))
    unc = np.asarray(viewer.layers["run1 uncertainty"].data)
    np.testing.assert_allclose(unc, overlay, atol=1e-3)
    got = np.array([[np.nan if v is None else v for v in row] for row in state.class_scores])
    np.testing.assert_allclose(got, per_class, rtol=1e-4, equal_nan=True)
    if mode == "samples":  # the overlay is the samples' disagreement, not the entropy
        assert np.all(unc <= np.concatenate([c.entropy for c in chunks]) + 1e-5)


def test_show_k_samples_draws_the_frames_samples_beside_it(make_napari_viewer, qtbot,
                                                           video_file, tiny_checkpoint):
    from napari_diffseg.engine.inference import SegmentOptions, frame_samples
    from napari_diffseg.widgets._samples_view import GAP

    path, _frames, _labels = video_file
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin=PLUGIN)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Diffusion segmentation")
    dock.model_edit.setText(str(tiny_checkpoint))
    dock.steps_spin.setValue(2)
    dock.samples_spin.setValue(3)
    dock.go_to_frame(5)
    dock.review.show_samples.setChecked(True)
    qtbot.waitUntil(lambda: "run1 samples" in viewer.layers, timeout=60_000)
    layer = viewer.layers["run1 samples"]
    assert layer.metadata["frame"] == 5
    data = np.asarray(layer.data)
    assert data.shape == (64, 3 * 64 + 2 * GAP)
    assert tuple(layer.translate) == (0.0, 64.0 + GAP)  # beside the frame, not on it
    model, ckpt = load_for_inference(tiny_checkpoint, "cpu")
    expected = frame_samples(model, dock.session.frames, 5, normalisation=ckpt.normalisation,
                             timesteps=10, options=SegmentOptions(steps=2, samples=3))
    for k in range(3):
        np.testing.assert_array_equal(data[:, k * (64 + GAP) : k * (64 + GAP) + 64], expected[k])
    assert (expected[0] != expected[1]).any()  # three samples, not one drawn thrice
    dock.go_to_frame(2)  # follows the frame on screen
    qtbot.waitUntil(lambda: viewer.layers["run1 samples"].metadata["frame"] == 2,
                    timeout=60_000)
    dock.review.show_samples.setChecked(False)
    assert "run1 samples" not in viewer.layers
