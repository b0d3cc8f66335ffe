"""Inference: K diffusion samples per frame -> probabilities, labels, uncertainty, frame scores.

Image features are computed once per frame and shared by every DDIM step of every sample; the
K samples of a batch of frames run as one batch through the light label denoiser.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from napari_diffseg.data.sequences import (
    apply_normalisation,
    context_indices,
    normalisation_range,
)
from napari_diffseg.engine.defaults import (
    DEFAULT_MIN_COMPONENT,  # noqa: F401 (re-exported)
    PRECISIONS,
)
from napari_diffseg.engine.device import inference_dtype, resolve_device
from napari_diffseg.engine.postprocess import remove_specks
from napari_diffseg.engine.uncertainty import (
    DIHEDRAL,
    class_std,
    dihedral,
    dihedral_inverse,
    expected_dice_error,
    expected_dice_frame_score,
    jitter_intensity,
)
from napari_diffseg.engine.uncertainty import (
    entropy as _entropy,
)
from napari_diffseg.model import DDIMSampler, DiffSegNet, NoiseSchedule, sample_probabilities

logger = logging.getLogger(__name__)

#: progress(done, total) after each batch of frames
ProgressFn = Callable[[int, int], None]


class Cancelled(RuntimeError):
    """Raised when `should_stop` asked a long computation to stop."""


#: What the review (the dock, the CLI's frame scores) ranks by and shows, chosen by
#: benchmarks/bench_uncertainty.py (docs/benchmarks.md, "Uncertainty vs error"): with the K
#: diffusion samples, the mutual information (pixel AUROC for the label errors 0.90 against
#: 0.85 for the predictive entropy; frame Spearman 0.26 against 0.16); with test-time
#: augmentation, the predictive entropy over the views (AUROC 0.955, the best single map; the
#: top 10 % of frames hold 21 % of the wrong pixels against 10 % at random).
REVIEW_SAMPLES = {"frame_score": "mutual_information", "uncertainty_map": "mutual_information"}
REVIEW_TTA = {"tta": 8, "frame_score": "entropy", "uncertainty_map": "entropy"}


def review_options(mode: str = "samples", **kwargs) -> SegmentOptions:
    """SegmentOptions of the review: `mode` "samples" (K diffusion samples, 2.5-3 times
    faster on a CPU) or "tta" (8 flipped / turned views, finds the errors best: the dock's and
    the CLI's default); kwargs override (steps, samples, seed, …). The function's own default
    stays "samples" for callers of the API that relied on it."""
    if mode not in ("samples", "tta"):
        raise ValueError(f"review mode must be 'samples' or 'tta', got {mode!r}")
    return SegmentOptions(**{**(REVIEW_SAMPLES if mode == "samples" else REVIEW_TTA), **kwargs})


@dataclass
class SegmentOptions:
    """How to sample. steps: DDIM steps; samples: K stochastic samples per frame (their
    disagreement is the uncertainty); seed: same seed, same result; batch_size: frames per
    forward pass, None for :func:`default_batch_size` of the device; eta: DDIM stochasticity
    (0 = deterministic given the initial noise)."""

    steps: int = 4
    samples: int = 4
    seed: int = 0
    batch_size: int | None = None
    device: str = "auto"
    eta: float = 0.0
    #: stochastic sampler: every step but the last commits each pixel to a class drawn from
    #: its probabilities, so that samples part ways where the network hesitates (see
    #: :func:`~napari_diffseg.model.sampling.sample_probabilities`); False: DDIM on the mean
    draw_x0: bool = False
    #: run the convolutions on channels-last tensors (moves the model's weights to that
    #: layout); same results. On this project's CPU it did not help (see docs/benchmarks.md)
    channels_last: bool = False
    #: the convolutions' arithmetic: "fp32", "bf16" (autocast: convolutions and matrix
    #: products in bfloat16, softmax and the uncertainty in float32) or "auto": bf16 where
    #: the device computes it in hardware (CUDA, CPUs with AVX-512 BF16 or AMX), else fp32.
    #: Labels agree with fp32's on >= 99.9 % of pixels (docs/benchmarks.md)
    precision: str = "auto"
    #: ``torch.compile`` the encoder and the denoiser (compiled once per model and kept; the
    #: first batch pays the compilation, tens of seconds). Same results up to rounding.
    compile: bool = False
    #: connected components of a foreground class smaller than this many pixels (quoted at
    #: 512 x 512, scaled with the frame area) become background in the labels; the
    #: probabilities and the uncertainty are left as sampled. 0: labels are the plain argmax.
    min_component: int = 0
    #: test-time augmentation: V > 0 replaces the K diffusion samples by V views of the frame
    #: (the first V of :data:`~napari_diffseg.engine.uncertainty.DIHEDRAL`, flips and quarter
    #: turns, contrast jittered by ± tta_jitter for all but the first), one sample of
    #: `tta_steps` DDIM steps each; entropy and mutual information are then over the views.
    #: Each view runs the image encoder again: V views cost about V single-sample passes.
    tta: int = 0
    tta_steps: int = 1
    tta_jitter: float = 0.1
    #: what frame_scores / class_scores rank frames by: "entropy" or "mutual_information"
    #: (the map's mean over the plausible foreground, per class over the pixels where the
    #: class is plausible) or "expected_dice" (1 − soft Dice of the mean probabilities
    #: against their own argmax, per class and its mean)
    frame_score: str = "entropy"
    #: the map the results' `uncertainty` holds (what the overlay shows): "entropy",
    #: "mutual_information" or "disagreement" (the largest per-class standard deviation of
    #: the probabilities over the samples or views)
    uncertainty_map: str = "entropy"
    #: also return the per-class disagreement maps (std over the passes, (T, C, H, W))
    class_disagreement: bool = False
    #: calibration: each pass's probabilities become p ** (1/T) renormalised, i.e. the
    #: softmax of logits / T (see :mod:`napari_diffseg.engine.calibration`), for the
    #: probabilities, the uncertainty and the scores; the labels come from the passes as
    #: sampled, so a temperature never changes them; 1: as sampled
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.frame_score not in FRAME_SCORES:
            raise ValueError(f"frame_score must be one of {FRAME_SCORES}, got "
                             f"{self.frame_score!r}")
        if self.uncertainty_map not in UNCERTAINTY_MAPS:
            raise ValueError(f"uncertainty_map must be one of {UNCERTAINTY_MAPS}, got "
                             f"{self.uncertainty_map!r}")
        if not 0 <= self.tta <= len(DIHEDRAL):
            raise ValueError(f"tta must be 0..{len(DIHEDRAL)} views, got {self.tta}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


FRAME_SCORES = ("entropy", "mutual_information", "expected_dice")
UNCERTAINTY_MAPS = ("entropy", "mutual_information", "disagreement")


@dataclass
class Segmentation:
    """Result for T frames of H x W with C classes.

    probabilities: (T, C, H, W) float16, mean over the K samples
    labels: (T, H, W) uint8, argmax of the probabilities
    entropy: (T, H, W) float32, predictive entropy of the mean (nats)
    mutual_information: (T, H, W) float32, entropy of the mean minus mean entropy of the
        samples: the part of the uncertainty that is disagreement between samples
    frame_scores: (T,) float32, by `SegmentOptions.frame_score`: mean entropy over each
        frame's plausible foreground (pixels whose background probability is below 0.9; the
        whole frame if there are none), or the expected-Dice error: rank frames by it to
        review the doubtful ones first
    uncertainty: (T, H, W) float32, the map of `SegmentOptions.uncertainty_map`
    expected_dice: (T, C) float32, per-class expected-Dice error (NaN: background, absent)
    class_disagreement: (T, C, H, W) float16 per-class std over the passes, when asked for
    """

    probabilities: np.ndarray
    labels: np.ndarray
    entropy: np.ndarray
    mutual_information: np.ndarray
    frame_scores: np.ndarray
    timings: dict = field(default_factory=dict)
    device: str = "cpu"
    uncertainty: np.ndarray | None = None
    expected_dice: np.ndarray | None = None
    class_disagreement: np.ndarray | None = None


class _Prepared:
    """The model as the sampling loop calls it, with the options' memory layout and
    compilation applied: ``encode``, ``denoise_folded`` and the rest of DiffSegNet's sampling
    interface."""

    _compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self, model: DiffSegNet, options: SegmentOptions) -> None:
        self.config = model.config
        self.folded_label_shape = model.folded_label_shape
        self.unfold = model.unfold
        self.channels_last = options.channels_last
        if options.channels_last:
            model.to(memory_format=torch.channels_last)
        self.encode, self.denoise_folded = model.encode, model.denoise_folded
        if options.compile:
            if model not in self._compiled:
                self._compiled[model] = (torch.compile(model.encode),
                                         torch.compile(model.denoise_folded))
            self.encode, self.denoise_folded = self._compiled[model]

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def default_batch_size(device: torch.device | str) -> int:
    """Frames per forward pass when the caller does not say: 1 on a CPU, where a larger batch
    only spills the K samples' label maps out of the cache (512 px, 4 x 4: 0.44 s/frame at 1,
    0.99 s/frame at 4 on this project's 2-core machine), 8 on a GPU, which needs the batch to
    fill its cores."""
    return 1 if torch.device(device).type == "cpu" else 8


def _channels(batch: torch.Tensor) -> torch.Tensor:
    """Normalised frames (B, H, W), or (B, K, H, W) stacks of a frame and its neighbours
    (models with temporal context) -> the network's input (B, Cin, H, W)."""
    return batch[:, None] if batch.ndim == 3 else batch


