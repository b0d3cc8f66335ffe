"""Cosine noise schedule over a few discrete timesteps, and the DDIM update rule.

Labels are diffused as one-hot maps scaled to [-1, 1] ("analog" encoding). Timestep indices
run 0 (clean) .. T (pure noise); the network sees the continuous time ``t / T``.
"""

from __future__ import annotations

import math

import torch


def cosine_alpha_bar(t: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """Signal fraction ᾱ(t) of the cosine schedule at continuous time t in [0, 1]."""
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    f0 = math.cos(s / (1 + s) * math.pi / 2) ** 2
    return (f / f0).clamp(1e-5, 1.0)


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) to broadcast against a (B, C, H, W) tensor."""
    return v.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


class NoiseSchedule:
    """Forward process q(x_t | x_0) over ``timesteps`` discrete steps."""

    def __init__(self, timesteps: int = 10) -> None:
        if timesteps < 1:
            raise ValueError(f"timesteps must be at least 1, got {timesteps}")
        self.timesteps = timesteps

    def time(self, t_index: torch.Tensor) -> torch.Tensor:
        """Integer steps (B,) -> continuous time (B,) in [0, 1]."""
        return t_index.float() / self.timesteps

    def alpha_bar(self, t_index: torch.Tensor) -> torch.Tensor:
        return cosine_alpha_bar(self.time(t_index))

    def sample_timesteps(
        self, batch: int, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Uniform training steps (B,) in 1..T."""
        return torch.randint(1, self.timesteps + 1, (batch,), device=device, generator=generator)

    def q_sample(
        self, x0: torch.Tensor, t_index: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """Noised label map x_t = sqrt(ᾱ) x0 + sqrt(1 - ᾱ) ε; all tensors (B, C, H, W)."""
        ab = _expand(self.alpha_bar(t_index), x0)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


class DDIMSampler:
    """DDIM over ``steps`` of the schedule's timesteps (eta=0: deterministic given x_T)."""

    def __init__(self, schedule: NoiseSchedule, steps: int = 4, eta: float = 0.0) -> None:
        if not 1 <= steps <= schedule.timesteps:
            raise ValueError(f"steps must be in 1..{schedule.timesteps}, got {steps}")
        self.schedule = schedule
        self.steps = steps
        self.eta = eta
        grid = torch.linspace(schedule.timesteps, 0, steps + 1).round().long()
        self.timesteps: list[tuple[int, int]] = list(
            zip(grid[:-1].tolist(), grid[1:].tolist(), strict=True)
        )

    def step(
        self,
        x_t: torch.Tensor,
        x0_pred: torch.Tensor,
        t: int,
        t_prev: int,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One update x_t -> x_{t_prev} given the predicted clean map; (B, C, H, W) tensors."""
        if t_prev == 0:
            return x0_pred
        keep, mix, sigma = self._coefficients(t, t_prev)
        x_prev = x_t * keep + x0_pred * mix
        if noise is not None and self.eta > 0:
            x_prev = x_prev + sigma * noise
        return x_prev

    def _coefficients(self, t: int, t_prev: int) -> tuple[float, float, float]:
        """x_prev = keep x_t + mix x0 (+ sigma noise): DDIM's update with ε = (x_t - √ᾱ_t x0) /
        √(1 - ᾱ_t) substituted, as plain numbers."""
        ab_t = float(cosine_alpha_bar(torch.tensor(t / self.schedule.timesteps)))
        ab_prev = float(cosine_alpha_bar(torch.tensor(t_prev / self.schedule.timesteps)))
        sigma = self.eta * max((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev), 0.0) ** 0.5
        eps_scale = max(1 - ab_prev - sigma**2, 0.0) ** 0.5 / (1 - ab_t) ** 0.5
        return eps_scale, ab_prev**0.5 - eps_scale * ab_t**0.5, sigma

    def step_from_probabilities(
        self,
        x_t: torch.Tensor,
        probs: torch.Tensor,
        t: int,
        t_prev: int,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """:meth:`step` with x0 = 2 p - 1 from class probabilities p, in three passes over
        the map instead of eight (the sampler's inner loop)."""
        if t_prev == 0:
            return probs * 2 - 1
        keep, mix, sigma = self._coefficients(t, t_prev)
        x_prev = (x_t * keep).add_(probs, alpha=2 * mix).sub_(mix)
        if noise is not None and self.eta > 0:
            x_prev.add_(noise, alpha=sigma)
        return x_prev
