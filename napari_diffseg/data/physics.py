"""X-ray image formation and contrast-bolus kinetics.

Per frame: line integrals ``A`` (H, W) -> expected photon counts ``N0 * v * exp(-A)``
(``v`` = vignette) -> Poisson quantum noise -> Gaussian detector blur -> log display
mapping to uint8 with a window fixed per sequence (vessels dark, background mid-gray to
bright).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from .config import SceneParams

__all__ = ["CATHETER_DIST", "DisplayMap", "bolus_concentration", "bolus_curve",
           "catheter_filled", "detect", "label_contrast_floor", "tube_darkening", "vignette"]

#: Position of the catheter tip on the bolus' path (normalised distance, upstream of the
#: ostium), used for the contrast in the catheter lumen.
CATHETER_DIST = -0.06


def bolus_curve(tau: np.ndarray, rise: float, plateau: float | np.ndarray,
                decay: float | np.ndarray) -> np.ndarray:
    """Gamma-variate-like time-concentration curve (peak 1) at time ``tau`` after arrival.

    Smooth wash-in over ``rise``, plateau while the injection lasts (until ``plateau``), then
    exponential wash-out with time constant ``decay``; 0 before arrival (``tau <= 0``).
    """
    tau = np.asarray(tau, dtype=float)
    wash_in = 0.5 - 0.5 * np.cos(np.pi * np.clip(tau / rise, 0.0, 1.0))
    wash_out = np.exp(-np.maximum(tau - plateau, 0.0) / decay)
    return np.where(tau > 0.0, wash_in * wash_out, 0.0)


def bolus_concentration(dist_norm: np.ndarray, u: float, params: SceneParams) -> np.ndarray:
    """Relative iodine concentration (peak 1) along the tree at sequence time ``u``.

    ``dist_norm`` (N,) is the path length from the ostium divided by the longest path, ``u``
    the time as a fraction of the sequence duration. The front reaches a point after
    ``bolus_arrival + bolus_front_span * dist_norm``; distal vessels stay filled a little
    longer and wash out more slowly, and are slightly diluted.
    """
    dist_norm = np.asarray(dist_norm, dtype=float)
    tau = u - params.bolus_arrival - params.bolus_front_span * dist_norm
    c = bolus_curve(tau, params.bolus_rise, params.bolus_plateau * (1.0 + 0.3 * dist_norm),
                    params.bolus_decay * (1.0 + 0.4 * dist_norm))
    return c * (1.0 - 0.1 * dist_norm)


def catheter_filled(u: float, params: SceneParams) -> bool:
    """Whether the catheter is filled with contrast at sequence time ``u`` (fraction).

    True during the injection phase: from the bolus start at the catheter tip until its
    plateau ends (the times :func:`bolus_concentration` uses at :data:`CATHETER_DIST`), i.e.
    while contrast is being pushed through the catheter.
    """
    tau = u - params.bolus_arrival - params.bolus_front_span * CATHETER_DIST
    return bool(0.0 < tau <= params.bolus_plateau * (1.0 + 0.3 * CATHETER_DIST))


def tube_darkening(radius: np.ndarray, mu_per_px: np.ndarray | float,
                   sigma: float) -> np.ndarray:
    """Expected darkening (attenuation units) of a tube's centreline after detector blur.

    ``radius`` (N,) in px, ``mu_per_px`` attenuation per px of path (e.g. iodine mu times
    concentration times pixel size), ``sigma`` the detector PSF. The chord profile (peak
    ``2 r``, area ``pi r^2``) is treated as a Gaussian of the same area blurred by the PSF.
    """
    r = np.asarray(radius, dtype=float)
    width = np.sqrt((0.313 * r) ** 2 + sigma**2)
    peak = np.minimum(2.0 * r, np.pi * r * r / (np.sqrt(2.0 * np.pi) * width))
    return mu_per_px * peak


def label_contrast_floor(params: SceneParams, snr: float) -> float:
    """Smallest centreline darkening that is labelled: ``min_label_contrast`` or ``snr``
    times the quantum-noise std of the blurred log image, whichever is larger."""
    if not params.noise:
        return params.min_label_contrast
    noise = 1.0 / np.sqrt(params.photons) / (2.0 * np.sqrt(np.pi) * params.detector_sigma)
    return max(params.min_label_contrast, snr * noise)


def vignette(shape: tuple[int, int], strength: float) -> np.ndarray:
    """Radial brightness fall-off (H, W) in (1 - strength, 1] of the image intensifier."""
    h, w = shape
    yy = (np.arange(h, dtype=np.float32) - 0.5 * (h - 1)) / (0.5 * h)
    xx = (np.arange(w, dtype=np.float32) - 0.5 * (w - 1)) / (0.5 * w)
    r2 = (yy[:, None] ** 2 + xx[None, :] ** 2) / 2.0
    return (1.0 - strength * r2**1.5).astype(np.float32)


def detect(attenuation: np.ndarray, params: SceneParams, shading: np.ndarray,
           reference: float, rng: np.random.Generator) -> np.ndarray:
    """Detected signal (H, W) as ``-log(counts / N0)`` (log attenuation incl. noise).

    ``attenuation`` are line integrals, ``shading`` the vignette (H, W) and ``reference``
    the line integral at which a pixel receives ``params.photons`` photons.
    """
    expected = params.photons * shading * np.exp(reference - attenuation)
    if params.noise:
        counts = rng.poisson(expected).astype(np.float32)
    else:
        counts = expected.astype(np.float32)
    counts = gaussian_filter(counts, params.detector_sigma, mode="nearest")
    return -np.log(np.maximum(counts, 0.3) / params.photons).astype(np.float32)


@dataclass
class DisplayMap:
    """Log-domain display mapping to uint8 (high attenuation = dark).

    A signal equal to ``reference`` maps to gray ``level``; every attenuation unit above it
    darkens by ``gain`` gray levels. The ends are compressed softly (film-like shoulder).
    """

    reference: float
    level: float
    gain: float

    @classmethod
    def from_background(cls, signal: np.ndarray, params: SceneParams) -> DisplayMap:
        """Fix the mapping from a noise-free background signal (H, W) of the first frame."""
        return cls(reference=float(np.median(signal)), level=params.display_level,
                   gain=params.display_gain)

    def __call__(self, signal: np.ndarray) -> np.ndarray:
        linear = (self.level - 128.0) + self.gain * (self.reference - signal)
        out = 128.0 + 127.0 * np.tanh(linear / 127.0)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)
