"""Acquisition degradations of an angiogram that leave its geometry (and so its labels) valid.

What happens to a clinical cine between the detector and the file a user opens: the image
intensifier's vignetting and blur (PSF plus veiling glare), quantum (Poisson) and electronic
noise, the collimator / shutter borders, the console's exposure, window, gamma and LUT, and
lossy JPEG export. :func:`draw_degradation` draws one acquisition (shared by every frame of a
sequence), :func:`degrade` applies it to frames ``(T, H, W)``. The synthetic generator applies
it to its rendered frames; training augmentation can apply it to any labelled frame, since
no pixel moves. Only the shutter hides content: :func:`shutter_visibility` says where, so
labels under an opaque border can be cleared.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

__all__ = ["Degradation", "degrade", "draw_degradation", "shutter_visibility"]

#: Shutter opacity above which content under the border counts as hidden (labels cleared).
HIDDEN = 0.5


@dataclass(frozen=True)
class Degradation:
    """One acquisition's degradation parameters (lengths in pixels of the frame).

    ``strength`` 0 gives the identity (except the uint8 rounding).
    """

    shape: tuple[int, int]
    strength: float
    # image intensifier
    vignette: float  # relative brightness loss in the corners, 0..0.6
    vignette_centre: tuple[float, float]  # offset of the optical axis (fraction of size)
    blur_sigma: float  # PSF (px)
    glare: float  # fraction of light spread by veiling glare, 0..0.2
    glare_sigma: float  # px
    # noise (on the 0..1 intensity scale)
    quantum: float  # Poisson-like std at intensity 1
    electronic: float  # additive Gaussian std
    # collimator / shutter: inset of the four edges (fraction of H or W), shape and value
    shutter: bool
    shutter_inset: tuple[float, float, float, float]  # top, bottom, left, right
    shutter_round: float  # 0 = rectangle, 1 = circular iris
    shutter_level: float  # 0..1 (dark or bright border)
    shutter_opacity: float  # 0..1
    shutter_soft: float  # edge width (px)
    # console display: exposure, window and gamma, optional S-shaped LUT
    exposure: float  # multiplicative gain
    window_low: float
    window_high: float
    gamma: float
    lut_contrast: float  # 0 = linear, > 0 = sigmoid LUT steepness
    # export
    jpeg_quality: int  # 0 = no JPEG compression


def draw_degradation(rng: np.random.Generator, shape: tuple[int, int],
                     strength: float = 1.0) -> Degradation:
    """Draw one acquisition's degradation of frames of ``shape`` (H, W).

    ``strength`` 0..1 scales every amplitude; the number of draws never depends on it, so
    one seed gives the same acquisition kind at every strength.
    """
    s = float(np.clip(strength, 0.0, 1.0))
    u = rng.uniform
    scale = min(shape) / 512.0
    vig, vc = u(0.0, 0.5), (u(-0.12, 0.12), u(-0.12, 0.12))
    blur, glare, glare_sigma = u(0.3, 1.6), u(0.0, 0.2), u(0.05, 0.15) * min(shape)
    quantum, electronic = np.exp(u(np.log(0.01), np.log(0.08))), u(0.0, 0.008)
    shutter_draw = u()
    inset = tuple(float(v) for v in u(0.0, 0.07, 4))
    round_draw, round_amount = u(), u(0.3, 1.0)
    dark_draw, dark_level, bright_level = u(), u(0.0, 0.12), u(0.85, 1.0)
    opacity, soft = u(0.75, 1.0), u(1.0, 8.0)
    exposure = np.exp(u(-0.15, 0.15))
    lo, hi = u(-0.05, 0.1), u(0.95, 1.15)
    gamma = np.exp(u(-0.25, 0.3))
    lut_draw, lut = u(), u(2.0, 5.0)
    jpeg_draw, quality = u(), int(rng.integers(60, 96))
    return Degradation(
        shape=(int(shape[0]), int(shape[1])),
        strength=s,
        vignette=s * vig,
        vignette_centre=vc,
        blur_sigma=s * blur * scale,
        glare=s * glare,
        glare_sigma=glare_sigma,
        quantum=s * quantum,
        electronic=s * electronic,
        shutter=bool(shutter_draw < 0.6 * s),
        shutter_inset=inset,
        shutter_round=round_amount if round_draw < 0.4 else 0.0,
        shutter_level=dark_level if dark_draw < 0.75 else bright_level,
        shutter_opacity=opacity,
        shutter_soft=soft * max(scale, 0.5),
        exposure=float(np.exp(s * np.log(exposure))),
        window_low=s * lo,
        window_high=1.0 + s * (hi - 1.0),
        gamma=float(np.exp(s * np.log(gamma))),
        lut_contrast=s * lut if lut_draw < 0.5 else 0.0,
        jpeg_quality=quality if jpeg_draw < 0.75 * s else 0,
    )


def _radius(shape: tuple[int, int], centre: tuple[float, float]) -> np.ndarray:
    """Normalised distance (H, W) from ``centre`` (fractions of H, W from the middle); 1 at the
    middle of each edge."""
    h, w = shape
    yy = (np.arange(h, dtype=np.float32) - 0.5 * (h - 1)) / (0.5 * h) - 2.0 * centre[0]
    xx = (np.arange(w, dtype=np.float32) - 0.5 * (w - 1)) / (0.5 * w) - 2.0 * centre[1]
    return np.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2)


def shutter_visibility(params: Degradation) -> np.ndarray:
    """Opacity (H, W) float32 in [0, 1] of the collimator border (0 = open field)."""
    h, w = params.shape
    if not params.shutter:
        return np.zeros((h, w), np.float32)
    top, bottom, left, right = params.shutter_inset
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    # signed distance (px) inside the open rectangle, positive inside
    inside = np.minimum(np.minimum(yy - top * h, (h - 1 - bottom * h) - yy),
                        np.minimum(xx - left * w, (w - 1 - right * w) - xx))
    if params.shutter_round > 0:
        # iris: a circle through the rectangle's corners shrunk toward the edge midpoints
        cy = 0.5 * (top * h + (h - 1 - bottom * h))
        cx = 0.5 * (left * w + (w - 1 - right * w))
        hy = 0.5 * ((h - 1 - bottom * h) - top * h)
        hx = 0.5 * ((w - 1 - right * w) - left * w)
        corner = np.hypot(hy, hx)
        radius = corner + params.shutter_round * (max(hy, hx) - corner)
        inside = np.minimum(inside, radius - np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2))
    edge = 0.5 * (1.0 - np.tanh(inside / max(params.shutter_soft, 0.5)))
    return (params.shutter_opacity * edge).astype(np.float32)


def _lut(x: np.ndarray, params: Degradation) -> np.ndarray:
    """Console mapping of intensities in about [0, 1]: exposure, window, gamma, S-curve."""
    x = x * params.exposure
    x = (x - params.window_low) / max(params.window_high - params.window_low, 1e-3)
    x = np.clip(x, 0.0, 1.0) ** params.gamma
    k = params.lut_contrast
    if k > 0:
        lo, hi = np.tanh(-0.5 * k), np.tanh(0.5 * k)
        x = (np.tanh(k * (x - 0.5)) - lo) / (hi - lo)
    return x


def _jpeg(frame: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip one uint8 frame (H, W) through JPEG at ``quality``."""
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("L"))


