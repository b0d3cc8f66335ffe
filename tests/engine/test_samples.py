"""Samples that are samples: a trained denoiser whose K samples part ways on an ambiguous
input and agree on an easy one, and the training options that make the denoiser read x_t.

The task is trivially simple so that a very tiny net learns it in ~100 iterations: 32 px frames
with one vertical bar. A bright bar is always labelled; a faint bar is labelled in half the
training frames (annotators disagree), so the right answer for it is "bar or no bar", which
only samples that commit to one or the other can express."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_diffseg.data.sequences import SparseDataset
from napari_diffseg.engine.inference import SegmentOptions, predict_normalised
from napari_diffseg.engine.training import (
    TrainOptions,
    pseudo_label_weight,
    shift_labels,
    swap_labels,
    train,
)
from napari_diffseg.model import DiffSegNet, ModelConfig

TINY2 = ModelConfig(width=16, depth=2, label_width=16, label_blocks=2, time_dim=32,
                    denoiser_stride=1, encoder_stride=1, num_classes=2)
SIZE = 32
EASY, FAINT = 0.8, 0.15


def _frame(rng, contrast):
    img = rng.normal(0, 0.1, (SIZE, SIZE)).astype(np.float32) - 0.5
    x = int(rng.integers(4, SIZE - 8))
    bar = np.zeros((SIZE, SIZE), bool)
    bar[:, x : x + 4] = True
    img[bar] += contrast
    return img, bar


def _bars(seed=0, n=64) -> SparseDataset:
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        faint = i % 2 == 1
        img, bar = _frame(rng, FAINT if faint else EASY)
        images.append(img)
        labels.append((bar & (not faint or i % 4 == 1)).astype(np.uint8))
    return SparseDataset(images=images, labels=labels, classes={0: "background", 1: "bar"})


@pytest.fixture(scope="module")
def bar_model():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    opts = TrainOptions(mode="supervised", iterations=120, batch_size=8, crop_size=SIZE,
                        lr=3e-3, device="cpu", val_every=0, seed=0)
    return train(_bars(), opts, model_config=TINY2).model


def _spread(model, options, contrast):
    rng = np.random.default_rng(99)
    images, bars = zip(*[_frame(rng, contrast) for _ in range(4)], strict=True)
    probs, entropy, mi = predict_normalised(model, np.stack(images), timesteps=10,
                                            options=options)
    bars = np.stack(bars)
    return float(probs[:, 1][bars].astype(np.float32).mean()), float(mi[bars].mean())


@pytest.mark.parametrize("options", [SegmentOptions(steps=4, samples=8, seed=0),
                                     SegmentOptions(steps=4, samples=8, seed=0, draw_x0=True)],
                         ids=["ddim", "draw_x0"])
def test_samples_differ_on_ambiguous_input_and_agree_on_easy(bar_model, options):
    p_easy, mi_easy = _spread(bar_model, options, EASY)
    p_faint, mi_faint = _spread(bar_model, options, FAINT)
    assert p_easy > 0.95 and mi_easy < 0.02  # every sample draws the bright bar
    assert 0.15 < p_faint < 0.85  # the faint bar: about as often drawn as not
    assert mi_faint > 0.2  # ... and the samples disagree (ln 2 = 0.69 at most)


def test_the_denoiser_reads_x_t_after_training(bar_model):
    """On the faint bar, the same frame from an x_t that says "bar" and one that says
    "background" must give different answers at mid noise: the trained network reads x_t."""
    rng = np.random.default_rng(5)
    img, bar = _frame(rng, FAINT)
    image = torch.from_numpy(img)[None, None]
    t = torch.tensor([0.5])
    with torch.no_grad():
        cond = bar_model.encode(image)
        answers = []
        for says_bar in (True, False):
            x0 = torch.full((1, 2, SIZE, SIZE), -1.0)
            x0[0, 1][torch.from_numpy(bar)] = 1.0 if says_bar else -1.0
            x0[0, 0] = -x0[0, 1]
            logits, _ = bar_model.denoise(x0 * 0.7, cond, t)
            answers.append(logits.softmax(dim=1)[0, 1][torch.from_numpy(bar)].mean().item())
    assert answers[0] - answers[1] > 0.3


@pytest.mark.parametrize("option", [
    {"shortcut_dropout": 0.5}, {"condition_dropout": 0.3}, {"high_t_fraction": 0.5},
    {"label_noise": 0.5}, {"label_swap": 0.5},
])
def test_training_options_for_x_t_dependence_train(option):
    opts = TrainOptions(mode="supervised", iterations=3, batch_size=2, crop_size=SIZE,
                        device="cpu", val_every=0, **option)
    result = train(_bars(n=4), opts, model_config=TINY2)
    assert np.isfinite(result.history[-1].losses["total"])


def test_dropped_shortcut_and_condition_change_the_output():
    torch.manual_seed(0)
    net = DiffSegNet(TINY2).eval()
    image = torch.randn(2, 1, SIZE, SIZE)
    x_t = torch.randn(2, 2, SIZE, SIZE)
    t = torch.tensor([0.5, 0.5])
    with torch.no_grad():
        ref, _ = net(image, x_t, t)
        same, _ = net(image, x_t, t, keep_shortcut=torch.ones(2))
        dropped, _ = net(image, x_t, t, keep_shortcut=torch.tensor([1.0, 0.0]))
        uncond, _ = net(image, x_t, t, keep_condition=torch.tensor([0.0, 1.0]))
        # row 0 without shortcut = head output: the image logits are what is missing
        cond = net.encode(image)
        head, _ = net.denoise(x_t, torch.cat([cond[:, :16], cond[:, 16:] * 0], dim=1), t)
    torch.testing.assert_close(same, ref)
    torch.testing.assert_close(dropped[0], ref[0])
    torch.testing.assert_close(dropped[1], head[1])
    assert not torch.allclose(uncond[0], ref[0]) and torch.allclose(uncond[1], ref[1])


def test_shift_labels_rolls_the_chosen_rows():
    labels = torch.zeros(4, 8, 8, dtype=torch.long)
    labels[:, 3:5, 3:5] = 1
    g = torch.Generator().manual_seed(0)
    out = shift_labels(labels, 1.0, g)
    assert (out.sum(dim=(1, 2)) == 4).all()  # a roll keeps every label
    assert torch.equal(shift_labels(labels, 0.0, g), labels)


def test_swap_labels_gives_other_rows_maps():
    labels = torch.arange(3)[:, None, None].expand(3, 4, 4).clone()
    g = torch.Generator().manual_seed(0)
    swapped = swap_labels(labels, 1.0, g)
    assert [int(swapped[i, 0, 0]) for i in range(3)] == [2, 0, 1]
    assert torch.equal(swap_labels(labels, 0.0, g), labels)


def test_pseudo_label_weights_gate_and_entropy_ramp():
    mean = torch.tensor([[0.99, 0.01], [0.85, 0.15], [0.7, 0.3], [0.5, 0.5]])  # 4 pixels
    mean = mean.T.reshape(1, 2, 1, 4)
    gate = pseudo_label_weight(mean, TrainOptions(pseudo_weighting="gate"))
    assert gate.flatten().tolist() == [1.0, 1.0, 0.0, 0.0]
    opts = TrainOptions(pseudo_weighting="entropy", uncertainty_low=0.75, uncertainty_high=1.0)
    late = pseudo_label_weight(mean, opts, progress=1.0).flatten()
    early = pseudo_label_weight(mean, opts, progress=0.0).flatten()
    assert late[0] > 0.9 and late[3] == pytest.approx(0.0, abs=1e-6)  # certain 1, chance 0
    assert torch.all(late[:-1] > late[1:])  # continuous, falling with the entropy
    assert torch.all(early <= late) and early[2] < late[2]  # the ramp admits more later
    assert torch.all((late >= 0) & (late <= 1))


def test_semi_supervised_training_with_uncertainty_weights():
    data = _bars(n=6)
    data.unlabelled = list(data.images[:3])
    opts = TrainOptions(mode="semi", iterations=3, batch_size=2, crop_size=SIZE, device="cpu",
                        val_every=0, rampup_fraction=0.0, pseudo_weighting="entropy")
    result = train(data, opts, model_config=TINY2)
    assert "pseudo" in result.history[-1].losses
    assert np.isfinite(result.history[-1].losses["pseudo"])
