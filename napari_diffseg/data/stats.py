"""Image statistics that compare synthetic and real angiograms (numpy / scipy / skimage).

Used by ``scripts/compare_real_synthetic.py`` and the generator's range tests: intensity
percentiles, vessel calibres (from labels or from a ridge filter), vessel-to-background
contrast, noise level, background structure and the radially averaged power spectrum.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["background_std", "calibres_from_labels", "calibres_from_ridges", "noise_sigma",
           "radial_spectrum", "ridge_mask", "vessel_contrast"]


def noise_sigma(frame: np.ndarray) -> float:
    """Std of additive noise of one gray frame (H, W), Immerkaer's Laplacian-difference
    estimator (Immerkaer 1996), on the frame's own scale; insensitive to smooth content."""
    f = np.asarray(frame, dtype=np.float64)
    kernel = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
    r = ndi.convolve(f, kernel, mode="reflect")[1:-1, 1:-1]
    # the kernel's norm is 6: r ~ N(0, (6 sigma)^2) on flat content; the median absolute
    # response (0.6745 std) instead of the mean keeps vessel edges from inflating it
    return float(np.median(np.abs(r)) / (0.6745 * 6.0))


def calibres_from_labels(mask: np.ndarray) -> np.ndarray:
    """Diameters (px) along the skeleton of a vessel mask (H, W): 2 x the distance to the
    background at each skeleton pixel (the local lumen diameter)."""
    from skimage.morphology import skeletonize

    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.zeros(0)
    dist = ndi.distance_transform_edt(mask)
    return 2.0 * dist[skeletonize(mask)]


def ridge_mask(frame: np.ndarray, sigmas=(1.0, 2.0, 3.0, 5.0, 8.0),
               quantile: float = 0.92) -> np.ndarray:
    """Dark tubular structures of a gray frame (H, W): multi-scale Sato ridge response
    (``black_ridges=True``) thresholded at its ``quantile``, restricted to pixels darker
    than their surroundings and cleaned of specks."""
    from skimage.filters import sato
    from skimage.morphology import remove_small_objects

    f = np.asarray(frame, dtype=np.float32)
    f = (f - f.mean()) / (f.std() + 1e-6)
    response = sato(f, sigmas=sigmas, black_ridges=True)
    darker = f < ndi.uniform_filter(f, 31)
    mask = (response > np.quantile(response, quantile)) & darker
    return remove_small_objects(mask, max_size=64)


def calibres_from_ridges(frame: np.ndarray) -> np.ndarray:
    """Vessel diameters (px) of an unlabelled frame, from :func:`ridge_mask`."""
    return calibres_from_labels(ridge_mask(frame))


def vessel_contrast(frame: np.ndarray, mask: np.ndarray, core: float = 3.0) -> float:
    """Median intensity of vessel cores (pixels at least ``core`` px inside ``mask``) over
    the median of a background ring 3..8 px around the mask; nan without a core."""
    f = np.asarray(frame, dtype=np.float64)
    mask = np.asarray(mask, bool)
    inner = ndi.distance_transform_edt(mask) >= core
    ring = ndi.binary_dilation(mask, iterations=8) & ~ndi.binary_dilation(mask, iterations=3)
    if not inner.any() or not ring.any():
        return float("nan")
    return float(np.median(f[inner]) / max(np.median(f[ring]), 1e-6))


def background_std(frame: np.ndarray, mask: np.ndarray | None = None,
                   scales=(2.0, 8.0, 32.0)) -> dict[float, float]:
    """Structure of the background: std of band-pass images (difference of Gaussians at
    ``s`` and ``2 s``) outside ``mask`` (H, W, True = vessel), per scale ``s`` in px."""
    f = np.asarray(frame, dtype=np.float64)
    keep = np.ones(f.shape, bool) if mask is None else ~ndi.binary_dilation(mask, iterations=4)
    out = {}
    for s in scales:
        band = ndi.gaussian_filter(f, s) - ndi.gaussian_filter(f, 2.0 * s)
        out[float(s)] = float(band[keep].std()) if keep.any() else float("nan")
    return out


def radial_spectrum(frame: np.ndarray, bins: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a frame (H, W), windowed: frequencies (bins,) in
    cycles/px and log10 power (bins,) of the mean-free frame normalised to unit variance."""
    f = np.asarray(frame, dtype=np.float64)
    f = (f - f.mean()) / (f.std() + 1e-9)
    h, w = f.shape
    f = f * np.outer(np.hanning(h), np.hanning(w))
    power = np.abs(np.fft.fftshift(np.fft.fft2(f))) ** 2
    fy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
    r = np.sqrt(fy * fy + fx * fx)
    edges = np.linspace(0.0, 0.5, bins + 1)
    idx = np.clip(np.digitize(r.ravel(), edges) - 1, 0, bins)
    sums = np.bincount(idx, power.ravel(), bins + 1)[:bins]
    counts = np.bincount(idx, minlength=bins + 1)[:bins]
    return 0.5 * (edges[1:] + edges[:-1]), np.log10(sums / np.maximum(counts, 1) + 1e-12)