def degrade(frames: np.ndarray, rng: np.random.Generator, strength: float = 1.0,
            params: Degradation | None = None) -> np.ndarray:
    """Apply one acquisition's degradations to gray frames.

    ``frames`` (T, H, W) or (H, W), uint8 (0..255) or float (0..1), vessels dark. Returns the
    same shape as uint8. ``params`` (from :func:`draw_degradation`) fixes the acquisition;
    None draws it from ``rng`` at ``strength``. The noise of each frame comes from ``rng``.
    Geometry is unchanged; only the shutter border (:func:`shutter_visibility`) hides content.
    """
    x = np.asarray(frames)
    single = x.ndim == 2
    x = x[None] if single else x
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    else:
        x = x.astype(np.float32)
    if params is None:
        params = draw_degradation(rng, x.shape[1:], strength)
    if tuple(x.shape[1:]) != params.shape:
        raise ValueError(f"frames of shape {x.shape[1:]} do not match the degradation's "
                         f"{params.shape}")
    shading = 1.0 - params.vignette * np.clip(_radius(params.shape, params.vignette_centre)
                                              / np.sqrt(2.0), 0.0, 1.5) ** 2
    shutter = shutter_visibility(params)
    out = np.empty(x.shape, np.uint8)
    for i, frame in enumerate(x):
        f = frame * shading
        # quantum noise arises at the input screen, before the intensifier's blur and glare
        # correlate it; electronic noise is added after them (white)
        quantum = params.quantum * np.sqrt(np.maximum(f, 0.0))
        f = f + quantum * rng.standard_normal(f.shape).astype(np.float32)
        if params.glare > 0:
            f = (1.0 - params.glare) * f + params.glare * gaussian_filter(
                f, params.glare_sigma, mode="nearest")
        if params.blur_sigma > 0.05:
            f = gaussian_filter(f, params.blur_sigma, mode="nearest")
        f = f + params.electronic * rng.standard_normal(f.shape).astype(np.float32)
        f = _lut(f, params)
        f = (1.0 - shutter) * f + shutter * params.shutter_level
        g = np.clip(255.0 * f + 0.5, 0, 255).astype(np.uint8)
        out[i] = _jpeg(g, params.jpeg_quality) if params.jpeg_quality > 0 else g
    return out[0] if single else out
