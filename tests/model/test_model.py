"""Network, schedule, DDIM sampler and losses: shapes, the diffusion maths, loss behaviour."""

from __future__ import annotations

import pytest
import torch

from napari_diffseg.model import DDIMSampler, DiffSegNet, ModelConfig, NoiseSchedule
from napari_diffseg.model.losses import (
    PrototypeMemory,
    ce_dice_loss,
    labels_to_analog,
    masked_prototypes,
    prototype_consistency_loss,
    prototype_contrastive_loss,
)
from napari_diffseg.model.sampling import sample_probabilities

TINY = ModelConfig(num_classes=3, width=8, depth=2, label_width=8, label_blocks=2, time_dim=16)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("hw", [(32, 32), (16, 48)])
def test_network_shapes(in_channels, hw):
    cfg = ModelConfig(**{**TINY.to_dict(), "in_channels": in_channels})
    net = DiffSegNet(cfg)
    image = torch.randn(2, in_channels, *hw)
    features = net.encode(image)
    s = cfg.denoiser_stride
    cond_channels = cfg.label_width + cfg.num_classes * s * s
    assert features.shape == (2, cond_channels, hw[0] // s, hw[1] // s)
    x_t = torch.randn(2, cfg.num_classes, *hw)
    logits, latent = net.denoise(x_t, features, torch.tensor([0.1, 0.9]))
    assert logits.shape == (2, cfg.num_classes, *hw)
    assert latent.shape == (2, cfg.label_width, hw[0] // s, hw[1] // s)


def test_denoiser_depends_on_noisy_labels_and_time():
    torch.manual_seed(0)
    net = DiffSegNet(TINY)
    feats = net.encode(torch.randn(1, 1, 16, 16))
    x = torch.randn(1, 3, 16, 16)
    a, _ = net.denoise(x, feats, torch.tensor([0.5]))
    b, _ = net.denoise(-x, feats, torch.tensor([0.5]))
    c, _ = net.denoise(x, feats, torch.tensor([0.1]))
    assert not torch.allclose(a, b) and not torch.allclose(a, c)


def test_schedule_endpoints_and_q_sample():
    sched = NoiseSchedule(10)
    ab = sched.alpha_bar(torch.arange(0, 11))
    assert ab[0] > 0.999 and ab[-1] < 1e-3
    assert torch.all(ab[1:] < ab[:-1])  # monotone: more noise at larger t
    x0 = labels_to_analog(torch.randint(0, 3, (2, 8, 8)), 3)
    noise = torch.randn_like(x0)
    assert torch.allclose(sched.q_sample(x0, torch.tensor([0, 0]), noise), x0, atol=0.05)
    far = sched.q_sample(x0, torch.tensor([10, 10]), noise)
    assert torch.allclose(far, noise, atol=0.05)


@pytest.mark.parametrize("steps", [1, 2, 4, 10])
def test_ddim_step_grid_and_exact_x0(steps):
    sched = NoiseSchedule(10)
    sampler = DDIMSampler(sched, steps=steps)
    assert sampler.timesteps[0][0] == 10 and sampler.timesteps[-1][1] == 0
    assert len(sampler.timesteps) == steps
    # with a perfect x0 prediction, DDIM from the forward-noised x_t lands on x0
    x0 = labels_to_analog(torch.randint(0, 3, (1, 8, 8)), 3)
    noise = torch.randn_like(x0)
    x = sched.q_sample(x0, torch.tensor([10]), noise)
    for t, t_prev in sampler.timesteps:
        x = sampler.step(x, x0, t, t_prev)
        if t_prev:
            expected = sched.q_sample(x0, torch.tensor([t_prev]), noise)
            assert torch.allclose(x, expected, atol=1e-4)
    assert torch.equal(x, x0)


def test_ddim_rejects_more_steps_than_timesteps():
    with pytest.raises(ValueError, match="steps"):
        DDIMSampler(NoiseSchedule(4), steps=5)


def test_sampling_is_seeded_and_reuses_features():
    torch.manual_seed(0)
    net = DiffSegNet(TINY).eval()
    feats = net.encode(torch.randn(1, 1, 16, 16)).repeat(3, 1, 1, 1)
    sampler = DDIMSampler(NoiseSchedule(10), steps=3)
    p1 = sample_probabilities(net, feats, sampler, torch.Generator().manual_seed(5))
    p2 = sample_probabilities(net, feats, sampler, torch.Generator().manual_seed(5))
    assert p1.shape == (3, 3, 16, 16)
    assert torch.equal(p1, p2)
    assert torch.allclose(p1.sum(dim=1), torch.ones(3, 16, 16), atol=1e-5)


def test_ce_dice_is_low_for_the_right_answer_and_ignores_zero_weight():
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, 2:5, 2:5] = 1
    good = labels_to_analog(target, 2) * 20
    bad = -good
    assert ce_dice_loss(good, target) < 0.05 < ce_dice_loss(bad, target)
    weight = torch.zeros(1, 8, 8)
    assert ce_dice_loss(bad, target, weight=weight) == 0


def test_prototype_losses_pull_features_to_their_class():
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    labels[:, :, 4:] = 1
    mask = torch.ones_like(labels, dtype=torch.bool)
    aligned = labels_to_analog(labels, 2)  # feature = one-hot: perfectly clustered
    protos, present = masked_prototypes(aligned, labels, mask, 2)
    assert present.tolist() == [True, True]
    good = prototype_contrastive_loss(aligned, labels, mask, protos, present)
    wrong = prototype_contrastive_loss(aligned, 1 - labels, mask, protos, present)
    assert good < 0.01 < wrong
    assert prototype_consistency_loss(protos, present, protos, present) < 1e-6
    assert prototype_consistency_loss(protos, present, protos.flip(0), present) > 1.0


def test_prototype_memory_keeps_absent_classes():
    memory = PrototypeMemory(3, 4, momentum=0.5)
    memory.update(torch.eye(4)[:3], torch.tensor([True, True, False]))
    assert memory.initialised.tolist() == [True, True, False]
    memory.update(torch.eye(4)[[1, 0, 2]], torch.tensor([True, False, True]))
    assert torch.allclose(memory.prototypes[1], torch.eye(4)[1])  # untouched: absent
    assert torch.allclose(memory.prototypes[2], torch.eye(4)[2])  # first sighting
    assert memory.prototypes[0].norm() == pytest.approx(1.0)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_folded_sampler_matches_the_full_resolution_ddim_loop(eta):
    """The sampler keeps label maps s x s folded and fuses the DDIM update; the result must be
    the textbook loop's: unfold, denoise at full resolution, x0 = 2p - 1, DDIM step."""
    torch.manual_seed(0)
    net = DiffSegNet(TINY).eval()
    assert net.config.denoiser_stride > 1 and net.config.encoder_stride > 1
    sampler = DDIMSampler(NoiseSchedule(10), steps=3, eta=eta)
    cond = net.encode(torch.randn(2, 1, 16, 24))
    fast = sample_probabilities(net, cond, sampler, torch.Generator().manual_seed(5))

    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        x = net.unfold(torch.randn(net.folded_label_shape(cond), generator=gen))
        for t, t_prev in sampler.timesteps:
            logits, _ = net.denoise(x, cond, torch.full((2,), t / 10))
            probs = logits.softmax(dim=1)
            noise = None
            if eta > 0:
                noise = net.unfold(torch.randn(net.folded_label_shape(cond), generator=gen))
            x = sampler.step(x, probs * 2 - 1, t, t_prev, noise)
    assert fast.shape == probs.shape == (2, 3, 16, 24)
    torch.testing.assert_close(fast, probs, atol=1e-5, rtol=1e-4)


def test_ignored_pixels_take_no_part_in_the_supervised_loss():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 4, 4)
    target = torch.randint(0, 3, (1, 4, 4))
    partial = target.clone()
    partial[0, :2] = 255  # unknown
    changed = target.clone()
    changed[0, :2] = (target[0, :2] + 1) % 3  # anything under the unknown pixels
    a = ce_dice_loss(logits, partial, ignore_index=255)
    b = ce_dice_loss(logits, target, weight=(partial != 255).float())
    c = ce_dice_loss(logits, changed, weight=(partial != 255).float())
    assert torch.allclose(a, b) and torch.allclose(b, c)
    analog = labels_to_analog(partial, 3, ignore_index=255)
    assert analog[0, :, :2].abs().max() == 0 and analog[0, :, 2:].abs().min() == 1
