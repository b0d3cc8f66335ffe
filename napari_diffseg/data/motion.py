"""Cardiac and respiratory motion of the synthetic scene.

Cardiac motion is a phase-dependent non-rigid warp of centreline points (contraction toward
the heart centre, a small rotation and a smooth displacement field); respiration is a slow
translation of everything, smaller for the spine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import SceneParams

__all__ = ["MotionModel", "SPINE_RESPIRATION", "systolic_profile"]

#: Fraction of the respiratory translation that the spine follows.
SPINE_RESPIRATION = 0.3


def systolic_profile(phase: np.ndarray | float) -> np.ndarray:
    """Contraction state in [0, 1] over the cardiac phase in [0, 1).

    Fast systolic contraction (phase 0..0.35), slower diastolic relaxation (0.35..0.75)
    and diastasis (rest) until the next beat.
    """
    p = np.mod(phase, 1.0)
    up = np.sin(0.5 * np.pi * np.clip(p / 0.35, 0.0, 1.0)) ** 2
    down = np.cos(0.5 * np.pi * np.clip((p - 0.35) / 0.4, 0.0, 1.0)) ** 2
    return np.where(p < 0.35, up, down)


@dataclass
class MotionModel:
    """Motion of points at time ``t`` (seconds).

    ``centre`` (2,) is the heart centre the vessels contract toward; ``wave`` (2, 2) and
    ``wave_phase`` (2,) define the smooth non-rigid displacement field.
    """

    params: SceneParams
    centre: np.ndarray
    wave: np.ndarray
    wave_phase: np.ndarray
    shift_dir: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, params: SceneParams,
             tree_points: np.ndarray) -> MotionModel:
        """Place the heart centre below the tree's centroid and draw the warp field."""
        size = float(min(params.shape))
        centroid = tree_points.mean(axis=0)
        centre = centroid + np.array([rng.uniform(0.05, 0.2), rng.uniform(-0.1, 0.1)]) * size
        k = 2.0 * np.pi / (size * rng.uniform(0.7, 1.2))
        angles = rng.uniform(0.0, 2.0 * np.pi, 2)
        wave = k * np.stack([np.sin(angles), np.cos(angles)], axis=1)
        shift_dir = rng.normal(0.0, 1.0, 2)
        return cls(params=params, centre=centre, wave=wave,
                   wave_phase=rng.uniform(0.0, 2.0 * np.pi, 2),
                   shift_dir=shift_dir / np.linalg.norm(shift_dir))

    def cardiac_state(self, t: float) -> float:
        """Contraction state in [0, 1] at time t."""
        p = self.params
        return float(systolic_profile(p.heart_rate_hz * t + p.cardiac_phase0))

    def respiration(self, t: float) -> np.ndarray:
        """Respiratory translation (2,) (dy, dx) at time t, zero at t = 0."""
        p = self.params
        w = 2.0 * np.pi / p.resp_period_s
        amp = p.resp_amplitude_px * (np.sin(w * t + p.resp_phase0) - np.sin(p.resp_phase0))
        return amp * np.array([np.cos(p.resp_angle_rad), np.sin(p.resp_angle_rad)])

    def warp(self, points: np.ndarray, t: float, cardiac_weight: np.ndarray | float = 1.0,
             ) -> np.ndarray:
        """Move points (N, 2) to time t: cardiac warp (scaled per point by
        ``cardiac_weight``, (N,) or scalar) followed by respiratory translation."""
        p = self.params
        s = self.cardiac_state(t)
        rel = points - self.centre
        ang = p.rotation_rad * s
        c, sn = np.cos(ang), np.sin(ang)
        rot = np.stack([c * rel[:, 0] + sn * rel[:, 1], -sn * rel[:, 0] + c * rel[:, 1]], axis=1)
        moved = self.centre + (1.0 - p.contraction * s) * rot
        field = np.sin(points @ self.wave.T + self.wave_phase)
        moved = moved + s * p.nonrigid_px * (field + 0.4 * self.shift_dir)
        weight = np.asarray(cardiac_weight, dtype=float)
        if weight.ndim:
            weight = weight[:, None]
        return points + weight * (moved - points) + self.respiration(t)
