"""Temperature scaling of the mean class probabilities, fitted on a video's verified frames.

A model is over-confident when its probability 0.9 is right less than 90 % of the time. One
temperature T > 0 fixes most of that (Guo et al. 2017): p_T = softmax(log p / T), T > 1
softens, T < 1 sharpens, the argmax of a single pass never moves. It is fitted by minimising
the negative log-likelihood of the reference labels of frames a user has verified, and
applied either to stored probabilities (:func:`apply_temperature`) or at sampling time
(``SegmentOptions(temperature=T)``, which scales each sample's logits). The fitting is numpy
and scipy only; :func:`fit_video_temperature` runs the model on a video's verified frames first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

logger = logging.getLogger(__name__)

#: at most this many pixels enter a fit (drawn at random, with the seed fixed)
MAX_FIT_PIXELS = 200_000
T_BOUNDS = (0.05, 20.0)
#: at most this many verified frames calibrate a segmentation (spread over the video): the
#: fit segments them once more, and a few frames already fix one number
CALIBRATION_FRAMES = 4


@dataclass
class Calibrated:
    """Yielded first when the model was calibrated on the video's verified frames: the
    temperature its probabilities (the uncertainty and the frame scores, not the labels) are
    scaled with in this run, and the frames it was fitted on."""

    temperature: float
    frames: list[int]


def calibration_frames(verified, most: int = CALIBRATION_FRAMES) -> list[int]:
    """Up to `most` of the verified frames, spread evenly over them."""
    verified = sorted(int(v) for v in verified)
    if len(verified) <= most:
        return verified
    step = (len(verified) - 1) / (most - 1)
    return sorted({verified[round(i * step)] for i in range(most)})


def _flatten(probabilities: np.ndarray, labels: np.ndarray, ignore_index: int | None):
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels)
    if p.ndim != y.ndim + 1 or p.shape[:1] + p.shape[2:] != y.shape:
        raise ValueError(f"probabilities {p.shape} do not match labels {y.shape}: expected "
                         "(N, C, H, W) and (N, H, W)")
    p = np.moveaxis(p, 1, -1).reshape(-1, p.shape[1])
    y = y.reshape(-1).astype(np.int64)
    keep = (y >= 0) & (y < p.shape[1])
    if ignore_index is not None:
        keep &= y != ignore_index
    return p[keep], y[keep]


def apply_temperature(probabilities: np.ndarray, temperature: float, axis: int = 1) -> np.ndarray:
    """softmax(log p / T) along `axis` (the class axis), float32."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logp = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), 1e-12, None))
    z = logp / temperature
    z -= z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def nll(probabilities: np.ndarray, labels: np.ndarray, temperature: float = 1.0,
        ignore_index: int | None = None) -> float:
    """Mean negative log-likelihood of `labels` under the probabilities at `temperature`."""
    p, y = _flatten(probabilities, labels, ignore_index)
    return _nll(np.log(np.clip(p, 1e-12, None)), y, temperature)


def _nll(logp: np.ndarray, y: np.ndarray, temperature: float) -> float:
    z = logp / temperature
    zmax = z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z - zmax).sum(axis=1)) + zmax[:, 0]
    return float((log_norm - z[np.arange(y.size), y]).mean())


def fit_temperature(
    probabilities: np.ndarray, labels: np.ndarray, ignore_index: int | None = None,
    seed: int = 0,
) -> float:
    """The temperature that minimises the NLL of `labels` (N, H, W) under `probabilities`
    (N, C, H, W) (e.g. a video's verified frames with their stored mean probabilities);
    1.0 when there are no usable pixels."""
    p, y = _flatten(probabilities, labels, ignore_index)
    if y.size == 0:
        return 1.0
    if y.size > MAX_FIT_PIXELS:
        pick = np.random.default_rng(seed).choice(y.size, MAX_FIT_PIXELS, replace=False)
        p, y = p[pick], y[pick]
    logp = np.log(np.clip(p, 1e-12, None))
    res = minimize_scalar(lambda s: _nll(logp, y, float(np.exp(s))),
                          bounds=tuple(np.log(T_BOUNDS)), method="bounded",
                          options={"xatol": 1e-3})
    temperature = float(np.exp(res.x))
    logger.info("temperature %.3f (NLL %.4f -> %.4f on %d pixels)", temperature,
                _nll(logp, y, 1.0), res.fun, y.size)
    return temperature


def fit_video_temperature(
    model, frames: np.ndarray, labels: np.ndarray, verified, *, normalisation: dict,
    timesteps: int, options=None, ignore_index: int | None = None,
) -> float:
    """The temperature of `model` on a video: its mean probabilities on the `verified` frames
    of `frames` (T, H, W) (sampled with `options`, at temperature 1) fitted to those frames'
    `labels` (T, H, W). Refit after every fine-tune: the temperature belongs to a model.
    Then segment with ``SegmentOptions(temperature=T)``. 1.0 without verified frames."""
    from dataclasses import replace

    from napari_diffseg.engine.inference import SegmentOptions, iter_segment

    verified = sorted(int(i) for i in verified)
    if not verified:
        return 1.0
    options = replace(options or SegmentOptions(), temperature=1.0)
    probs, refs = [], []
    for chunk in iter_segment(model, frames, normalisation=normalisation, timesteps=timesteps,
                              options=options, indices=verified):
        probs.append(chunk.probabilities.astype(np.float32))
        refs.append(np.asarray(labels)[chunk.indices])
    return fit_temperature(np.concatenate(probs), np.concatenate(refs),
                           ignore_index=ignore_index)
