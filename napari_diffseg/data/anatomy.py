"""Anatomical background of the synthetic angiogram as attenuation line integrals.

Two layers are built once per sequence on a canvas padded against respiratory shifts:
``thorax`` (soft tissue, heart shadow, lungs, diaphragm, ribs, texture) follows respiration
fully, ``spine`` (vertebral column) only partly. Values are line integrals ``A`` in
``I = I0 * exp(-A)`` units; only their differences matter for the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import zoom

from .config import SceneParams

__all__ = ["CLIP_PROBABILITY", "Anatomy", "build_anatomy"]

#: Share of the ``thorax_detail`` scenes that show surgical clips.
CLIP_PROBABILITY = 0.3


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _noise_field(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth unit-variance noise (shape) with about ``cells`` blobs along the short side."""
    h, w = shape
    short = min(h, w)
    gh = max(int(np.ceil(cells * h / short)) + 3, 4)
    gw = max(int(np.ceil(cells * w / short)) + 3, 4)
    coarse = rng.standard_normal((gh, gw))
    field = zoom(coarse, (h / (gh - 3), w / (gw - 3)), order=3, mode="reflect")
    field = field[:h, :w]
    return ((field - field.mean()) / (field.std() + 1e-9)).astype(np.float32)


def _ellipse_radius(yy: np.ndarray, xx: np.ndarray, centre: np.ndarray, axes: np.ndarray,
                    angle: float) -> np.ndarray:
    """Normalised elliptical radius (1 on the ellipse boundary)."""
    dy, dx = yy - centre[0], xx - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    u = (c * dx + s * dy) / axes[1]
    v = (-s * dx + c * dy) / axes[0]
    return np.sqrt(u * u + v * v)


def _hollow_profile(dn: np.ndarray, half_width: np.ndarray | float, shell: float = 0.72,
                    marrow: float = 0.35) -> np.ndarray:
    """Normalised chord through a bone of dense cortex and light marrow (peak about 0.7)."""
    outer = np.sqrt(np.maximum(half_width**2 - dn * dn, 0.0))
    inner = np.sqrt(np.maximum((shell * half_width) ** 2 - dn * dn, 0.0))
    return (outer - inner + marrow * inner) / half_width


def _spine(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, h: int, w: int,
           size: float, clutter: float) -> np.ndarray:
    """Vertebral column: vertebral bodies with end-plates, pedicles and spinous processes."""
    x0 = rng.uniform(0.2, 0.8) * w
    tilt = rng.uniform(-0.12, 0.12)
    xc = x0 + tilt * (yy - 0.5 * h)
    half = rng.uniform(0.11, 0.15) * size
    pitch = rng.uniform(0.17, 0.22) * size
    body = rng.uniform(0.78, 0.84) * pitch
    gap = 0.5 * (pitch - body)
    yv = np.mod(yy - rng.uniform(0.0, pitch), pitch) - gap  # 0..body inside a vertebral body
    dx = xx - xc
    # concave waist of the vertebral body
    half_eff = half * (1.0 - 0.07 * np.sin(np.pi * np.clip(yv / body, 0.0, 1.0)))
    edge = 0.008 * size
    inside_y = _sigmoid(yv / edge) * _sigmoid((body - yv) / edge)
    a = 0.2 * _hollow_profile(np.abs(dx), half_eff, shell=0.85, marrow=0.6) * inside_y
    # dense end-plates at the top and bottom of each body
    ep_w = 0.006 * size
    plates = np.exp(-0.5 * (yv / ep_w) ** 2) + np.exp(-0.5 * ((yv - body) / ep_w) ** 2)
    a += 0.06 * plates * np.sqrt(np.maximum(1.0 - (dx / half_eff) ** 2, 0.0))
    # pedicles: faint oval rings on both sides of the upper half of each body
    for side in (-1.0, 1.0):
        rho = np.sqrt(((dx - side * 0.6 * half) / (0.2 * half)) ** 2
                      + ((yv - 0.3 * body) / (0.17 * pitch)) ** 2)
        a += 0.04 * np.exp(-(((rho - 0.9) / 0.45) ** 2))
    # spinous process: faint teardrop below the pedicles
    a += 0.04 * np.exp(-0.5 * ((dx / (0.1 * half)) ** 2
                               + ((yv - 0.75 * body) / (0.2 * pitch)) ** 2))
    # paraspinal soft tissue
    a += 0.1 * np.exp(-0.5 * (dx / (1.6 * half)) ** 2)
    return (clutter * a).astype(np.float32)


