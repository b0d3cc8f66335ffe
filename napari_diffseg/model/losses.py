"""Losses: supervised cross-entropy + Dice on the predicted clean label map, and the
prototype-based contrastive consistency of Xi et al. 2025 on the denoiser's latent features.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """labels (B, H, W) int64 -> (B, C, H, W) float one-hot."""
    return F.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()


def labels_to_analog(
    labels: torch.Tensor, num_classes: int, ignore_index: int | None = None
) -> torch.Tensor:
    """labels (B, H, W) -> one-hot scaled to [-1, 1], the x0 the diffusion runs on.
    Pixels labelled `ignore_index` (unknown) get 0 for every class: no class, neither -1
    nor +1, so the noisy input does not tell the network an answer nobody knows."""
    if ignore_index is None:
        return one_hot(labels, num_classes) * 2 - 1
    known = labels != ignore_index
    analog = one_hot(torch.where(known, labels, 0), num_classes) * 2 - 1
    return analog * known[:, None]


def ce_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    dice_weight: float = 1.0,
    class_weight: torch.Tensor | None = None,
    ignore_index: int | None = None,
) -> torch.Tensor:
    """Cross-entropy + soft Dice (foreground classes) between logits (B, C, H, W) and target
    ids (B, H, W); optional per-pixel weight (B, H, W) in [0, 1] (0 = ignore the pixel);
    pixels whose target is `ignore_index` are ignored too (weight 0); optional per-class
    cross-entropy weight (C,) (thin, rare classes count more). The cross-entropy is averaged
    over the pixel weights, not the class weights, so class weights lift rare classes without
    changing the loss's scale on background-only crops."""
    c = logits.shape[1]
    logits = logits.float()
    target = target.long()
    if ignore_index is not None:
        known = target != ignore_index
        target = torch.where(known, target, 0)
        weight = known.float() if weight is None else weight * known
    ce = F.cross_entropy(logits, target, reduction="none")
    if class_weight is not None:
        ce = ce * class_weight.to(ce.device, ce.dtype)[target]
    if weight is None:
        weight = torch.ones_like(ce)
    denom = weight.sum().clamp(min=1.0)
    loss = (ce * weight).sum() / denom
    if dice_weight > 0 and c > 1:
        probs = logits.softmax(dim=1)[:, 1:]
        onehot = one_hot(target, c)[:, 1:]
        w = weight[:, None]
        inter = (probs * onehot * w).sum(dim=(0, 2, 3))
        total = ((probs + onehot) * w).sum(dim=(0, 2, 3))
        present = onehot.mul(w).sum(dim=(0, 2, 3)) > 0
        dice = (2 * inter + 1.0) / (total + 1.0)
        if present.any():
            loss = loss + dice_weight * (1 - dice[present]).mean()
    return loss


def masked_prototypes(
    latent: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked average pooling per class: latent (B, D, H, W), labels (B, H, W), mask (B, H, W)
    bool -> (prototypes (C, D) L2-normalised, present (C,) bool)."""
    d = latent.shape[1]
    z = F.normalize(latent.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, d)
    y = labels.reshape(-1).long()
    m = mask.reshape(-1)
    z, y = z[m], y[m]
    sums = torch.zeros(num_classes, d, device=latent.device).index_add_(0, y, z)
    counts = torch.bincount(y, minlength=num_classes).float()
    present = counts > 0
    protos = F.normalize(sums / counts.clamp(min=1)[:, None], dim=1)
    return protos, present


class PrototypeMemory:
    """Class prototypes (C, D) kept as an EMA across iterations, so that small batches that
    miss a class still have an anchor for it."""

    def __init__(self, num_classes: int, dim: int, momentum: float = 0.9) -> None:
        self.momentum = momentum
        self.prototypes = torch.zeros(num_classes, dim)
        self.initialised = torch.zeros(num_classes, dtype=torch.bool)

    @torch.no_grad()
    def update(self, prototypes: torch.Tensor, present: torch.Tensor) -> None:
        protos = prototypes.detach().cpu()
        present = present.cpu()
        new = present & ~self.initialised
        old = present & self.initialised
        self.prototypes[new] = protos[new]
        self.prototypes[old] = F.normalize(
            self.momentum * self.prototypes[old] + (1 - self.momentum) * protos[old], dim=1
        )
        self.initialised |= present

    def state_dict(self) -> dict:
        return {"prototypes": self.prototypes.clone(), "initialised": self.initialised.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.prototypes = state["prototypes"].clone()
        self.initialised = state["initialised"].clone()


def prototype_contrastive_loss(
    latent: torch.Tensor,
    labels: torch.Tensor,
    mask: torch.Tensor,
    prototypes: torch.Tensor,
    available: torch.Tensor,
    temperature: float = 0.1,
    max_pixels: int = 4096,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """InfoNCE pulling each pixel's latent feature to its class prototype and away from the
    others. latent (B, D, H, W); labels (B, H, W); mask (B, H, W) bool of pixels to use;
    prototypes (C, D) normalised; available (C,) bool. At most `max_pixels` pixels are sampled,
    balanced so that rare classes (thin vessels, wires) are not drowned by background."""
    d = latent.shape[1]
    z = latent.float().permute(0, 2, 3, 1).reshape(-1, d)
    y = labels.reshape(-1).long()
    keep = mask.reshape(-1) & available.to(latent.device)[y]
    idx = torch.nonzero(keep).squeeze(1)
    if idx.numel() == 0:
        return latent.sum() * 0.0
    idx = _balanced_subset(idx, y[idx], max_pixels, generator)
    z = F.normalize(z[idx], dim=1)
    protos = prototypes.to(latent.device)
    logits = z @ protos.t() / temperature
    logits = logits.masked_fill(~available.to(latent.device)[None], float("-inf"))
    return F.cross_entropy(logits, y[idx])


def _balanced_subset(
    idx: torch.Tensor, classes: torch.Tensor, max_pixels: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Up to `max_pixels` of `idx`, an equal share per class present (all of a rare class)."""
    if idx.numel() <= max_pixels:
        return idx
    present = torch.unique(classes)
    share = max(1, max_pixels // len(present))
    picked = []
    for c in present:
        members = idx[classes == c]
        if members.numel() > share:
            order = torch.randperm(members.numel(), generator=generator, device="cpu")
            members = members[order[:share].to(members.device)]
        picked.append(members)
    return torch.cat(picked)


def prototype_consistency_loss(
    protos_a: torch.Tensor, present_a: torch.Tensor, protos_b: torch.Tensor, present_b: torch.Tensor
) -> torch.Tensor:
    """1 - cosine similarity of the class prototypes of labelled (a) and pseudo-labelled (b)
    data, over classes present in both; (C, D) normalised prototypes."""
    both = present_a & present_b
    if not both.any():
        return protos_a.sum() * 0.0
    return (1 - (protos_a[both] * protos_b[both]).sum(dim=1)).mean()
