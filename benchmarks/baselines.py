"""Baselines for the quality benchmark: a plain U-Net on the diffusion model's own backbone.

The segmenter is :class:`napari_diffseg.model.network.ImageEncoder` (the image encoder of
:class:`~napari_diffseg.model.DiffSegNet`, same :class:`~napari_diffseg.model.ModelConfig`)
followed by a 1x1 convolution to class logits: the diffusion model minus its label denoiser.
Both trainers use what the diffusion trainer uses – the same random crops with flips and
rotations (:func:`napari_diffseg.engine.augment.random_crops`), the same strong intensity view
(:func:`~napari_diffseg.engine.augment.strong_intensity`), the same CE + Dice loss
(:func:`napari_diffseg.model.losses.ce_dice_loss`), AdamW, cosine learning-rate decay to 10 %,
gradient clipping at 1, EMA teacher decay with the same warm-up, the same sigmoid ramp-up – so
that the comparison isolates the diffusion formulation and its semi-supervised terms.

* :func:`train_unet` with ``mode="supervised"``: labelled crops only (method a);
* ``mode="mean_teacher"``: + an EMA teacher's argmax pseudo-labels on unlabelled crops (weak
  view), pixels below the confidence threshold ignored, learnt by the student on the strong
  view (method b; SSL4MIS's mean teacher with confidence-thresholded pseudo-labels, as in
  FixMatch).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from napari_diffseg.data.sequences import SparseDataset
from napari_diffseg.engine.augment import crop_size_for, random_crops, strong_intensity
from napari_diffseg.engine.inference import pad_to_multiple
from napari_diffseg.engine.training import sigmoid_rampup
from napari_diffseg.model import ModelConfig
from napari_diffseg.model.losses import ce_dice_loss
from napari_diffseg.model.network import DetailBranch, ImageEncoder


class UNetSegmenter(nn.Module):
    """image (B, Cin, H, W) in about [-1, 1], H and W multiples of ``config.multiple`` ->
    class logits (B, C, H, W). The encoder and the full-resolution head (1x1 logits unfolded
    from the strided encoder, plus the detail branch) are the diffusion model's."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ImageEncoder(config)
        self.head = nn.Conv2d(config.width, config.num_classes * config.encoder_stride**2, 1)
        self.detail = DetailBranch(config) if config.detail_width else None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        features = self.encoder(image)
        logits = self.head(features)
        if self.config.encoder_stride > 1:
            logits = nn.functional.pixel_shuffle(logits, self.config.encoder_stride)
        if self.detail is not None:
            logits = logits + self.detail(image, features)
        return logits


@dataclass
class UNetOptions:
    """Options of :func:`train_unet`; the names and defaults mirror
    :class:`napari_diffseg.engine.TrainOptions`."""

    mode: str = "supervised"  # "supervised" | "mean_teacher"
    iterations: int = 2000
    batch_size: int = 8
    crop_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 1e-4
    dice_weight: float = 1.0
    ema_decay: float = 0.99
    confidence_threshold: float = 0.8
    pseudo_weight: float = 0.1
    rampup_fraction: float = 0.4
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.mode not in ("supervised", "mean_teacher"):
            raise ValueError(f"mode must be 'supervised' or 'mean_teacher', got {self.mode!r}")


@dataclass
class UNetResult:
    model: UNetSegmenter
    losses: list[dict[str, float]]
    train_seconds: float


def _learning_rate(o: UNetOptions, iteration: int) -> float:
    if o.iterations <= 1:
        return o.lr
    progress = min(iteration / (o.iterations - 1), 1.0)
    return o.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_unet(data: SparseDataset, options: UNetOptions, model_config: ModelConfig) -> UNetResult:
    """Train a :class:`UNetSegmenter` on `data` (labelled frames; unlabelled frames too in
    ``mean_teacher`` mode). ``model_config.num_classes`` is raised to the data's classes."""
    o = options
    device = torch.device(o.device)
    torch.manual_seed(o.seed)
    cfg = ModelConfig(
        **{
            **model_config.to_dict(),
            "num_classes": max(data.num_classes, model_config.num_classes, 2),
        }
    )
    model = UNetSegmenter(cfg).to(device)
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    rng = np.random.default_rng(o.seed)
    generator = torch.Generator().manual_seed(o.seed)
    crop = crop_size_for(data.images + data.unlabelled, o.crop_size, cfg.multiple)
    semi = o.mode == "mean_teacher" and len(data.unlabelled) > 0
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for it in range(o.iterations):
        model.train()
        img_l, lab_l = random_crops(rng, data.images, data.labels, o.batch_size, crop)
        x_l = torch.from_numpy(img_l)[:, None].to(device)
        y_l = torch.from_numpy(lab_l).to(device)
        losses = {"supervised": ce_dice_loss(model(x_l), y_l, dice_weight=o.dice_weight)}
        total = losses["supervised"]
        if semi:
            img_u, _ = random_crops(rng, data.unlabelled, None, o.batch_size, crop)
            x_u = torch.from_numpy(img_u)[:, None].to(device)
            with torch.no_grad():
                confidence, pseudo = teacher(x_u).float().softmax(dim=1).max(dim=1)
            keep = (confidence >= o.confidence_threshold).float()
            logits_u = model(strong_intensity(x_u, generator))
            losses["pseudo"] = ce_dice_loss(
                logits_u, pseudo, weight=keep, dice_weight=o.dice_weight
            )
            ramp = sigmoid_rampup(it, int(o.rampup_fraction * o.iterations))
            total = total + ramp * o.pseudo_weight * losses["pseudo"]
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(o, it)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        with torch.no_grad():  # EMA teacher, same warm-up as the diffusion trainer
            decay = min(o.ema_decay, (1 + it) / (10 + it))
            for pt, ps in zip(teacher.parameters(), model.parameters(), strict=True):
                pt.mul_(decay).add_(ps.detach(), alpha=1 - decay)
        history.append(
            {k: float(v.detach()) for k, v in losses.items()} | {"total": float(total.detach())}
        )
    model.eval()
    return UNetResult(model, history, time.perf_counter() - t0)


@torch.no_grad()
def predict_unet(model: UNetSegmenter, images: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """images: (N, H, W) float32 normalised frames -> class probabilities (N, C, H, W) float32
    (frames reflect-padded to the network's multiple and cropped back)."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))
        x, (h, w) = pad_to_multiple(batch[:, None].to(device), model.config.multiple)
        out.append(model(x).float().softmax(dim=1)[..., :h, :w].cpu().numpy())
    return np.concatenate(out)