def _ribs(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, h: int, w: int,
          size: float, clutter: float) -> np.ndarray:
    """Posterior (denser) and anterior (fainter) ribs as curved bone bands."""
    a = np.zeros(yy.shape, np.float32)
    for kind in ("posterior", "anterior"):
        pitch = rng.uniform(0.18, 0.24) * size
        n = int(np.ceil(1.4 * h / pitch)) + 1
        start = rng.uniform(-0.4, 0.0) * h
        side = rng.choice([-1.0, 1.0])
        slope = side * rng.uniform(0.15, 0.45) * (1.0 if kind == "posterior" else -1.3)
        curv = rng.uniform(0.4, 1.0) / size * (-1.0 if kind == "posterior" else 0.6)
        xr = rng.uniform(0.1, 0.9) * w
        amp = (0.12 if kind == "posterior" else 0.06) * clutter
        for i in range(n):
            y0 = start + i * pitch + rng.normal(0.0, 0.05 * pitch)
            half = rng.uniform(0.025, 0.035) * size * (1.0 if kind == "posterior" else 0.8)
            dxr = xx - xr
            yc = y0 + slope * dxr + curv * dxr * dxr
            grad = slope + 2.0 * curv * dxr
            dn = np.abs(yy - yc) / np.sqrt(1.0 + grad * grad)
            near = dn < half
            if not near.any():
                continue
            # ribs fade out at one end (costal cartilage / beyond the spine)
            x_end = xr + rng.uniform(-0.5, 0.5) * w
            fade = _sigmoid(side * (xx - x_end) / (0.04 * size))
            a += amp * np.where(near, _hollow_profile(dn, half) * fade, 0.0).astype(np.float32)
    return a


def _sternal_wires(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, h: int, w: int,
                   size: float, count: int) -> np.ndarray:
    """Sternotomy wire loops: small dense elliptical rings with a twisted knot, stacked along
    a (tilted) sternal line; background, never labelled."""
    a = np.zeros(yy.shape, np.float32)
    x0, tilt = rng.uniform(0.25, 0.75) * w, rng.uniform(-0.4, 0.4)
    y0, pitch = rng.uniform(0.05, 0.4) * h, rng.uniform(0.1, 0.16) * size
    wire = max(0.9 * size / 512.0, 0.6)  # wire radius (px)
    density = rng.uniform(0.15, 0.35)  # line integral per px of wire path
    for i in range(count):
        cy = y0 + i * pitch + rng.normal(0.0, 0.1 * pitch)
        cx = x0 + tilt * (cy - 0.5 * h) + rng.normal(0.0, 0.02 * size)
        axes = np.array([rng.uniform(0.005, 0.009), rng.uniform(0.011, 0.02)]) * size
        rho = _ellipse_radius(yy, xx, np.array([cy, cx]), axes, rng.uniform(-0.3, 0.3))
        ring = np.exp(-0.5 * ((rho - 1.0) * axes.min() / wire) ** 2)
        side = rng.choice([-1.0, 1.0])
        knot = np.exp(-0.5 * (((yy - cy) / (1.6 * wire)) ** 2
                              + ((xx - cx - side * axes[1]) / (3.0 * wire)) ** 2))
        a += (density * 2.0 * wire * (ring + 1.5 * knot)).astype(np.float32)
    return a


