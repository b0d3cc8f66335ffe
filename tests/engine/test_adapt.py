"""Adapting a model to one video: the fused pseudo-labels, and Dice rising with 0 verified
frames (a tiny untrained model on a small generated video)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from testutils import marking_and_bolus

from napari_diffseg.data import SyntheticConfig, generate_sequence
from napari_diffseg.data.sequences import DEFAULT_NORMALISATION, IGNORE_LABEL
from napari_diffseg.engine.adapt import (
    ADAPT_DEFAULTS,
    AdaptRequest,
    adapt_to_video,
    build_adapt_data,
    drop_static_pseudo_vessel,
    fuse_pseudo_labels,
    track_pseudo_wire,
)
from napari_diffseg.engine.checkpoint import (
    Checkpoint,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from napari_diffseg.engine.inference import SegmentOptions, segment
from napari_diffseg.engine.metrics import dice_iou
from napari_diffseg.engine.training import TrainOptions
from napari_diffseg.model import DiffSegNet, ModelConfig

CLASSES = {0: "background", 1: "vessel", 2: "catheter", 3: "guidewire"}
#: smaller than engine_testdata.TINY: the Dice test trains 40 iterations on a busy CPU
TINIEST = ModelConfig(num_classes=4, width=8, depth=2, label_width=8, label_blocks=1,
                      time_dim=16, denoiser_stride=1, encoder_stride=1)


@pytest.fixture(scope="module")
def video():
    return generate_sequence(SyntheticConfig(size=128, frames=8, seed=5))


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> str:
    torch.manual_seed(0)
    ckpt = Checkpoint(TINIEST.to_dict(), DiffSegNet(TINIEST).state_dict(), CLASSES,
                      dict(DEFAULT_NORMALISATION), {"timesteps": 10})
    return str(save_checkpoint(tmp_path_factory.mktemp("init") / "init.pt", ckpt))


def test_fusion_keeps_confident_devices_adds_prior_vessels_ignores_doubt():
    probs = np.zeros((1, 4, 1, 5), np.float32)
    probs[0, :, 0, 0] = [0.05, 0.05, 0.9, 0.0]  # confident catheter, on a ridge
    probs[0, :, 0, 1] = [0.9, 0.1, 0.0, 0.0]  # model says background, prior a strong ridge
    probs[0, :, 0, 2] = [0.5, 0.5, 0.0, 0.0]  # model unsure, prior: weak ridge, no mask
    probs[0, :, 0, 3] = [0.95, 0.05, 0.0, 0.0]  # both say background
    probs[0, :, 0, 4] = [0.5, 0.5, 0.0, 0.0]  # model unsure, prior flat: background
    vesselness = np.array([[[0.6, 0.5, 0.08, 0.0, 0.01]]], np.float32)
    mask = vesselness > 0.2
    labels, weights = fuse_pseudo_labels(probs, vesselness, mask)
    assert labels[0, 0].tolist() == [2, 1, IGNORE_LABEL, 0, 0]
    assert weights[0, 0, 2] == 0 and (weights[0, 0, [0, 1, 3, 4]] >= 0.5).all()


def _one_hot(labels: np.ndarray, p: float = 0.9) -> np.ndarray:
    """(T, H, W) labels -> (T, 4, H, W) probabilities with `p` on the label."""
    probs = np.full((labels.shape[0], 4) + labels.shape[1:], (1 - p) / 3, np.float32)
    for c in range(4):
        probs[:, c][labels == c] = p
    return probs


def test_pseudo_labels_lose_a_wire_only_drawn_inside_the_vessel():
    """The starting model draws a wire along the lumen of a video without one (frames 0-5):
    the pseudo-labels do not teach it, unless the user verified a frame with a wire."""
    model = np.zeros((6, 64, 64), np.uint8)
    model[:, 8:56, 28:33] = 1
    model[:, 10:50, 30] = 3
    labels = model.copy()
    stats = track_pseudo_wire(labels, _one_hot(model), list(range(6)), {}, 6, (3, 1))
    assert stats == {"kept_hidden": [], "dropped": [0, 1, 2, 3, 4, 5]}
    assert not (labels == 3).any() and (labels[:, 10:50, 30] == 1).all()
    # the user verified frame 6 with a wire in it: the video has one, it stays
    user = model[0].copy()
    labels = model.copy()
    stats = track_pseudo_wire(labels, _one_hot(model), list(range(6)), {6: user}, 7, (3, 1))
    assert stats == {"kept_hidden": [], "dropped": []} and (labels == model).all()
    # pixels the fusion left unknown stay unknown
    labels = model.copy()
    labels[:, 10:20, 30] = IGNORE_LABEL
    track_pseudo_wire(labels, _one_hot(model), list(range(6)), {}, 6, (3, 1))
    assert (labels[:, 10:20, 30] == IGNORE_LABEL).all() and (labels[:, 20:50, 30] == 1).all()


def test_pseudo_labels_do_not_teach_a_structure_there_before_the_contrast_as_vessel():
    """The prior and the model call a clip cluster / lung marking vessel in every frame and
    the tree only in frames 3-6, where it darkens: the pseudo-labels keep the tree and no
    longer teach the marking as vessel (unknown), and leave the user's verified frame and
    the pixels already unknown alone."""
    raw, labels, _, _ = marking_and_bolus()
    labels[:, 50:52, 0:4] = IGNORE_LABEL
    todo = [i for i in range(10) if i != 8]
    user = labels[8].copy()
    pseudo = labels[todo].copy()
    changed = drop_static_pseudo_vessel(pseudo, raw, todo, {8: user}, 1)
    assert changed == todo
    assert (pseudo[:, 20:24, 10:60] == IGNORE_LABEL).all()
    assert (pseudo[3:7, 60:68, 10:118] == 1).all()
    assert (pseudo[:, 50:52, 0:4] == IGNORE_LABEL).all()
    assert (user == labels[8]).all()


def test_pseudo_labels_regain_the_wire_hidden_by_the_bolus():
    """The wire is seen whole before and after the bolus (frames 0-1, 6-7) and drawn vessel
    under it (2-5): the pseudo-labels of 2-5 get it back, inside the vessel only."""
    model = np.zeros((8, 64, 64), np.uint8)
    model[:, 8:56, 30] = 3
    model[2:6, 8:56, 28:33] = 1
    labels = model.copy()
    stats = track_pseudo_wire(labels, _one_hot(model), list(range(8)), {}, 8, (3, 1))
    assert stats == {"kept_hidden": [2, 3, 4, 5], "dropped": []}
    assert (labels[2:6, 8:56, 30] == 3).all()
    gained = (labels == 3) & (model != 3)
    assert gained.any() and (model[gained] == 1).all()


def test_adapt_data_has_pseudo_labels_and_repeats_verified_frames(video, untrained):
    request = AdaptRequest(frames=video.frames, init=untrained, output="unused.pt",
                           verified={3: video.labels[3]}, segment_samples=1,
                           segment_steps=1, anchor_frames=0)
    data, stats = build_adapt_data(request)
    assert stats["pseudo_labelled"] == 7 and stats["verified"] == 1
    assert len(data.unlabelled) == 7 and len(data.images) == 7 + 7
    assert data.num_classes == 4  # the ignore value is not a class
    assert any((lab == IGNORE_LABEL).any() for lab in data.labels[:7])
    assert set(stats["wire_tracking"]) == {"kept_hidden", "dropped"}
    np.testing.assert_array_equal(data.labels[-1], video.labels[3])


def _dice(path: str, video) -> tuple[float, float]:
    """(vessel Dice, foreground Dice) of a checkpoint on the whole video."""
    ckpt = load_checkpoint(path)
    result = segment(build_model(ckpt), video.frames, normalisation=ckpt.normalisation,
                     timesteps=10, options=SegmentOptions(steps=2, samples=2))
    vessel = np.nanmean([dice_iou(p, t, [1])[1][0]
                         for p, t in zip(result.labels, video.labels, strict=True)])
    fg = np.nanmean([dice_iou(p > 0, t > 0, [1])[1][0]
                     for p, t in zip(result.labels, video.labels, strict=True)])
    return float(vessel), float(fg)


def test_adapting_with_no_verified_frame_raises_dice(video, untrained, tmp_path):
    """Measured (128 px wide-style, 8 frames, 40 iterations; a few seconds on the project's
    2-core CPU): vessel Dice 0.07 -> 0.25, foreground Dice 0.13 -> 0.54."""
    before = _dice(untrained, video)
    events: list[dict] = []
    options = TrainOptions(**{**ADAPT_DEFAULTS, "iterations": 40, "batch_size": 2,
                              "crop_size": 64, "lr": 1e-3, "pseudo_samples": 1,
                              "pseudo_steps": 1, "device": "cpu"})
    done = adapt_to_video(video.frames, untrained, tmp_path / "adapted.pt", {},
                          options=options, callback=events.append)
    assert done["path"] == str(tmp_path / "adapted.pt") and not done["stopped"]
    assert done["metrics"]["pseudo_labels"]["verified"] == 0
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "status" and "started" in kinds and kinds[-1] == "done"
    assert sum(k == "progress" for k in kinds) == 40
    after = _dice(done["path"], video)
    print(f"vessel Dice {before[0]:.3f} -> {after[0]:.3f}, foreground {before[1]:.3f} -> "
          f"{after[1]:.3f}")
    assert after[0] > before[0] + 0.08
    assert after[1] > before[1] + 0.2


def test_a_stop_while_making_pseudo_labels_writes_nothing(video, untrained, tmp_path):
    done = adapt_to_video(video.frames, untrained, tmp_path / "x.pt", should_stop=lambda: True)
    assert done["stopped"] and done["path"] is None and not (tmp_path / "x.pt").exists()
