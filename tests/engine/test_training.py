"""Training lowers the loss, beats a trivial predictor, uses unlabelled frames, stops, resumes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_testdata import TINY, synthetic_video

from napari_diffseg.data.sequences import dataset_from_videos
from napari_diffseg.engine.checkpoint import load_checkpoint, save_checkpoint
from napari_diffseg.engine.training import TrainOptions, sigmoid_rampup, train, validation_dice
from napari_diffseg.model import DiffSegNet, ModelConfig


def _opts(**kw) -> TrainOptions:
    base = {"iterations": 20, "batch_size": 4, "crop_size": 64, "device": "cpu", "val_every": 0}
    return TrainOptions(**{**base, **kw})


def test_supervised_training_lowers_loss_and_beats_trivial(train_set, val_set):
    untrained = DiffSegNet(ModelConfig(**{**TINY.to_dict(), "num_classes": 4}))
    before = validation_dice(untrained, val_set, timesteps=10, steps=4, samples=1, seed=0)
    result = train(train_set, _opts(mode="supervised", iterations=150, val_every=150,
                                    lr_schedule="constant"),
                   model_config=TINY, val=val_set)
    losses = [h.losses["total"] for h in result.history]
    assert np.mean(losses[-20:]) < 0.7 * np.mean(losses[:20])
    after = result.checkpoint.metrics["val_dice"]
    # trivial predictor (all background) scores Dice 0 on every foreground class; the
    # untrained net 0.04-0.07. After 150 iterations this tiny net scored 0.16-0.29 over six
    # runs (training seeds 0-2, crop corners drawn with and without crop_margin, which here
    # only changes the random stream: the crop is the whole 64 px frame), 0.29 being seed 0's
    # earlier stream; the bound sits below that spread, far above the untrained net
    assert after > 0.14 and after > before + 0.08, (before, after)


def test_semi_supervised_uses_the_unlabelled_frames(train_set):
    other = dataset_from_videos([synthetic_video(1), synthetic_video(2)], "b")
    other.unlabelled = [np.flip(f, axis=1).copy() for f in other.unlabelled]  # other frames
    opts = _opts(mode="semi", iterations=12, rampup_fraction=0.0, confidence_threshold=0.0)
    a = train(train_set, opts, model_config=TINY)
    a2 = train(train_set, opts, model_config=TINY)
    b = train(other, opts, model_config=TINY)
    assert {"pseudo", "prototype", "prototype_consistency"} <= set(a.history[-1].losses)

    def weights(r):
        return torch.cat([v.flatten().float() for v in r.checkpoint.state_dict.values()])

    assert torch.equal(weights(a), weights(a2))  # same data, same seed: same result
    assert not torch.allclose(weights(a), weights(b))  # only the unlabelled frames differ


def test_supervised_mode_ignores_unlabelled_frames(train_set):
    other = dataset_from_videos([synthetic_video(1), synthetic_video(2)], "b")
    other.unlabelled = other.unlabelled[:1]
    a = train(train_set, _opts(mode="supervised", iterations=5), model_config=TINY)
    b = train(other, _opts(mode="supervised", iterations=5), model_config=TINY)
    for k, v in a.checkpoint.state_dict.items():
        assert torch.equal(v, b.checkpoint.state_dict[k])


def test_stop_between_iterations_and_resume(train_set, tmp_path):
    seen = []
    result = train(train_set, _opts(mode="semi", iterations=10), model_config=TINY,
                   callback=seen.append, should_stop=lambda: len(seen) >= 4)
    assert result.stopped_early and [p.iteration for p in seen] == [1, 2, 3, 4]
    path = save_checkpoint(tmp_path / "partial.pt", result.checkpoint)
    resumed = train(train_set, _opts(mode="semi", iterations=10),
                    resume=load_checkpoint(path))
    assert [p.iteration for p in resumed.history] == list(range(5, 11))
    assert resumed.checkpoint.training_state["iteration"] == 10


def test_fine_tuning_starts_from_the_initial_weights(train_set):
    first = train(train_set, _opts(mode="supervised", iterations=3), model_config=TINY)
    tuned = train(train_set, _opts(mode="supervised", iterations=0), init=first.checkpoint)
    for k, v in first.checkpoint.state_dict.items():
        assert torch.equal(v, tuned.checkpoint.state_dict[k])
    assert tuned.checkpoint.classes == first.checkpoint.classes


def test_options_are_validated():
    with pytest.raises(ValueError, match="mode"):
        TrainOptions(mode="weird")
    assert sigmoid_rampup(0, 10) < 0.01 and sigmoid_rampup(10, 10) == 1.0


def test_the_thin_class_recipe_trains_and_lowers_the_loss(train_set, val_set):
    """Foreground crops, class-weighted CE and augmented labelled crops: still a working run."""
    opts = _opts(mode="supervised", iterations=120, lr_schedule="constant",
                 foreground_crops=0.5, class_weight_power=0.5, augment_labelled=True,
                 val_every=120)
    result = train(train_set, opts, model_config=TINY, val=val_set)
    losses = [h.losses["total"] for h in result.history]
    assert np.isfinite(losses).all()
    assert np.mean(losses[-20:]) < 0.8 * np.mean(losses[:20])
    assert result.checkpoint.metrics["val_dice"] > 0.2


def test_a_checkpoint_taken_during_training_keeps_its_weights(train_set):
    """On the CPU, .cpu() returns the live tensors: a checkpoint kept while training goes on
    (the fine-tune's best so far) must not follow the weights to the end of the run."""
    seen = []
    result = train(train_set, _opts(iterations=3, lr_schedule="constant"), model_config=TINY,
                   checkpoint_every=1, on_checkpoint=seen.append)
    assert [c.metrics["iterations"] for c in seen] == [1, 2, 3]
    first, last = seen[0].state_dict, result.checkpoint.state_dict
    assert any(not torch.equal(first[k], last[k]) for k in first)
    assert all(torch.equal(seen[-1].state_dict[k], last[k]) for k in last)


def test_validation_does_not_swing_on_a_speck_or_one_frame(monkeypatch):
    """Validation picks the weights a fine-tune keeps from a few verified frames: a speck
    goes as it goes from the labels, and a blob in a frame without that class costs its
    pixels, not the whole class (one Dice per class over all the frames' pixels)."""
    from napari_diffseg.data.sequences import SparseDataset
    from napari_diffseg.engine import training

    truth = np.zeros((2, 256, 256), np.uint8)
    truth[0, 40:60, 20:220] = 1  # a vessel in frame 0 (4,000 px); frame 1: no vessel
    truth[:, 100:104, 10:250] = 2  # a catheter in both
    pred = truth.copy()
    pred[1, 200:202, 30:32] = 3  # a 4 px guidewire speck (under 64 px at 512²: 16 here)
    pred[1, 150:170, 150:170] = 1  # a 400 px vessel blob where there is none
    model = DiffSegNet(ModelConfig(**{**TINY.to_dict(), "num_classes": 4}))

    def fake_predict(model, images, *, timesteps, options):
        probs = np.eye(4, dtype=np.float16)[pred[: len(images)]].transpose(0, 3, 1, 2)
        return probs, None, None

    monkeypatch.setattr(training, "predict_normalised", fake_predict)
    data = SparseDataset(images=[np.zeros((256, 256), np.float32)] * 2, labels=list(truth),
                         classes={0: "background", 1: "vessel", 2: "catheter", 3: "guidewire"})
    dice = training.validation_dice(model, data, timesteps=10, steps=1, samples=1, seed=0)
    vessel = 2 * 4000 / (4000 + 4400)
    assert dice == pytest.approx((vessel + 1.0) / 2)  # no guidewire class; catheter perfect
    # frame by frame with the speck, it was (0 + 0.5 * 1 + 1) / 3 = 0.5
