"""Crops and class weights of the training recipe for thin, rare classes."""

from __future__ import annotations

import numpy as np
import torch

from napari_diffseg.engine.augment import class_weights, crop_plan, random_crops
from napari_diffseg.model.losses import ce_dice_loss


def _frame_with_a_wire(size=128):
    """A 128 px frame: a 3 px vessel band (1) and a single-pixel wire column (3) at x=100."""
    labels = np.zeros((size, size), np.uint8)
    labels[60:63, :] = 1
    labels[:, 100] = 3
    return np.zeros((size, size), np.float32), labels


def test_foreground_crops_find_the_rare_class_far_more_often():
    image, labels = _frame_with_a_wire()
    rng = np.random.default_rng(0)
    _, uniform = random_crops(rng, [image], [labels], 200, 16)
    _, biased = random_crops(rng, [image], [labels], 200, 16, foreground=1.0)
    hit_uniform = np.mean([(crop == 3).any() for crop in uniform])
    hit_biased = np.mean([(crop == 3).any() for crop in biased])
    assert hit_uniform < 0.25  # 16 / 113 possible columns
    assert hit_biased > 0.45   # about half the biased crops pick the wire class
    # every crop still holds real label values (no padding, no out-of-range corner)
    assert set(np.unique(biased)) <= {0, 1, 3}


def test_a_crop_margin_shows_the_frame_border_about_half_as_often_as_its_centre():
    """Crops of 32 px from a 128 px frame: without a margin the last row is in 1 crop of 97,
    a central row in 32 of 97; with margin 0.5 the border row's share rises to about half the
    centre's, and every crop still lies inside the frame."""
    image = np.zeros((128, 128), np.float32)

    def coverage(margin):
        plan = crop_plan(np.random.default_rng(1), [image], None, 4000, 32, margin=margin)
        tops = np.array([y for _, y, _, _, _ in plan])
        lefts = np.array([x for _, _, x, _, _ in plan])
        assert tops.min() >= 0 and tops.max() <= 96 and lefts.min() >= 0 and lefts.max() <= 96
        last = np.mean(tops == 96)  # crops holding row 127
        centre = np.mean((tops <= 64) & (tops > 64 - 32))  # crops holding row 64
        return last, centre

    last, centre = coverage(0.0)
    assert last < 0.05 * centre
    last, centre = coverage(0.5)
    assert 0.35 * centre < last < 0.75 * centre


def test_class_weights_lift_rare_classes_and_keep_background_at_one():
    _, labels = _frame_with_a_wire()
    w = class_weights([labels], 4, power=0.5)
    assert w[0] == 1.0
    assert 1.0 < w[1] < w[3] <= 10.0
    assert w[2] == 1.0  # absent class: left alone
    assert np.allclose(class_weights([labels], 4, power=0.0), 1.0)


def test_class_weight_raises_the_loss_of_missing_a_rare_class():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, :, 4] = 3
    logits = torch.zeros(1, 4, 8, 8)
    logits[:, 0] = 5.0  # predicts background everywhere: misses the wire
    plain = ce_dice_loss(logits, target, dice_weight=0)
    weighted = ce_dice_loss(logits, target, dice_weight=0,
                            class_weight=torch.tensor([1.0, 1.0, 1.0, 10.0]))
    assert weighted > 5 * plain