def video_loader(
    frames: np.ndarray, normalisation: dict | None, context_frames: int = 0
) -> Callable[[np.ndarray], np.ndarray]:
    """A function from frame indices (N,) of the raw video `frames` (T, H, W[, 3]) to the
    network's normalised input: (N, H, W) float32, or with temporal context (N, 1 + 2 c, H, W)
    stacks of each frame and its neighbours (:func:`napari_diffseg.data.context_indices`).
    The whole video's intensity range is used, so one frame gives the same input as the run;
    only the requested frames are ever converted to float."""
    lo, hi = normalisation_range(frames, normalisation)
    clahe = (normalisation or {}).get("clahe")

    def gray(idx: np.ndarray) -> np.ndarray:
        images = apply_normalisation(frames[idx], lo, hi, clahe)
        return images.mean(axis=-1) if images.ndim == 4 else images

    if context_frames <= 0:
        return gray

    def load(idx: np.ndarray) -> np.ndarray:
        table = context_indices(idx, frames.shape[0], context_frames)
        flat, inverse = np.unique(table.reshape(-1), return_inverse=True)
        images = gray(flat)[inverse]
        return images.reshape(*table.shape, *images.shape[-2:])

    return load


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad (B, C, H, W) on the bottom/right to multiples of `multiple`."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