def _lung_strands(rng: np.random.Generator, lung: np.ndarray, size: float,
                  clutter: float) -> np.ndarray:
    """Interstitial and vascular lung markings: a network of fine dark strands (the zero
    lines of two band-passed noise fields, 2-8 px wide at 512 px) inside the lung fields,
    at most as dark as a faint distal vessel. Background, in every frame."""
    a = np.zeros(lung.shape, np.float32)
    scale = size / 512.0
    for cells, width, amp in ((size / 30.0, 0.35, 0.25), (size / 14.0, 0.2, 0.12)):
        field = _noise_field(rng, lung.shape, max(int(cells), 3))
        field -= _noise_field(rng, lung.shape, max(int(cells / 3), 2)) * 0.3
        lines = np.exp(-0.5 * (field / (width * max(scale, 0.5) ** 0.5)) ** 2)
        patch = 0.5 + 0.5 * _noise_field(rng, lung.shape, 4)  # strands come and go
        a += (rng.uniform(0.5, 1.5) * amp * clutter) * lines * np.clip(patch, 0.0, 1.0)
    return a * np.clip(lung, 0.0, 1.0)


def _surgical_clips(rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, h: int, w: int,
                    size: float) -> np.ndarray:
    """Clusters of surgical clips (after bypass surgery): dense short rods, 8-22 px long and
    2-4 px wide at 512 px, alone or in pairs, and rings of 5-11 px radius, along a graft's
    smooth path. Background."""
    a = np.zeros(yy.shape, np.float32)
    scale = size / 512.0
    start = np.array([rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w])
    heading = rng.uniform(0.0, 2.0 * np.pi)
    bend = rng.uniform(-2.0, 2.0) / size
    step = rng.uniform(0.04, 0.1) * size
    count = int(rng.integers(3, 10))
    density = rng.uniform(0.3, 0.6)  # line integral per px across a rod's core
    for i in range(count):
        angle = heading + bend * step * i
        centre = start + step * i * np.array([np.sin(angle), np.cos(angle)])
        centre += rng.normal(0.0, 0.015 * size, 2)
        theta = rng.uniform(0.0, np.pi)
        length = rng.uniform(8.0, 22.0) * scale
        half_width = max(rng.uniform(1.0, 2.0) * scale, 0.5)
        kind = rng.uniform()
        rods = 2 if kind < 0.4 else 1
        gap = rng.uniform(3.0, 6.0) * scale
        c, s_ = np.cos(theta), np.sin(theta)
        dy, dx = yy - centre[0], xx - centre[1]
        along = c * dx + s_ * dy
        across = -s_ * dx + c * dy
        ends = _sigmoid((0.5 * length - np.abs(along)) / 0.5)
        if kind > 0.75:  # a ring (a marker or a clip seen end-on)
            radius = rng.uniform(5.0, 11.0) * scale
            ring = np.exp(-0.5 * ((np.hypot(dy, dx) - radius) / half_width) ** 2)
            a += (density * 2.0 * half_width * ring).astype(np.float32)
            continue
        for k in range(rods):
            offset = (k - 0.5 * (rods - 1)) * gap
            core = np.exp(-0.5 * ((across - offset) / half_width) ** 2)
            a += (density * 2.0 * half_width * core * ends).astype(np.float32)
    return a


@dataclass
class Anatomy:
    """Background attenuation layers on a canvas padded by ``pad`` px on every side.

    ``thorax`` and ``spine`` have shape (H + 2 pad, W + 2 pad).
    """

    thorax: np.ndarray
    spine: np.ndarray
    pad: int

    def attenuation(self, shift_thorax: np.ndarray, shift_spine: np.ndarray) -> np.ndarray:
        """Background line integrals (H, W) with both layers translated by (dy, dx) px."""
        return _shifted(self.thorax, self.pad, shift_thorax) + _shifted(self.spine, self.pad,
                                                                         shift_spine)


