"""Uncertainty measures computed from a frame's predictions (torch, no Qt).

The sampler (:mod:`napari_diffseg.engine.inference`) gives, per frame, the mean class
probabilities of several stochastic passes: K diffusion samples, or V test-time-augmented
views. From them:

* predictive entropy H[mean] and mutual information H[mean] − mean H[pass] (the part that is
  disagreement between passes), both (B, H, W) in nats;
* per-class disagreement: the standard deviation of a class's probability over the passes,
  (B, C, H, W);
* the expected-Dice error of a frame: 1 − soft Dice between the mean probabilities and their
  own argmax, per class (B, C) and its mean over the foreground classes (B,). A frame whose
  probabilities are spread (thin structures at 0.5, blurred borders) scores high even when
  every pass agrees, which the pixel maps summed over a frame do not capture as well.

Test-time augmentation: the eight flips and quarter turns of the square (the dihedral group),
with a small random change of contrast and brightness for every view but the first.
"""

from __future__ import annotations

import torch

#: (quarter turns, flip first) of the views, identity first: test-time augmentation takes the
#: first V of them
DIHEDRAL = ((0, False), (0, True), (2, True), (2, False), (1, False), (3, False), (1, True),
            (3, True))

#: a class takes part in a frame's expected-Dice score when it is the argmax somewhere in the
#: frame, or its probabilities sum to at least this many pixels
EXPECTED_DICE_MIN_MASS = 8.0


def entropy(probs: torch.Tensor, dim: int) -> torch.Tensor:
    """Entropy in nats of the class probabilities along `dim`."""
    return -(probs * probs.clamp_min(1e-8).log()).sum(dim=dim)


def dihedral(x: torch.Tensor, view: int) -> torch.Tensor:
    """View `view` of DIHEDRAL applied to the last two dimensions of x (..., H, W)."""
    turns, flip = DIHEDRAL[view]
    if flip:
        x = x.flip(-1)
    return torch.rot90(x, turns, dims=(-2, -1)) if turns else x


def dihedral_inverse(x: torch.Tensor, view: int) -> torch.Tensor:
    """The inverse of :func:`dihedral`: dihedral_inverse(dihedral(x, v), v) == x."""
    turns, flip = DIHEDRAL[view]
    if turns:
        x = torch.rot90(x, -turns, dims=(-2, -1))
    return x.flip(-1) if flip else x


def jitter_intensity(
    images: torch.Tensor, amount: float, generator: torch.Generator
) -> torch.Tensor:
    """images (B, 1, H, W) normalised to about [-1, 1] -> a x + b, with a in 1 ± amount and
    b in ± amount drawn per frame from `generator` (on the generator's device)."""
    if amount <= 0:
        return images
    b = images.shape[0]
    u = torch.rand((2, b), generator=generator, device=generator.device) * 2 - 1
    scale = (1 + amount * u[0]).to(images.device, images.dtype)[:, None, None, None]
    shift = (amount * u[1]).to(images.device, images.dtype)[:, None, None, None]
    return images * scale + shift


def class_std(sum_p: torch.Tensor, sum_p2: torch.Tensor, passes: int) -> torch.Tensor:
    """Per-class standard deviation over `passes` from the sums of p and p² (B, C, H, W)."""
    mean = sum_p / passes
    return (sum_p2 / passes - mean * mean).clamp_min(0).sqrt()


def expected_dice_error(mean: torch.Tensor) -> torch.Tensor:
    """mean: (B, C, H, W) class probabilities -> (B, C) float32: 1 − soft Dice between each
    class's probability map and the mask where it is the argmax. NaN for the background
    (column 0) and for a class absent from the frame (see :data:`EXPECTED_DICE_MIN_MASS`)."""
    b, c = mean.shape[:2]
    mean = mean.float()
    top, index = mean.max(dim=1)  # the argmax class and its probability, per pixel
    index, top = index.view(b, -1), top.view(b, -1)
    # per class: the probability summed where it is the argmax, and that area (no one-hot:
    # scatter-adds over the pixels, a few ms per 512 px frame)
    inter = torch.zeros((b, c), device=mean.device).scatter_add_(1, index, top)
    area = torch.zeros((b, c), device=mean.device).scatter_add_(1, index, torch.ones_like(top))
    mass = mean.sum(dim=(2, 3))
    err = 1 - 2 * inter / (mass + area).clamp_min(1e-6)
    present = (area > 0) | (mass >= EXPECTED_DICE_MIN_MASS)
    present[:, 0] = False
    return torch.where(present, err, torch.full_like(err, float("nan")))


def expected_dice_frame_score(per_class: torch.Tensor) -> torch.Tensor:
    """(B, C) from :func:`expected_dice_error` -> (B,): mean over the classes present, 0 for a
    frame with no foreground at all."""
    present = ~per_class.isnan()
    total = torch.where(present, per_class, torch.zeros_like(per_class)).sum(dim=1)
    return total / present.sum(dim=1).clamp_min(1)


def plausible_mean(values: torch.Tensor, mean: torch.Tensor, threshold: float) -> torch.Tensor:
    """values (B, C, H, W), mean probabilities (B, C, H, W) -> (B, C): the mean of each
    class's values over the pixels where that class is plausible (probability >= threshold);
    NaN where it is nowhere plausible."""
    plausible = mean >= threshold
    sums = (values * plausible).sum(dim=(2, 3))
    counts = plausible.sum(dim=(2, 3))
    return torch.where(counts > 0, sums / counts.clamp_min(1), float("nan"))
