"""Training: supervised (labelled frames) and semi-supervised (the method of Xi et al. 2025).

Semi-supervised iteration:
1. labelled crops: diffusion loss = CE + Dice of the predicted clean label map at a random t;
2. unlabelled crops: an EMA teacher samples pseudo-labels by DDIM (K samples, mean
   probabilities); pixels whose confidence is below a threshold are ignored; the student learns
   them on a strongly augmented view (weighted CE + Dice);
3. prototype-based contrastive consistency on the denoiser's latent features: class prototypes
   (EMA memory of masked-average features of labelled pixels) anchor an InfoNCE loss for
   labelled and confidently pseudo-labelled pixels, and the prototypes of labelled and
   pseudo-labelled pixels are pulled together.
The unsupervised terms are ramped up with a sigmoid schedule.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from napari_diffseg.data.sequences import DEFAULT_NORMALISATION, SparseDataset
from napari_diffseg.engine.augment import crop_size_for, random_crops, strong_intensity
from napari_diffseg.engine.checkpoint import Checkpoint, build_model
from napari_diffseg.engine.device import resolve_device
from napari_diffseg.engine.inference import SegmentOptions, predict_normalised
from napari_diffseg.engine.metrics import dice_iou
from napari_diffseg.model import DDIMSampler, DiffSegNet, ModelConfig, NoiseSchedule
from napari_diffseg.model.losses import (
    PrototypeMemory,
    ce_dice_loss,
    labels_to_analog,
    masked_prototypes,
    prototype_consistency_loss,
    prototype_contrastive_loss,
)
from napari_diffseg.model.sampling import sample_probabilities

logger = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    """Every option of training, with the defaults of the method (METHOD.md)."""

    mode: str = "semi"  # "supervised" | "semi"
    iterations: int = 2000
    batch_size: int = 8  # semi: this many labelled AND this many unlabelled crops
    crop_size: int = 256
    lr: float = 3e-4
    lr_schedule: str = "cosine"  # "cosine" (decay to 10 % of lr) | "constant"
    weight_decay: float = 1e-4
    timesteps: int = 10
    dice_weight: float = 1.0
    ema_decay: float = 0.99
    pseudo_steps: int = 2
    pseudo_samples: int = 2
    confidence_threshold: float = 0.8
    pseudo_weight: float = 0.1  # weight of the pseudo-label loss (after ramp-up)
    prototype_weight: float = 0.1
    prototype_temperature: float = 0.1
    prototype_momentum: float = 0.9
    prototype_pixels: int = 4096
    prototype_consistency_weight: float = 0.1
    rampup_fraction: float = 0.4  # of the iterations
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast where the device supports it (CUDA)
    compile: bool = False  # torch.compile the network (CUDA only)
    val_every: int = 200
    val_steps: int = 4
    val_samples: int = 1

    def __post_init__(self) -> None:
        if self.mode not in ("supervised", "semi"):
            raise ValueError(f"mode must be 'supervised' or 'semi', got {self.mode!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be cosine or constant, got {self.lr_schedule!r}")
        if self.iterations < 0 or self.batch_size < 1:
            raise ValueError("iterations must be >= 0 and batch_size >= 1")


@dataclass
class TrainProgress:
    iteration: int
    total: int
    losses: dict[str, float]
    val_dice: float | None = None
    elapsed_s: float = 0.0


@dataclass
class TrainResult:
    checkpoint: Checkpoint
    model: DiffSegNet
    history: list[TrainProgress] = field(default_factory=list)
    stopped_early: bool = False


def sigmoid_rampup(iteration: int, length: int) -> float:
    """exp(-5 (1 - x)^2) ramp from 0 to 1 over `length` iterations (SSL4MIS convention)."""
    if length <= 0:
        return 1.0
    x = min(max(iteration / length, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - x) ** 2))


def validation_dice(
    model: DiffSegNet, data: SparseDataset, timesteps: int, steps: int, samples: int, seed: int
) -> float:
    """Mean foreground Dice of the model on the labelled frames of `data`."""
    sizes = {img.shape for img in data.images}
    preds, targets = [], []
    for shape in sizes:  # batch frames of equal size
        idx = [i for i, img in enumerate(data.images) if img.shape == shape]
        images = np.stack([data.images[i] for i in idx])
        probs, _, _ = predict_normalised(
            model, images, timesteps=timesteps,
            options=SegmentOptions(steps=steps, samples=samples, seed=seed, batch_size=4),
        )
        preds.extend(probs.argmax(axis=1))
        targets.extend(data.labels[i] for i in idx)
    foreground = sorted(k for k in set(data.classes) | set(range(1, model.config.num_classes))
                        if k != 0)
    per_frame = [dice_iou(p, t, foreground) for p, t in zip(preds, targets, strict=True)]
    per_class = [np.nanmean([f[c][0] for f in per_frame]) for c in foreground
                 if not all(np.isnan(f[c][0]) for f in per_frame)]
    return float(np.mean(per_class)) if per_class else float("nan")


class Trainer:
    """Holds the student, the EMA teacher, the optimiser and the prototype memory."""

    def __init__(
        self,
        data: SparseDataset,
        options: TrainOptions,
        *,
        model_config: ModelConfig | None = None,
        init: Checkpoint | None = None,
    ) -> None:
        self.data = data
        self.options = options
        self.device = resolve_device(options.device)
        torch.manual_seed(options.seed)
        if init is not None:
            self.model = build_model(init).to(self.device)
            self.classes = {int(k): v for k, v in init.classes.items()}
            self.normalisation = dict(init.normalisation)
            if data.num_classes > self.model.config.num_classes:
                raise ValueError(
                    f"the data has {data.num_classes} classes but the initial model predicts "
                    f"{self.model.config.num_classes}; train from scratch (--init none)"
                )
        else:
            cfg = model_config or ModelConfig()
            cfg = ModelConfig(**{**asdict(cfg), "num_classes": max(data.num_classes, 2)})
            self.model = DiffSegNet(cfg).to(self.device)
            self.classes = dict(data.classes)
            self.normalisation = dict(DEFAULT_NORMALISATION)
        self.config = self.model.config
        self.teacher = copy.deepcopy(self.model).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=options.lr, weight_decay=options.weight_decay
        )
        self.schedule = NoiseSchedule(options.timesteps)
        self.pseudo_sampler = DDIMSampler(
            self.schedule, steps=min(options.pseudo_steps, options.timesteps)
        )
        self.memory = PrototypeMemory(
            self.config.num_classes, self.config.label_width, options.prototype_momentum
        )
        self.iteration = 0
        self.rng = np.random.default_rng(options.seed)
        self.generator = torch.Generator().manual_seed(options.seed)
        self.crop = crop_size_for(
            data.images + data.unlabelled, options.crop_size, self.config.multiple
        )
        self.amp = options.amp and self.device.type == "cuda"
        self.net = self.model
        if options.compile and self.device.type == "cuda":
            self.net = torch.compile(self.model)
        self.semi = options.mode == "semi" and len(data.unlabelled) > 0
        if options.mode == "semi" and not data.unlabelled:
            logger.warning("semi-supervised mode without unlabelled frames: supervised only")

    # -- one iteration -------------------------------------------------------------------
    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def _diffusion_forward(self, images: torch.Tensor, labels: torch.Tensor):
        """Student prediction of the clean map from x_t at random t; images (B, 1, H, W).
        -> logits (B, C, H, W) and latent features upsampled to (B, D, H, W)."""
        b = images.shape[0]
        t_idx = self.schedule.sample_timesteps(b, torch.device("cpu"), self.generator)
        x0 = labels_to_analog(labels, self.config.num_classes)
        noise = torch.randn(x0.shape, generator=self.generator).to(self.device)
        x_t = self.schedule.q_sample(x0, t_idx.to(self.device), noise)
        logits, latent = self.net(images, x_t, self.schedule.time(t_idx).to(self.device))
        if latent.shape[-2:] != labels.shape[-2:]:
            latent = F.interpolate(latent, size=labels.shape[-2:], mode="nearest")
        return logits, latent

    @torch.no_grad()
    def _pseudo_labels(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """EMA-teacher pseudo-labels (B, H, W) and confidence (B, H, W) from K samples."""
        k = max(1, self.options.pseudo_samples)
        features = self.teacher.encode(images).repeat_interleave(k, dim=0)
        gen = torch.Generator(device=self.device).manual_seed(
            self.options.seed * 100_003 + self.iteration
        )
        probs = sample_probabilities(self.teacher, features, self.pseudo_sampler, gen)
        mean = probs.float().reshape(images.shape[0], k, *probs.shape[1:]).mean(dim=1)
        confidence, pseudo = mean.max(dim=1)
        return pseudo, confidence

    def step(self) -> dict[str, float]:
        o = self.options
        self.model.train()
        img_l, lab_l = random_crops(self.rng, self.data.images, self.data.labels,
                                    o.batch_size, self.crop)
        x_l = self._to_device(img_l)[:, None]
        y_l = self._to_device(lab_l)
        losses: dict[str, torch.Tensor] = {}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits_l, latent_l = self._diffusion_forward(x_l, y_l)
            losses["supervised"] = ce_dice_loss(logits_l, y_l, dice_weight=o.dice_weight)
            if self.semi:
                img_u, _ = random_crops(self.rng, self.data.unlabelled, None,
                                        o.batch_size, self.crop)
                x_u = self._to_device(img_u)[:, None]
                pseudo, confidence = self._pseudo_labels(x_u)
                keep = confidence >= o.confidence_threshold
                x_u_strong = strong_intensity(x_u, self.generator)
                logits_u, latent_u = self._diffusion_forward(x_u_strong, pseudo)
                losses["pseudo"] = ce_dice_loss(
                    logits_u, pseudo, weight=keep.float(), dice_weight=o.dice_weight
                )
                protos_l, present_l = masked_prototypes(
                    latent_l, y_l, torch.ones_like(y_l, dtype=torch.bool), self.config.num_classes
                )
                self.memory.update(protos_l, present_l)
                anchors, available = self.memory.prototypes, self.memory.initialised
                proto_kw = {"temperature": o.prototype_temperature,
                            "max_pixels": o.prototype_pixels, "generator": self.generator}
                all_l = torch.ones_like(y_l, dtype=torch.bool)
                losses["prototype"] = prototype_contrastive_loss(
                    latent_l, y_l, all_l, anchors, available, **proto_kw
                ) + prototype_contrastive_loss(
                    latent_u, pseudo, keep, anchors, available, **proto_kw
                )
                protos_u, present_u = masked_prototypes(
                    latent_u, pseudo, keep, self.config.num_classes
                )
                losses["prototype_consistency"] = prototype_consistency_loss(
                    protos_l, present_l, protos_u, present_u
                )
        ramp = sigmoid_rampup(self.iteration, int(o.rampup_fraction * o.iterations))
        total = losses["supervised"]
        if self.semi:
            total = total + ramp * (
                o.pseudo_weight * losses["pseudo"]
                + o.prototype_weight * losses["prototype"]
                + o.prototype_consistency_weight * losses["prototype_consistency"]
            )
        for group in self.optimizer.param_groups:
            group["lr"] = self._learning_rate()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self._update_teacher()
        self.iteration += 1
        out = {k: float(v.detach()) for k, v in losses.items()}
        out["total"] = float(total.detach())
        return out

    def _learning_rate(self) -> float:
        o = self.options
        if o.lr_schedule == "constant" or o.iterations <= 1:
            return o.lr
        progress = min(self.iteration / (o.iterations - 1), 1.0)
        return o.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    @torch.no_grad()
    def _update_teacher(self) -> None:
        decay = min(self.options.ema_decay, (1 + self.iteration) / (10 + self.iteration))
        for pt, ps in zip(self.teacher.parameters(), self.model.parameters(), strict=True):
            pt.mul_(decay).add_(ps.detach(), alpha=1 - decay)
        for bt, bs in zip(self.teacher.buffers(), self.model.buffers(), strict=True):
            bt.copy_(bs)

    # -- state ---------------------------------------------------------------------------
    def training_state(self) -> dict:
        return {
            "iteration": self.iteration,
            "optimizer": self.optimizer.state_dict(),
            "teacher": self.teacher.state_dict(),
            "prototypes": self.memory.state_dict(),
        }

    def load_training_state(self, state: dict) -> None:
        self.iteration = int(state["iteration"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.teacher.load_state_dict(state["teacher"])
        self.memory.load_state_dict(state["prototypes"])
        self.rng = np.random.default_rng([self.options.seed, self.iteration])
        self.generator = torch.Generator().manual_seed(self.options.seed + self.iteration)

    def checkpoint(self, metrics: dict | None = None, with_state: bool = True) -> Checkpoint:
        return Checkpoint(
            model_config=self.config.to_dict(),
            state_dict={k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            classes=dict(self.classes),
            normalisation=dict(self.normalisation),
            schedule={"timesteps": self.options.timesteps},
            train_options=asdict(self.options),
            data_summary=self.data.summary(),
            metrics=dict(metrics or {}),
            training_state=self.training_state() if with_state else None,
        )


def train(
    data: SparseDataset,
    options: TrainOptions | None = None,
    *,
    model_config: ModelConfig | None = None,
    init: Checkpoint | None = None,
    resume: Checkpoint | None = None,
    val: SparseDataset | None = None,
    callback: Callable[[TrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
) -> TrainResult:
    """Train on `data` (labelled + unlabelled frames) and return the final checkpoint.

    `init` starts from a model's weights (fine-tuning); `resume` continues an interrupted run
    from its checkpoint (weights, optimiser, teacher, prototypes, iteration). `callback`
    receives a :class:`TrainProgress` after every iteration; `should_stop` is polled between
    iterations and ends training cleanly (the checkpoint then holds the weights so far).
    Every `checkpoint_every` iterations `on_checkpoint` receives a resumable checkpoint.
    """
    opts = options or TrainOptions()
    trainer = Trainer(data, opts, model_config=model_config, init=resume or init)
    if resume is not None and resume.training_state:
        trainer.load_training_state(resume.training_state)
    history: list[TrainProgress] = []
    t0 = time.perf_counter()
    val_dice = None
    stopped = False
    while trainer.iteration < opts.iterations:
        if should_stop is not None and should_stop():
            stopped = True
            logger.info("training stopped at iteration %d", trainer.iteration)
            break
        losses = trainer.step()
        it = trainer.iteration
        val_now = None
        if val is not None and opts.val_every and (it % opts.val_every == 0 or
                                                   it == opts.iterations):
            val_now = val_dice = validation_dice(
                trainer.model, val, opts.timesteps, opts.val_steps, opts.val_samples, opts.seed
            )
        progress = TrainProgress(it, opts.iterations, losses, val_now, time.perf_counter() - t0)
        history.append(progress)
        if callback is not None:
            callback(progress)
        if on_checkpoint is not None and checkpoint_every > 0 and it % checkpoint_every == 0:
            on_checkpoint(trainer.checkpoint({"iterations": it}))
    metrics = {"iterations": trainer.iteration, "train_seconds": time.perf_counter() - t0}
    if val_dice is not None:
        metrics["val_dice"] = val_dice
    if history:
        metrics["final_loss"] = history[-1].losses["total"]
    trainer.model.eval()
    return TrainResult(trainer.checkpoint(metrics), trainer.model, history, stopped)