def _shifted(layer: np.ndarray, pad: int, shift: np.ndarray) -> np.ndarray:
    """Bilinear crop (H, W) of a padded layer moved by ``shift`` (dy, dx)."""
    h, w = layer.shape[0] - 2 * pad, layer.shape[1] - 2 * pad
    sy = float(np.clip(shift[0], -pad + 1, pad - 1))
    sx = float(np.clip(shift[1], -pad + 1, pad - 1))
    iy, ix = int(np.floor(sy)), int(np.floor(sx))
    fy, fx = sy - iy, sx - ix
    y0, x0 = pad - iy - 1, pad - ix - 1  # content moves by +shift: sample at p - shift

    def crop(dy: int, dx: int) -> np.ndarray:
        return layer[y0 + dy:y0 + dy + h, x0 + dx:x0 + dx + w]

    top = (1.0 - fx) * crop(0, 1) + fx * crop(0, 0)
    bottom = (1.0 - fx) * crop(1, 1) + fx * crop(1, 0)
    return (1.0 - fy) * bottom + fy * top


def build_anatomy(rng: np.random.Generator, params: SceneParams, heart_centre: np.ndarray,
                  pad: int) -> Anatomy:
    """Draw the anatomical background of a scene; ``pad`` must exceed the largest shift."""
    h, w = params.shape
    size = float(min(h, w))
    clutter = params.clutter
    hp, wp = h + 2 * pad, w + 2 * pad
    yy, xx = np.mgrid[-pad:h + pad, -pad:w + pad].astype(np.float32)
    # soft tissue: smooth thickness gradient plus low-frequency texture
    ang = rng.uniform(0.0, 2.0 * np.pi)
    ramp = ((yy - 0.5 * h) * np.sin(ang) + (xx - 0.5 * w) * np.cos(ang)) / size
    thorax = 2.5 + rng.uniform(0.15, 0.4) * ramp
    thorax += 0.05 * clutter * _noise_field(rng, (hp, wp), 3)
    thorax += 0.025 * clutter * _noise_field(rng, (hp, wp), 10)
    # heart shadow: a large soft ellipse around the heart centre
    axes = np.array([rng.uniform(0.45, 0.65), rng.uniform(0.5, 0.75)]) * size
    rho = _ellipse_radius(yy, xx, heart_centre, axes, rng.uniform(-0.6, 0.6))
    heart = _sigmoid((1.0 - rho) / 0.05)
    thorax += rng.uniform(0.2, 0.35) * heart
    # lungs: lighter fields lateral / upper, with fine vascular markings
    lung = np.zeros((hp, wp), np.float32)
    for _ in range(int(rng.integers(1, 3))):
        away = rng.uniform(0.0, 2.0 * np.pi)
        c = heart_centre + np.array([np.sin(away), np.cos(away)]) * size * rng.uniform(0.6, 0.9)
        c[0] = min(c[0], 0.6 * h)
        lax = np.array([rng.uniform(0.4, 0.6), rng.uniform(0.3, 0.45)]) * size
        lung = np.maximum(lung, _sigmoid((1.0 - _ellipse_radius(yy, xx, c, lax, 0.0)) / 0.06))
    markings = np.abs(_noise_field(rng, (hp, wp), 24))
    lung *= 1.0 - 0.6 * heart  # the heart displaces lung where they overlap
    thorax -= lung * (rng.uniform(0.3, 0.45) - 0.04 * clutter * markings)
    # diaphragm: dome with a sharp step to the dense abdomen below
    apex_y, apex_x = rng.uniform(0.72, 1.05) * h, rng.uniform(0.15, 0.85) * w
    dome = apex_y + rng.uniform(0.6, 1.6) / size * (xx - apex_x) ** 2 + rng.uniform(-0.2, 0.2) * (
        xx - apex_x)
    thorax += rng.uniform(0.3, 0.55) * _sigmoid((yy - dome) / (0.006 * size))
    thorax += _ribs(rng, yy, xx, h, w, size, clutter)
    spine = _spine(rng, yy, xx, h, w, size, clutter)
    if params.sternal_wires > 0:  # drawn last: the classic style's background is unchanged
        thorax += _sternal_wires(rng, yy, xx, h, w, size, params.sternal_wires)
    if params.thorax_detail:  # drawn after everything else: the earlier scenes are unchanged
        thorax += _lung_strands(rng, lung, size, clutter)
        if rng.uniform() < CLIP_PROBABILITY:
            thorax += _surgical_clips(rng, yy, xx, h, w, size)
    return Anatomy(thorax=thorax.astype(np.float32), spine=spine, pad=pad)
