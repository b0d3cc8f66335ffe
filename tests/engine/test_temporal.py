"""Temporal context (the model sees frames t - 1 and t + 1) and anchored pseudo-labels (the
verified frames' labels carried along the video's motion), issue 14 point 2."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from engine_testdata import mask_dice as dice
from engine_testdata import shifted_video

from napari_diffseg.data import SyntheticConfig, generate_sequence
from napari_diffseg.data.sequences import (
    DEFAULT_NORMALISATION,
    IGNORE_LABEL,
    SparseDataset,
    context_indices,
    context_stack,
)
from napari_diffseg.engine.adapt import AdaptRequest, build_adapt_data
from napari_diffseg.engine.augment import crop_plan
from napari_diffseg.engine.checkpoint import Checkpoint, save_checkpoint
from napari_diffseg.engine.finetune import FinetuneRequest, build_finetune_data, run_finetune
from napari_diffseg.engine.inference import SegmentOptions, segment
from napari_diffseg.engine.propagate import anchor_targets
from napari_diffseg.engine.training import Trainer, TrainOptions
from napari_diffseg.model import DiffSegNet, ModelConfig, expand_context

CLASSES = {0: "background", 1: "vessel", 2: "catheter", 3: "guidewire"}
TINY = ModelConfig(num_classes=4, width=8, depth=2, label_width=8, label_blocks=1,
                   time_dim=16, denoiser_stride=2, encoder_stride=1)


@pytest.fixture(scope="module")
def shifted():
    """A 7-frame 96 px video moved by SHIFT per frame (engine_testdata.shifted_video)."""
    return shifted_video(7)


def test_context_indices_replicate_the_frame_beyond_the_ends():
    table = context_indices([0, 2, 4], 5, 1)
    assert table.tolist() == [[0, 0, 1], [2, 1, 3], [4, 3, 4]]
    assert context_indices([1], 3, 2).tolist() == [[1, 0, 2, 1, 1]]
    frames = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 2, 3), np.float32)
    stacks = context_stack(frames, 1)
    assert stacks.shape == (4, 3, 2, 3)
    assert stacks[:, :, 0, 0].tolist() == [[0, 0, 1], [1, 0, 2], [2, 1, 3], [3, 2, 3]]
    assert context_stack(frames, 0) is frames


def test_an_expanded_model_answers_as_the_frame_wise_one_until_trained():
    torch.manual_seed(0)
    flat = DiffSegNet(TINY).eval()
    wide = expand_context(flat, 1).eval()
    assert wide.config.context_frames == 1 and wide.config.image_channels == 3
    frame, x_t = torch.randn(2, 1, 32, 32), torch.randn(2, 4, 32, 32)
    neighbours = torch.randn(2, 2, 32, 32)  # anything: the new inputs start with no weight
    t = torch.tensor([0.3, 0.9])
    with torch.no_grad():
        a, _ = flat(frame, x_t, t)
        b, _ = wide(torch.cat([frame, neighbours], dim=1), x_t, t)
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="cannot reduce"):
        expand_context(wide, 0)


def test_a_context_model_reads_its_neighbours_and_no_further():
    """With context 1, frame 3's answer changes when frame 4 changes, not when frame 5 does
    (each change is a flip: the video's intensity percentiles stay the same)."""
    torch.manual_seed(1)
    model = DiffSegNet(ModelConfig(**{**TINY.to_dict(), "context_frames": 1})).eval()
    seq = generate_sequence(SyntheticConfig(size=64, frames=7, seed=2))

    def probs_of_frame_3(frames):
        return segment(model, frames, normalisation=dict(DEFAULT_NORMALISATION), timesteps=10,
                       options=SegmentOptions(steps=1, samples=1, seed=0)).probabilities[3]

    base = probs_of_frame_3(seq.frames)
    far, near = seq.frames.copy(), seq.frames.copy()
    far[5], near[4] = far[5][::-1], near[4][::-1]
    np.testing.assert_array_equal(probs_of_frame_3(far), base)
    assert np.abs(probs_of_frame_3(near).astype(np.float32) - base).max() > 1e-3
    # a single image works: its neighbours are itself
    one = segment(model, seq.frames[:1], normalisation=dict(DEFAULT_NORMALISATION),
                  timesteps=10, options=SegmentOptions(steps=1, samples=1, tta=2))
    assert one.labels.shape == (1, 64, 64)


def test_training_refuses_frames_without_the_models_context():
    data = SparseDataset(images=[np.zeros((64, 64), np.float32)],
                         labels=[np.zeros((64, 64), np.uint8)], classes=dict(CLASSES))
    with pytest.raises(ValueError, match="neighbouring frame"):
        Trainer(data, TrainOptions(mode="supervised", iterations=1, context_frames=1,
                                   device="cpu"), model_config=TINY)


def test_context_dropout_shows_rows_their_frame_in_place_of_the_neighbours():
    stack = np.stack([np.full((32, 32), v, np.float32) for v in (0.0, -1.0, 1.0)])
    data = SparseDataset(images=[stack], labels=[np.zeros((32, 32), np.uint8)],
                         classes=dict(CLASSES), context_frames=1)
    for p, expect_neighbours in ((0.0, True), (1.0, False)):
        trainer = Trainer(data, TrainOptions(mode="supervised", iterations=1, batch_size=4,
                                             crop_size=32, context_frames=1,
                                             context_dropout=p, device="cpu"),
                          model_config=TINY)
        x = trainer._input(np.stack([stack] * 4))
        assert x.shape == (4, 3, 32, 32)
        assert bool((x[:, 1] == -1).all()) is expect_neighbours
        assert bool((x[:, 1] == 0).all()) is not expect_neighbours


def test_fine_tuning_a_frame_wise_model_with_context_gives_a_temporal_model(tmp_path):
    torch.manual_seed(0)
    init = save_checkpoint(tmp_path / "init.pt", Checkpoint(
        TINY.to_dict(), DiffSegNet(TINY).state_dict(), CLASSES, dict(DEFAULT_NORMALISATION),
        {"timesteps": 10}))
    seq = generate_sequence(SyntheticConfig(size=64, frames=8, seed=4))
    data, val = build_finetune_data(seq.frames, seq.labels, [0, 6], classes=CLASSES,
                                    context_frames=1, anchor_frames=2)
    assert data.images[0].shape == (3, 64, 64) and data.context_frames == 1
    assert len(data.unlabelled_anchors) == len(data.unlabelled) == 6
    # frames 1, 2 from 0; 4, 5, 7 from 6; frame 3 is 3 away from both
    assert sum(a is not None for a in data.unlabelled_anchors) == 5
    done = run_finetune(FinetuneRequest(
        data=data, val=None, output=str(tmp_path / "tuned.pt"), init=str(init),
        options=TrainOptions(mode="semi", iterations=3, batch_size=2, crop_size=32,
                             context_frames=1, val_every=0, device="cpu")),
        emit=lambda event: None)
    from napari_diffseg.engine.checkpoint import load_checkpoint

    tuned = load_checkpoint(done["path"])
    assert tuned.model_config["context_frames"] == 1
    assert tuned.state_dict["encoder.stem.weight"].shape[1] == 3


def test_anchors_follow_a_known_shift_and_lose_confidence_with_distance(shifted):
    frames, truth = shifted
    anchors = anchor_targets(frames, truth, [0, 6], distance=2)
    assert sorted(anchors) == [1, 2, 4, 5]  # frame 3 is 3 away from both sources
    inner = (slice(12, -12), slice(12, -12))
    for index, (labels, confidence) in anchors.items():
        assert labels.dtype == np.uint8 and confidence.shape == labels.shape
        assert dice(labels[inner], truth[index][inner]) > 0.85, index
        assert 0.0 <= float(confidence.min()) and float(confidence.max()) <= 1.0
    mean = {i: float(anchors[i][1][inner].mean()) for i in anchors}
    assert mean[1] > mean[2] and mean[5] > mean[4]
    assert mean[1] > 0.5


def test_confident_anchors_replace_the_teachers_pseudo_labels():
    h = 32
    label = np.full((h, h), 2, np.uint8)
    confidence = np.zeros((h, h), np.float16)
    confidence[:, : h // 2] = 0.9  # trusted on the left half only
    frames = [np.zeros((h, h), np.float32)] * 2
    data = SparseDataset(images=[frames[0]], labels=[np.zeros((h, h), np.uint8)],
                         unlabelled=frames, unlabelled_anchors=[(label, confidence), None],
                         classes=dict(CLASSES))
    trainer = Trainer(data, TrainOptions(mode="semi", iterations=1, batch_size=2, crop_size=h,
                                         device="cpu"), model_config=TINY)
    plan = [(0, 0, 0, 0, False), (1, 0, 0, 0, False)]
    pseudo = torch.zeros((2, h, h), dtype=torch.long)
    weight = torch.full((2, h, h), 0.3)
    out, w = trainer._anchor(plan, pseudo, weight)
    assert (out[0, :, : h // 2] == 2).all() and (out[0, :, h // 2 :] == 0).all()
    assert torch.allclose(w[0, :, : h // 2], torch.tensor(0.9), atol=1e-3)
    assert (w[0, :, h // 2 :] == 0.3).all()
    assert (out[1] == 0).all() and (w[1] == 0.3).all()  # no anchor: the teacher's
    # the crop plan is the same random choices as random_crops made before anchors existed
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    assert crop_plan(rng_a, frames, None, 4, 16) == crop_plan(rng_b, frames, None, 4, 16)


def test_adapting_with_anchors_puts_the_verified_labels_on_the_neighbours(shifted, tmp_path):
    """An untrained model's pseudo-labels are noise; anchors from the verified frame make
    the frames next to it right."""
    frames, truth = shifted
    torch.manual_seed(0)
    init = save_checkpoint(tmp_path / "init.pt", Checkpoint(
        TINY.to_dict(), DiffSegNet(TINY).state_dict(), CLASSES, dict(DEFAULT_NORMALISATION),
        {"timesteps": 10}))
    inner = (slice(12, -12), slice(12, -12))

    def neighbour_dice(anchor_frames: int) -> float:
        request = AdaptRequest(frames=frames, init=str(init), output="unused.pt",
                               verified={0: truth[0]}, segment_samples=1, segment_steps=1,
                               anchor_frames=anchor_frames)
        data, stats = build_adapt_data(request)
        assert stats["anchored_frames"] == anchor_frames
        lab = np.where(data.labels[0] == IGNORE_LABEL, 0, data.labels[0])  # frame 1
        return dice(lab[inner], truth[1][inner])

    without, with_anchors = neighbour_dice(0), neighbour_dice(2)
    assert with_anchors > 0.8 and with_anchors > without + 0.2, (without, with_anchors)


def test_evaluate_scores_each_annotated_frame_beside_its_real_neighbours():
    """`evaluate` must score the labels `segment` gives on the whole video: a temporal model
    sees frames t ± 1 (not the next annotated frame) and the video's intensity range."""
    from napari_diffseg.engine.evaluation import evaluate_videos
    from napari_diffseg.engine.metrics import evaluate_frames
    from napari_diffseg.io.core import numbered_video

    torch.manual_seed(3)
    model = DiffSegNet(ModelConfig(**{**TINY.__dict__, "context_frames": 1})).eval()
    seq = generate_sequence(SyntheticConfig(size=48, frames=9, seed=5, difficulty=0.5))
    ckpt = SimpleNamespace(classes=dict(CLASSES), normalisation=dict(DEFAULT_NORMALISATION),
                           schedule={"timesteps": 100})
    annotated = [0, 4, 8]
    video = numbered_video(seq.frames, Path("clip.tif"), "tiff")
    video.labels = np.zeros_like(seq.labels)
    video.labels[annotated] = seq.labels[annotated]
    video.labelled = annotated
    options = SegmentOptions(steps=2, samples=2, seed=0, batch_size=2)
    whole = segment(model, seq.frames, normalisation=ckpt.normalisation, timesteps=100,
                    options=options)
    expected = evaluate_frames(whole.labels[annotated], seq.labels[annotated], CLASSES)
    alone = segment(model, seq.frames[annotated], normalisation=ckpt.normalisation,
                    timesteps=100, options=options)
    assert not np.array_equal(alone.labels, whole.labels[annotated])  # the test can fail
    got = evaluate_videos(model, ckpt, [video], options)
    assert got.to_dict() == expected.to_dict()
