"""The sampler loop: network + schedule + DDIM step, on precomputed image features."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .network import DiffSegNet
from .schedule import DDIMSampler


@torch.no_grad()
def sample_probabilities(
    net: DiffSegNet,
    features: torch.Tensor,
    sampler: DDIMSampler,
    generator: torch.Generator | None = None,
    on_step: Callable[[int], None] | None = None,
    noise: torch.Tensor | None = None,
    draw_x0: bool = False,
) -> torch.Tensor:
    """Draw one label-map sample per row of `features` by DDIM from pure noise.

    features: conditioning from ``net.encode`` (repeat rows for several samples of a frame)
    on_step: called with the number of finished steps after each step (a caller may raise
        from it to abandon the sampling)
    noise: the initial noise, folded (B, C s², H/s, W/s); default: drawn from `generator`
    draw_x0: at every step but the last, commit each pixel to one class drawn from its
        predicted probabilities (the update then moves toward that one-hot map instead of
        the probabilities' mean): where the network hesitates, samples part ways
    returns: (B, C, H, W) class probabilities of the final denoised prediction.
    """
    # the whole loop runs on s x s folded maps: softmax and the DDIM update are per pixel, so
    # the layout does not change them, and no step pays for unfolding and refolding
    b, cs2, h, w = shape = net.folded_label_shape(features)
    c = net.config.num_classes
    if noise is None:
        x = torch.randn(shape, generator=generator, device=features.device)
    else:
        if tuple(noise.shape) != tuple(shape):
            raise ValueError(f"noise of shape {tuple(noise.shape)}, expected {tuple(shape)}")
        x = noise
    probs = torch.full(shape, 1.0 / c, device=features.device)
    for done, (t, t_prev) in enumerate(sampler.timesteps, start=1):
        t_cont = torch.full((b,), t / sampler.schedule.timesteps, device=features.device)
        logits, _ = net.denoise_folded(x, features, t_cont)
        probs = logits.float().view(b, c, cs2 // c, h, w).softmax(dim=1).view(shape)
        step_noise = None
        if sampler.eta > 0:
            step_noise = torch.randn(x.shape, generator=generator, device=x.device)
        target = probs
        if draw_x0 and t_prev > 0:
            target = _draw_one_hot(probs.view(b, c, cs2 // c, h, w), generator).view(shape)
        x = sampler.step_from_probabilities(x, target, t, t_prev, step_noise)
        if on_step is not None:
            on_step(done)
    return net.unfold(probs)


def _draw_one_hot(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """probs (B, C, ...) -> one-hot (B, C, ...) of one class per position drawn from them
    (Gumbel-max)."""
    u = torch.rand(probs.shape, generator=generator, device=probs.device).clamp_(1e-9, 1.0)
    choice = (probs.clamp_min(1e-12).log() - (-u.log()).log()).argmax(dim=1, keepdim=True)
    return torch.zeros_like(probs).scatter_(1, choice, 1.0)