@dataclass
class _Maps:
    """One batch's maps on the model's device, float32: mean (B, C, H, W), entropy and
    mutual information (B, H, W), per-class std over the passes (B, C, H, W) or None."""

    mean: torch.Tensor
    entropy: torch.Tensor
    mutual_information: torch.Tensor
    std: torch.Tensor | None = None
    #: (B, C, H, W) mean of the passes before calibration, which the labels come from (a
    #: temperature changes what the probabilities say, never the labels); None: `mean`
    raw_mean: torch.Tensor | None = None


def uncertainty_from_samples(
    samples: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """samples: (B, K, C, H, W) class probabilities of K samples -> (mean (B, C, H, W),
    predictive entropy (B, H, W), mutual information (B, H, W)), entropies in nats.
    MI = H[mean] - mean H[sample]: zero where all samples agree, high where they disagree."""
    mean = samples.mean(dim=1)
    entropy = _entropy(mean, dim=1)
    return mean, entropy, (entropy - _entropy(samples, dim=2).mean(dim=1)).clamp_min(0)


#: on a CPU the K samples of a frame run through the denoiser in chunks of at most this many
#: label-map pixels (rows x H x W), so that a chunk's maps stay in the cache: at 1024 px one
#: sample at a time, at 512 px four, at 256 px sixteen (a GPU takes all rows at once)
CPU_CHUNK_PIXELS = 4 * 512 * 512


def class_argmax(probs: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H, W) int64 index of the largest class, the first on ties: what
    ``probs.argmax(dim=1)`` gives, through ``max``, which on a CPU reduces over the class
    dimension about 8 times faster (argmax took 40-60 ms per 512 px frame, 5 % of a 4 x 4
    segmentation)."""
    return probs.max(dim=1).indices


def _calibrate(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """(N, C, H, W) probabilities of one pass -> softmax(log p / T), the same for T = 1."""
    if temperature == 1.0:
        return probs
    p = probs.clamp_min(1e-12).pow(1.0 / temperature)
    return p / p.sum(dim=1, keepdim=True)


def _step_check(should_stop: Callable[[], bool] | None) -> Callable[[int], None]:
    """The sampler's per-step callback: raises Cancelled once `should_stop()` says so."""

    def check(_step: int) -> None:
        if should_stop is not None and should_stop():
            raise Cancelled("segmentation cancelled")

    return check


class _Accumulator:
    """Sums over the passes of a batch of B frames: p, the pass entropy and (optionally) p²,
    so that the passes' full-resolution maps never exist together."""

    def __init__(self, b: int, c: int, h: int, w: int, device, with_std: bool) -> None:
        self.sum_p = torch.zeros((b, c, h, w), device=device)
        self.sum_h = torch.zeros((b, h, w), device=device)
        self.sum_p2 = torch.zeros((b, c, h, w), device=device) if with_std else None
        self.sum_raw: torch.Tensor | None = None

    def add(self, frame: torch.Tensor, probs: torch.Tensor, temperature: float = 1.0) -> None:
        """probs (N, C, H, W) of the frames `frame` (N,) of the batch, before calibration;
        the maps use them at `temperature`, the labels as they are."""
        if temperature != 1.0:
            if self.sum_raw is None:
                self.sum_raw = torch.zeros_like(self.sum_p)
            self.sum_raw.index_add_(0, frame, probs)
            probs = _calibrate(probs, temperature)
        self.sum_p.index_add_(0, frame, probs)
        self.sum_h.index_add_(0, frame, _entropy(probs, dim=1))
        if self.sum_p2 is not None:
            self.sum_p2.index_add_(0, frame, probs * probs)

    def maps(self, passes: int) -> _Maps:
        mean = self.sum_p / passes
        ent = _entropy(mean, dim=1)
        std = None if self.sum_p2 is None else class_std(self.sum_p, self.sum_p2, passes)
        raw = None if self.sum_raw is None else self.sum_raw / passes
        return _Maps(mean, ent, (ent - self.sum_h / passes).clamp_min(0), std, raw)


def frame_generator(seed: int, index: int, device: torch.device | str) -> torch.Generator:
    """The random stream of frame `index` of a video for a run seeded `seed`: every draw that
    decides a frame's labels (its initial noise, its TTA contrast jitter) comes from its own
    stream, so a frame gets the same labels whether it is segmented alone, in a range or in
    the whole video, in any batch size (for the default eta = 0 and draw_x0 = False)."""
    mixed = (int(seed) * 1_000_003 + int(index)) % (2**63 - 1)
    return torch.Generator(device=device).manual_seed(mixed)


def _frame_noise(generators: list[torch.Generator], rows: int, shape, device) -> torch.Tensor:
    """Initial noise (len(generators) x rows, *shape): `rows` draws from each frame's stream,
    frame after frame (row r belongs to frame r // rows)."""
    return torch.cat([torch.randn((rows, *shape), generator=g, device=device)
                      for g in generators])


def _sample_batch(
    model: _Prepared,
    batch: torch.Tensor,
    sampler: DDIMSampler,
    generator: list[torch.Generator],
    samples: int,
    should_stop: Callable[[], bool] | None = None,
    options: SegmentOptions | None = None,
) -> _Maps:
    """batch: (B, H, W) float32 normalised frames on the model's device -> the batch's maps
    (:class:`_Maps`). `should_stop` is polled after every DDIM step: cancelling never waits
    for a whole batch.

    `generator`: one stream per frame (:func:`frame_generator`); the first also serves the
    draws of eta > 0 and draw_x0. The B x K (frame, sample) rows run in chunks
    (:data:`CPU_CHUNK_PIXELS`); the initial noise of all rows is drawn first, each frame's K
    rows from its own stream, so the result depends neither on the chunking nor on the batch.
    The mean and the mean sample entropy are accumulated chunk by chunk, so the K samples'
    full-resolution maps never exist together."""
    options = options or SegmentOptions()
    check = _step_check(should_stop)
    device = batch.device
    c, k = model.config.num_classes, max(1, samples)
    x, (bh, bw) = pad_to_multiple(_channels(batch), model.config.multiple)
    b, _, h, w = x.shape
    rows = b * k
    chunk = rows if device.type != "cpu" else max(1, CPU_CHUNK_PIXELS // (h * w))
    acc = _Accumulator(b, c, bh, bw, device, _needs_std(options))
    with _autocast(device, options.precision):
        features = model.encode(model.layout(x))
        noise = _frame_noise(generator, k, model.folded_label_shape(features)[1:], device)
        for start in range(0, rows, chunk):
            frame = torch.arange(start, min(start + chunk, rows), device=device) // k
            probs = sample_probabilities(model, features[frame], sampler, generator[0],
                                         on_step=check, noise=noise[start : start + chunk],
                                         draw_x0=options.draw_x0)
            acc.add(frame, probs.float()[..., :bh, :bw], options.temperature)
    return acc.maps(k)


def _autocast(device: torch.device, precision: str):
    """bf16 autocast where :func:`~napari_diffseg.engine.device.inference_dtype` says so."""
    dtype = inference_dtype(device, precision)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)


def _needs_std(options: SegmentOptions) -> bool:
    return options.class_disagreement or options.uncertainty_map == "disagreement"


def _tta_batch(
    model: _Prepared,
    batch: torch.Tensor,
    sampler: DDIMSampler,
    generator: list[torch.Generator],
    options: SegmentOptions,
    should_stop: Callable[[], bool] | None = None,
) -> _Maps:
    """Test-time augmentation: batch (B, H, W) -> maps over `options.tta` views, each view
    one sample of `sampler`'s steps on a flipped / turned, contrast-jittered frame, its
    probabilities turned back before they are accumulated. `generator`: one stream per frame
    (:func:`frame_generator`) for its noise and jitter; the first also serves draw_x0."""
    check = _step_check(should_stop)
    device = batch.device
    b, (bh, bw) = batch.shape[0], batch.shape[-2:]
    acc = _Accumulator(b, model.config.num_classes, bh, bw, device, _needs_std(options))
    frames = torch.arange(b, device=device)
    with _autocast(device, options.precision):
        for view in range(options.tta):
            image = dihedral(_channels(batch), view)
            if view > 0:
                image = torch.cat([jitter_intensity(image[i : i + 1], options.tta_jitter, g)
                                   for i, g in enumerate(generator)])
            vh, vw = image.shape[-2:]
            x, _ = pad_to_multiple(image, model.config.multiple)
            features = model.encode(model.layout(x))
            noise = _frame_noise(generator, 1, model.folded_label_shape(features)[1:], device)
            probs = sample_probabilities(model, features, sampler, generator[0], on_step=check,
                                         noise=noise, draw_x0=options.draw_x0)
            probs = dihedral_inverse(probs.float()[..., :vh, :vw], view)
            acc.add(frames, probs, options.temperature)
    return acc.maps(options.tta)


@torch.no_grad()
def _stream(
    model: DiffSegNet,
    todo: np.ndarray,
    load: Callable[[np.ndarray], np.ndarray],
    *,
    timesteps: int,
    options: SegmentOptions,
    should_stop: Callable[[], bool] | None,
):
    """The sampling loop shared by every entry point: for each batch of the frame indices
    `todo`, `load(indices)` gives (B, H, W) float32 normalised frames; yields (indices,
    :class:`_Maps`), float32 tensors on the model's device. Each frame draws from its own
    stream seeded by `options.seed` and its index (:func:`frame_generator`)."""
    device = next(model.parameters()).device
    batch_size = options.batch_size or default_batch_size(device)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {options.batch_size}")
    model.eval()
    prepared = _Prepared(model, options)
    steps = options.tta_steps if options.tta else options.steps
    sampler = DDIMSampler(NoiseSchedule(timesteps), steps=steps, eta=options.eta)
    check = _step_check(should_stop)
    for start in range(0, todo.size, batch_size):
        check(start)
        idx = todo[start : start + batch_size]
        generator = [frame_generator(options.seed, i, device) for i in idx]
        batch = torch.from_numpy(np.ascontiguousarray(load(idx), dtype=np.float32))
        if options.tta:
            maps = _tta_batch(prepared, batch.to(device), sampler, generator, options,
                              should_stop)
        else:
            maps = _sample_batch(prepared, batch.to(device), sampler, generator,
                                 options.samples, should_stop, options)
        yield idx, maps


def _as_numpy(maps: _Maps):
    """The stored form of a batch's maps: probabilities float16, entropy and MI float32."""
    return (maps.mean.to(torch.float16).cpu().numpy(), maps.entropy.cpu().numpy(),
            maps.mutual_information.cpu().numpy())


def _uncertainty_map(maps: _Maps, which: str) -> torch.Tensor:
    """(B, H, W) map named by SegmentOptions.uncertainty_map."""
    if which == "mutual_information":
        return maps.mutual_information
    if which == "disagreement":
        return maps.std.max(dim=1).values
    return maps.entropy


#: a class counts as plausible at a pixel from this probability on (:func:`class_scores`)
PLAUSIBLE_CLASS = 0.1


def _frame_scores(mean: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
    """Torch form of :func:`frame_scores` (float32 in, so that numpy never does float16
    arithmetic, which it emulates: 0.15 s per 1024 px frame)."""
    region = mean[:, 0] < 0.9
    count = region.sum(dim=(1, 2))
    inside = (entropy * region).sum(dim=(1, 2)) / count.clamp_min(1)
    return torch.where(count > 0, inside, entropy.mean(dim=(1, 2)))


def _class_scores(mean: torch.Tensor, entropy: torch.Tensor, threshold: float) -> torch.Tensor:
    """Torch form of :func:`class_scores`."""
    plausible = mean >= threshold
    sums = (entropy[:, None] * plausible).sum(dim=(2, 3))
    counts = plausible.sum(dim=(2, 3))
    return torch.where(counts > 0, sums / counts.clamp_min(1), float("nan"))


def predict_normalised(
    model: DiffSegNet,
    images: np.ndarray,
    *,
    timesteps: int,
    options: SegmentOptions | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """images: (N, H, W) float32 normalised frames, or (N, 1 + 2 c, H, W) stacks for a model
    with temporal context -> (mean probabilities (N, C, H, W) float16, entropy (N, H, W)
    float32, mutual information (N, H, W) float32)."""
    n, (h, w) = images.shape[0], images.shape[-2:]
    c = model.config.num_classes
    probs_out = np.empty((n, c, h, w), dtype=np.float16)
    ent_out = np.empty((n, h, w), dtype=np.float32)
    mi_out = np.empty((n, h, w), dtype=np.float32)
    for idx, maps in _stream(
        model, np.arange(n), lambda idx: images[idx], timesteps=timesteps,
        options=options or SegmentOptions(), should_stop=should_stop,
    ):
        probs_out[idx], ent_out[idx], mi_out[idx] = _as_numpy(maps)
        if progress is not None:
            progress(int(idx[-1]) + 1, n)
    return probs_out, ent_out, mi_out


def frame_scores(probabilities: np.ndarray, entropy: np.ndarray) -> np.ndarray:
    """(T,) mean entropy over each frame's plausible foreground (background prob < 0.9; the
    whole frame if there is none)."""
    return _frame_scores(torch.from_numpy(np.asarray(probabilities, dtype=np.float32)),
                         torch.from_numpy(np.asarray(entropy, dtype=np.float32))).numpy()


def class_scores(probabilities: np.ndarray, entropy: np.ndarray,
                 threshold: float = PLAUSIBLE_CLASS) -> np.ndarray:
    """(T, C) per-class uncertainty: mean entropy over the pixels where the class is plausible
    (its probability >= `threshold`); NaN where a class is nowhere plausible in a frame.
    probabilities: (T, C, H, W); entropy: (T, H, W)."""
    return _class_scores(torch.from_numpy(np.asarray(probabilities, dtype=np.float32)),
                         torch.from_numpy(np.asarray(entropy, dtype=np.float32)),
                         threshold).numpy()


@dataclass
class SegmentChunk:
    """The result for some frames of a video, as :func:`iter_segment` streams it.

    indices: (B,) frame indices in the video; probabilities: (B, C, H, W) float16;
    labels: (B, H, W) uint8; entropy, mutual_information: (B, H, W) float32;
    frame_scores: (B,) float32; class_scores: (B, C) float32 (see :func:`class_scores`, or
    the per-class expected-Dice error with ``frame_score="expected_dice"``);
    done / total: frames finished so far in this run / frames asked for;
    uncertainty: (B, H, W) float32 map of `SegmentOptions.uncertainty_map`;
    expected_dice: (B, C) float32 per-class expected-Dice error (NaN: background, absent);
    class_disagreement: (B, C, H, W) float16 per-class std over the passes, or None.
    """

    indices: np.ndarray
    probabilities: np.ndarray
    labels: np.ndarray
    entropy: np.ndarray
    mutual_information: np.ndarray
    frame_scores: np.ndarray
    class_scores: np.ndarray
    done: int
    total: int
    elapsed_s: float
    uncertainty: np.ndarray | None = None
    expected_dice: np.ndarray | None = None
    class_disagreement: np.ndarray | None = None


def iter_segment(
    model: DiffSegNet,
    frames: np.ndarray,
    *,
    normalisation: dict,
    timesteps: int,
    options: SegmentOptions | None = None,
    indices=None,
    should_stop: Callable[[], bool] | None = None,
):
    """Segment frames of a raw video one batch at a time, yielding a :class:`SegmentChunk`
    per batch (stream them into a viewer; stop iterating to cancel).

    frames: (T, H, W) or (T, H, W, 3) raw video of any dtype, normalised with the whole
    video's intensity range (so one frame gives the same result as the whole run); only the
    current batch is ever converted to float. indices: frames to do (default all), in order.
    """
    frames = np.asarray(frames)
    if frames.ndim not in (3, 4):
        raise ValueError(f"frames must be (T, H, W) or (T, H, W, 3), got shape {frames.shape}")
    todo = np.arange(frames.shape[0]) if indices is None else np.asarray(indices, dtype=int)
    if todo.size and (todo.min() < 0 or todo.max() >= frames.shape[0]):
        raise ValueError(f"frame indices must be in 0..{frames.shape[0] - 1}")
    load = video_loader(frames, normalisation, model.config.context_frames)
    t0 = time.perf_counter()
    done = 0
    options = options or SegmentOptions()
    for idx, maps in _stream(
        model, todo, load, timesteps=timesteps, options=options, should_stop=should_stop,
    ):
        done += idx.size
        mean, entropy = maps.mean, maps.entropy
        probs, entropy_np, mi_np = _as_numpy(maps)
        decide = mean if maps.raw_mean is None else maps.raw_mean
        labels = class_argmax(decide).to(torch.uint8).cpu().numpy()
        if options.min_component > 0:
            labels = remove_specks(labels, options.min_component)
        per_class_dice = expected_dice_error(mean)
        if options.frame_score == "expected_dice":
            scores, per_class = expected_dice_frame_score(per_class_dice), per_class_dice
        else:
            scored = maps.mutual_information if options.frame_score == "mutual_information" \
                else entropy
            scores = _frame_scores(mean, scored)
            per_class = _class_scores(mean, scored, PLAUSIBLE_CLASS)
        uncertainty = _uncertainty_map(maps, options.uncertainty_map)
        yield SegmentChunk(
            indices=idx,
            probabilities=probs,
            labels=labels,
            entropy=entropy_np,
            mutual_information=mi_np,
            frame_scores=scores.cpu().numpy(),
            class_scores=per_class.cpu().numpy(),
            done=done,
            total=int(todo.size),
            elapsed_s=time.perf_counter() - t0,
            uncertainty=entropy_np if uncertainty is entropy else uncertainty.cpu().numpy(),
            expected_dice=per_class_dice.cpu().numpy(),
            class_disagreement=(maps.std.to(torch.float16).cpu().numpy()
                                if options.class_disagreement else None),
        )


def segment(
    model: DiffSegNet,
    frames: np.ndarray,
    *,
    normalisation: dict,
    timesteps: int,
    options: SegmentOptions | None = None,
    progress: ProgressFn | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Segmentation:
    """Segment raw frames (T, H, W) (any dtype; (T, H, W, 3) is averaged to gray)."""
    t0 = time.perf_counter()
    frames = np.asarray(frames)
    n, h, w = frames.shape[:3]
    c = model.config.num_classes
    probs = np.empty((n, c, h, w), dtype=np.float16)
    labels = np.empty((n, h, w), dtype=np.uint8)
    entropy = np.empty((n, h, w), dtype=np.float32)
    mi = np.empty((n, h, w), dtype=np.float32)
    scores = np.empty(n, dtype=np.float32)
    options = options or SegmentOptions()
    unc = entropy if options.uncertainty_map == "entropy" else np.empty_like(entropy)
    exp_dice = np.empty((n, c), dtype=np.float32)
    disagreement = (np.empty((n, c, h, w), dtype=np.float16)
                    if options.class_disagreement else None)
    for chunk in iter_segment(
        model, frames, normalisation=normalisation, timesteps=timesteps, options=options,
        should_stop=should_stop,
    ):
        probs[chunk.indices] = chunk.probabilities
        labels[chunk.indices] = chunk.labels
        entropy[chunk.indices] = chunk.entropy
        mi[chunk.indices] = chunk.mutual_information
        scores[chunk.indices] = chunk.frame_scores
        if unc is not entropy:
            unc[chunk.indices] = chunk.uncertainty
        exp_dice[chunk.indices] = chunk.expected_dice
        if disagreement is not None:
            disagreement[chunk.indices] = chunk.class_disagreement
        if progress is not None:
            progress(chunk.done, chunk.total)
    elapsed = time.perf_counter() - t0
    device = next(model.parameters()).device
    logger.info("segmented %d frames in %.2f s on %s", n, elapsed, device)
    return Segmentation(
        probabilities=probs,
        labels=labels,
        entropy=entropy,
        mutual_information=mi,
        frame_scores=scores,
        timings={"total_s": elapsed, "per_frame_s": elapsed / max(n, 1)},
        device=str(device),
        uncertainty=unc,
        expected_dice=exp_dice,
        class_disagreement=disagreement,
    )


def load_for_inference(path, device: str = "auto"):
    """(model on the device, checkpoint) from a checkpoint file."""
    from napari_diffseg.engine.checkpoint import build_model, load_checkpoint

    dev = resolve_device(device)
    ckpt = load_checkpoint(path, map_location="cpu")
    model = build_model(ckpt).to(dev)
    return model, ckpt


@torch.no_grad()
def frame_samples(
    model: DiffSegNet,
    frames: np.ndarray,
    index: int,
    *,
    normalisation: dict,
    timesteps: int,
    options: SegmentOptions | None = None,
) -> np.ndarray:
    """The K diffusion samples of one frame, each as a label map: (K, H, W) uint8, the argmax
    of each sample's probabilities (what "show K samples" displays; their mean is what
    :func:`segment` returns). frames: (T, H, W[, 3]) raw video, normalised with the whole
    video's range as :func:`iter_segment` does; options: steps, samples, seed, eta, draw_x0."""
    options = options or SegmentOptions()
    frames = np.asarray(frames)
    if not 0 <= index < frames.shape[0]:
        raise ValueError(f"frame index must be in 0..{frames.shape[0] - 1}, got {index}")
    image = video_loader(frames, normalisation, model.config.context_frames)(
        np.array([index]))
    device = next(model.parameters()).device
    model.eval()
    x, (h, w) = pad_to_multiple(_channels(torch.from_numpy(image.astype(np.float32))).to(device),
                                model.config.multiple)
    k = max(1, options.samples)
    sampler = DDIMSampler(NoiseSchedule(timesteps), steps=options.steps, eta=options.eta)
    generator = frame_generator(options.seed, index, device)
    features = model.encode(x).repeat_interleave(k, dim=0)
    noise = _frame_noise([generator], k, model.folded_label_shape(features)[1:], device)
    probs = sample_probabilities(model, features, sampler, generator, noise=noise,
                                 draw_x0=options.draw_x0)
    return class_argmax(probs[..., :h, :w]).to(torch.uint8).cpu().numpy()
