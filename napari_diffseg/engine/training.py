"""Training: supervised (labelled frames) and semi-supervised (the method of Xi et al. 2025).

Semi-supervised iteration:
1. labelled crops: diffusion loss = CE + Dice of the predicted clean label map at a random t;
2. unlabelled crops: an EMA teacher samples pseudo-labels by DDIM (K samples, mean
   probabilities); pixels are weighted by the teacher's confidence (a binary max-probability
   gate, or a continuous weight from its predictive entropy with a ramp); the student learns
   them on a strongly augmented view (weighted CE + Dice);
3. prototype-based contrastive consistency on the denoiser's latent features: class prototypes
   (EMA memory of masked-average features of labelled pixels) anchor an InfoNCE loss for
   labelled and confidently pseudo-labelled pixels, and the prototypes of labelled and
   pseudo-labelled pixels are pulled together.
The unsupervised terms are ramped up with a sigmoid schedule.

Under ``torchrun`` (see :mod:`napari_diffseg.engine.distributed` and docs/scaling.md) every rank
draws the same global batch of crops, timesteps and noise from the same seeded generators and
runs the student on its B/W rows, wrapped in DistributedDataParallel. The student's outputs are
gathered so that every rank computes the losses of the whole global batch (the Dice and the
prototype terms are not per-sample means) and updates the prototype memory identically; the
gathered tensors pass each rank its share of the gradient, and DDP's averaging gives the
single-process gradient. The EMA teacher samples the pseudo-labels of the rank's rows from the
noise a single process would draw for them, so a distributed run follows the single-process run
of the same global batch up to floating-point rounding.
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

from napari_diffseg.data.sequences import DEFAULT_NORMALISATION, IGNORE_LABEL, SparseDataset
from napari_diffseg.engine import distributed
from napari_diffseg.engine.augment import (
    apply_crops,
    class_weights,
    crop_plan,
    crop_size_for,
    random_crops,
    strong_intensity,
)
from napari_diffseg.engine.checkpoint import Checkpoint, build_model
from napari_diffseg.engine.defaults import DEFAULT_MIN_COMPONENT
from napari_diffseg.engine.inference import SegmentOptions, class_argmax, predict_normalised
from napari_diffseg.engine.metrics import dice_iou
from napari_diffseg.engine.postprocess import remove_specks
from napari_diffseg.model import (
    DDIMSampler,
    DiffSegNet,
    ModelConfig,
    NoiseSchedule,
    add_global_context,
    expand_context,
    keep_label_blocks,
)
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
    # semi: this many labelled AND this many unlabelled crops; under torchrun the global batch,
    # split evenly over the processes (must be divisible by their number)
    batch_size: int = 8
    crop_size: int = 256
    lr: float = 3e-4
    lr_schedule: str = "cosine"  # "cosine" (decay to 10 % of lr) | "constant"
    weight_decay: float = 1e-4
    timesteps: int = 10
    dice_weight: float = 1.0
    # the recipe for thin, rare classes (a vessel tree is ~4 % of the pixels, a guidewire 0.2 %)
    foreground_crops: float = 0.0  # share of labelled crops centred on a labelled structure
    # uniform crop corners drawn up to this share of the crop past each side of the frame, then
    # clipped: the image border is seen about half as often as the centre (with 0, about
    # crop-size times less often; self-training on one video then let the border drift into
    # vessel, docs/real-data.md)
    crop_margin: float = 0.5
    class_weight_power: float = 0.0  # CE weight (median freq / freq) ** power; 0: unweighted
    augment_labelled: bool = False  # photometric augmentation of the labelled crops too
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
    device: str = "auto"  # under torchrun: auto | cuda (cuda:LOCAL_RANK) | cpu
    amp: bool = True  # bf16 autocast where the device supports it (CUDA)
    compile: bool = False  # torch.compile the network (CUDA only)
    val_every: int = 200
    val_steps: int = 4
    val_samples: int = 1
    # samples that are samples (docs/model.md, issue 13): training that makes the denoiser
    # read x_t instead of the image alone
    shortcut_dropout: float = 0.0  # share of rows trained without the per-pixel image logits
    condition_dropout: float = 0.0  # share of rows denoised without the image at all
    high_t_fraction: float = 0.0  # share of rows whose t is drawn from the noisier half
    label_noise: float = 0.0  # share of rows whose x_0 is the label map shifted by 1-2 px
    label_swap: float = 0.0  # share of rows whose x_0 is another row's label map (wrong x_t)
    # pseudo-labels weighted by the teacher's uncertainty: "gate" keeps the binary
    # max-probability >= confidence_threshold mask; "entropy" weights each pixel by
    # 1 - H / ln C of the teacher's mean probabilities, ramped from 0 below
    # uncertainty_low to 1 above uncertainty_high (fractions of ln C, UA-MT style)
    pseudo_weighting: str = "gate"
    uncertainty_low: float = 0.75
    uncertainty_high: float = 1.0
    # temporal context (issue 14): None keeps the model's own; more neighbours than the initial
    # model sees expands it (zero weights for the new inputs, so it starts as it was)
    context_frames: int | None = None
    # share of the rows whose neighbours are replaced by the frame itself, so that a single
    # image, the first and the last frame still work
    context_dropout: float = 0.25
    # the encoder's frame-level block (ModelConfig.global_context): True adds it to an initial
    # model without one (starting at zero, so the model starts as it was); None/False keeps
    # the model's own (a model never loses it), and a new model gets it only with True
    global_context: bool | None = None
    # the denoiser's residual blocks: a count fewer than an initial model's keeps its first
    # ones, a tuple of indices those blocks of it (a lighter denoiser,
    # model.keep_label_blocks, fine-tuned to recover); a new model gets a count's many;
    # None keeps the model's own (or ModelConfig's for a new one)
    label_blocks: int | tuple[int, ...] | None = None
    # anchors (SparseDataset.unlabelled_anchors, labels warped from verified frames): where
    # their confidence is at least this they replace the teacher's pseudo-labels
    anchor_confidence: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in ("supervised", "semi"):
            raise ValueError(f"mode must be 'supervised' or 'semi', got {self.mode!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(f"lr_schedule must be cosine or constant, got {self.lr_schedule!r}")
        if self.iterations < 0 or self.batch_size < 1:
            raise ValueError("iterations must be >= 0 and batch_size >= 1")
        if self.pseudo_weighting not in ("gate", "entropy"):
            raise ValueError(f"pseudo_weighting must be 'gate' or 'entropy', got "
                             f"{self.pseudo_weighting!r}")
        if self.context_frames is not None and not 0 <= self.context_frames <= 4:
            raise ValueError(f"context_frames must be in 0..4, got {self.context_frames}")
        if isinstance(self.label_blocks, (list, tuple)):
            self.label_blocks = tuple(int(b) for b in self.label_blocks)
            if not self.label_blocks or min(self.label_blocks) < 0:
                raise ValueError(f"label_blocks must name blocks 0, 1, ..., got "
                                 f"{self.label_blocks}")
        elif self.label_blocks is not None and self.label_blocks < 1:
            raise ValueError(f"label_blocks must be at least 1, got {self.label_blocks}")
        if not 0.0 <= self.crop_margin <= 1.0:
            raise ValueError(f"crop_margin must be in [0, 1], got {self.crop_margin}")
        for name in ("shortcut_dropout", "condition_dropout", "high_t_fraction", "label_noise",
                     "label_swap", "context_dropout", "anchor_confidence"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def context_frames_for(model_config: dict | None, requested: int | None) -> int:
    """The neighbouring frames on each side a training from a model with `model_config`
    (a checkpoint's dict; None: a new model) ends up seeing when `requested` is asked for
    (None: the model's own): a model never loses the context it has."""
    had = int((model_config or {}).get("context_frames", 0))
    return max(had, requested or 0)


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


def shift_labels(labels: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """labels (B, H, W) -> the same with a `share` of the rows rolled by 1-2 px in a random
    direction: a label map slightly off, as the noisy x_0 the denoiser must correct from the
    image rather than copy."""
    b = labels.shape[0]
    chosen = torch.rand(b, generator=generator) < share
    dy = torch.randint(-2, 3, (b,), generator=generator)
    dx = torch.randint(-2, 3, (b,), generator=generator)
    out = labels.clone()
    for i in torch.nonzero(chosen).flatten().tolist():
        out[i] = torch.roll(labels[i], shifts=(int(dy[i]), int(dx[i])), dims=(-2, -1))
    return out


def swap_labels(labels: torch.Tensor, share: float, generator: torch.Generator) -> torch.Tensor:
    """labels (B, H, W) -> the same with a `share` of the rows replaced by the next row's
    label map (a plausible map of another crop): an x_0 that is wholly wrong, so the denoiser
    learns that the image, not x_t, decides, and x_t only informs."""
    b = labels.shape[0]
    chosen = torch.rand(b, generator=generator) < share
    if b < 2 or not chosen.any():
        return labels
    other = labels.roll(1, dims=0)
    return torch.where(chosen[:, None, None].to(labels.device), other, labels)


def pseudo_label_weight(
    mean: torch.Tensor, options: TrainOptions, progress: float = 1.0
) -> torch.Tensor:
    """The teacher's mean probabilities over its K samples (B, C, H, W) -> per-pixel weights
    (B, H, W) in [0, 1] of its pseudo-labels.

    "gate": 1 where the largest probability reaches `confidence_threshold`, else 0.
    "entropy": with u = H[mean] / ln C the teacher's normalised predictive entropy (which
    includes the disagreement of its samples), w = clip(1 − u / τ, 0, 1), where the tolerance
    τ grows from `uncertainty_low` to `uncertainty_high` as `progress` goes from 0 to 1 (the
    UA-MT ramp of METHOD.md): a certain pixel counts fully, a pixel at chance not at all, and
    early in training only the most certain pixels count."""
    if options.pseudo_weighting == "gate":
        return (mean.max(dim=1).values >= options.confidence_threshold).float()
    c = mean.shape[1]
    u = -(mean * mean.clamp_min(1e-8).log()).sum(dim=1) / math.log(max(c, 2))
    progress = min(max(progress, 0.0), 1.0)
    tau = options.uncertainty_low + (options.uncertainty_high - options.uncertainty_low) * progress
    return (1.0 - u / max(tau, 1e-6)).clamp(0.0, 1.0)


def sigmoid_rampup(iteration: int, length: int) -> float:
    """exp(-5 (1 - x)^2) ramp from 0 to 1 over `length` iterations (SSL4MIS convention)."""
    if length <= 0:
        return 1.0
    x = min(max(iteration / length, 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - x) ** 2))


def validation_dice(
    model: DiffSegNet, data: SparseDataset, timesteps: int, steps: int, samples: int, seed: int,
    min_component: int = DEFAULT_MIN_COMPONENT,
) -> float:
    """Mean foreground Dice of the model on the labelled frames of `data`: the labels as the
    user gets them (specks under `min_component` px at 512² removed), one Dice per class over
    all the frames' pixels together, then the mean over the classes present in the labels or
    the prediction.

    It chooses which weights a run keeps (and whether a fine-tune beats its start), from the
    few frames a user verified, so it must not swing on a speck or one frame: scored frame by
    frame with the specks, 4 px of guidewire in a video without a wire scored that class 0
    (the start model of bench_finetune.py's seed 300,000: 0.539 instead of 0.806), and a
    vessel blob in a frame after the contrast scored that frame's vessel 0 (the checks along
    that run swung between 0.65 and 0.80; docs/benchmarks.md). Always in fp32: bf16's
    roundings must not decide which model is kept."""
    sizes = {img.shape for img in data.images}
    preds, targets = [], []
    for shape in sizes:  # batch frames of equal size
        idx = [i for i, img in enumerate(data.images) if img.shape == shape]
        images = np.stack([data.images[i] for i in idx])
        probs, _, _ = predict_normalised(
            model, images, timesteps=timesteps,
            options=SegmentOptions(steps=steps, samples=samples, seed=seed, batch_size=4,
                                   precision="fp32"),
        )
        preds.extend(remove_specks(probs.argmax(axis=1).astype(np.uint8), min_component))
        targets.extend(np.asarray(data.labels[i]) for i in idx)
    foreground = sorted(k for k in set(data.classes) | set(range(1, model.config.num_classes))
                        if k != 0)
    # all the frames' pixels as one: a pixel of unknown class counts as predicted background
    pred = np.concatenate([np.where(t == IGNORE_LABEL, 0, p).ravel()
                           for p, t in zip(preds, targets, strict=True)])
    target = np.concatenate([t.ravel() for t in targets])
    dice = [d for d, _ in dice_iou(pred, target, foreground).values() if not np.isnan(d)]
    return float(np.mean(dice)) if dice else float("nan")


class _RowsOfBatch:
    """A network as the sampler loop (:func:`sample_probabilities`) sees it on one rank of a
    distributed run: it stands for the whole global batch of ``total`` rows, so the loop draws
    the same noise as a single process would (one draw of the global shape from the same
    generator), but runs the network on this rank's ``rows`` only and returns zero logits for
    the others. The rows kept are then exactly those of a single-process run; the cost of the
    other rows is a few element-wise operations on label maps."""

    def __init__(self, net: DiffSegNet, rows: slice, total: int) -> None:
        self.net, self.rows, self.total = net, rows, total

    @property
    def config(self):
        return self.net.config

    def folded_label_shape(self, cond: torch.Tensor) -> tuple[int, int, int, int]:
        _, c, h, w = self.net.folded_label_shape(cond)
        return self.total, c, h, w

    def denoise_folded(self, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor):
        """x (total, C s², H/s, W/s) folded, cond (rows, …), t (total,) -> folded logits of
        the same shape as x."""
        logits, _ = self.net.denoise_folded(x[self.rows], cond, t[self.rows])
        full = logits.new_zeros((x.shape[0], *logits.shape[1:]))
        full[self.rows] = logits
        return full, None

    def unfold(self, folded: torch.Tensor) -> torch.Tensor:
        return self.net.unfold(folded)


class Trainer:
    """Holds the student, the EMA teacher, the optimiser and the prototype memory.

    In a distributed run (a process group of W > 1 exists) ``self.net`` is the student wrapped
    in DistributedDataParallel and each rank runs it on rows ``self.rows`` of the global batch;
    ``self.model`` (the unwrapped student), the teacher, the optimiser and the prototype memory
    stay identical on every rank."""

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
        self.device = distributed.rank_device(options.device)
        self.world = distributed.world_size()
        self.rank = distributed.rank()
        self.rows = distributed.shard(options.batch_size, self.world, self.rank)
        torch.manual_seed(options.seed)
        if init is not None:
            self.model = build_model(init).to(self.device)
            self.classes = {int(k): v for k, v in init.classes.items()}
            self.normalisation = dict(init.normalisation)
            wanted = context_frames_for(init.model_config, options.context_frames)
            if wanted > self.model.config.context_frames:
                self.model = expand_context(self.model, wanted)
            if options.global_context:
                self.model = add_global_context(self.model)
            if options.label_blocks is not None:  # raises for blocks the model lacks
                self.model = keep_label_blocks(self.model, options.label_blocks)
            if data.num_classes > self.model.config.num_classes:
                raise ValueError(
                    f"the data has {data.num_classes} classes but the initial model predicts "
                    f"{self.model.config.num_classes}; train from scratch (--init none)"
                )
        else:
            cfg = model_config or ModelConfig()
            changes = {"num_classes": max(data.num_classes, 2)}
            if options.context_frames is not None:
                changes["context_frames"] = options.context_frames
            if options.global_context is not None:
                changes["global_context"] = options.global_context
            if isinstance(options.label_blocks, tuple):
                raise ValueError("label_blocks names blocks of an initial model; a new model "
                                 "takes a count")
            if options.label_blocks is not None:
                changes["label_blocks"] = options.label_blocks
            cfg = ModelConfig(**{**asdict(cfg), **changes})
            self.model = DiffSegNet(cfg).to(self.device)
            # every output class gets a name (a checkpoint names exactly its outputs)
            self.classes = {i: data.classes.get(i, "background" if i == 0 else f"class {i}")
                            for i in range(cfg.num_classes)}
            self.normalisation = dict(DEFAULT_NORMALISATION)
        self.config = self.model.config
        if data.context_frames != self.config.context_frames:
            raise ValueError(
                f"the model sees {self.config.context_frames} neighbouring frame(s) on each side "
                f"but the training frames carry {data.context_frames}: build the data with "
                f"context_frames={self.config.context_frames}"
            )
        anchors = data.unlabelled_anchors
        self.anchored = any(a is not None for a in anchors)
        if anchors and len(anchors) != len(data.unlabelled):
            raise ValueError(f"{len(anchors)} anchors for {len(data.unlabelled)} unlabelled "
                             "frames")
        # the anchors' labels and confidences as apply_crops takes them (None: no anchor)
        self._anchor_labels = [None if a is None else a[0] for a in anchors]
        self._anchor_confidence = [None if a is None else a[1] for a in anchors]
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
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if options.compile and self.device.type == "cuda":
            self.net = torch.compile(self.net)
        self.class_weight = None
        if options.class_weight_power > 0:
            self.class_weight = torch.from_numpy(class_weights(
                data.labels, self.config.num_classes, options.class_weight_power
            )).to(self.device)
            logger.info("class weights %s", np.round(self.class_weight.cpu().numpy(), 2))
        self.semi = options.mode == "semi" and len(data.unlabelled) > 0
        if options.mode == "semi" and not data.unlabelled:
            logger.warning("semi-supervised mode without unlabelled frames: supervised only")

    # -- one iteration -------------------------------------------------------------------
    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def _input(self, crops: np.ndarray) -> torch.Tensor:
        """Image crops (B, S, S) or (B, K, S, S) -> the network's input (B, Cin, S, S); with
        temporal context, a share ``context_dropout`` of the rows see their frame in place of
        its neighbours (what a single image or the first / last frame looks like)."""
        x = self._to_device(crops)
        if x.ndim == 3:
            return x[:, None]
        p = self.options.context_dropout
        if x.shape[1] > 1 and p > 0:
            drop = (torch.rand(x.shape[0], generator=self.generator) < p).to(self.device)
            x = torch.where(drop[:, None, None, None], x[:, :1].expand_as(x), x)
        return x

    def _diffusion_forward(self, images: torch.Tensor, labels: torch.Tensor):
        """Student prediction of the clean map from x_t at random t; images (B, 1, H, W) and
        labels (B, H, W) of the global batch -> logits (B, C, H, W) and latent features
        upsampled to (B, D, H, W). t and the noise are drawn for the global batch; in a
        distributed run this rank runs the student on its rows only and the outputs of all
        ranks are gathered (differentiably)."""
        o = self.options
        b = images.shape[0]
        t_idx = self.schedule.sample_timesteps(b, torch.device("cpu"), self.generator)
        if o.high_t_fraction > 0:
            high = torch.rand(b, generator=self.generator) < o.high_t_fraction
            upper = self.schedule.timesteps // 2 + 1
            t_high = torch.randint(upper, self.schedule.timesteps + 1, (b,),
                                   generator=self.generator)
            t_idx = torch.where(high, t_high, t_idx)
        shape = (b, self.config.num_classes, *labels.shape[1:])
        noise = torch.randn(shape, generator=self.generator)[self.rows].to(self.device)
        t_idx = t_idx[self.rows]
        x0_labels = labels
        if o.label_noise > 0:
            x0_labels = shift_labels(labels, o.label_noise, self.generator)
        if o.label_swap > 0:
            x0_labels = swap_labels(x0_labels, o.label_swap, self.generator)
        x0 = labels_to_analog(x0_labels[self.rows], self.config.num_classes, IGNORE_LABEL)
        x_t = self.schedule.q_sample(x0, t_idx.to(self.device), noise)
        keep = {}
        for name, share in (("keep_condition", o.condition_dropout),
                            ("keep_shortcut", o.shortcut_dropout)):
            if share > 0:
                drop = torch.rand(b, generator=self.generator) < share
                keep[name] = (~drop).float()[self.rows].to(self.device)
        logits, latent = self.net(images[self.rows], x_t,
                                  self.schedule.time(t_idx).to(self.device), **keep)
        logits, latent = distributed.gather_rows(logits), distributed.gather_rows(latent)
        if latent.shape[-2:] != labels.shape[-2:]:
            latent = F.interpolate(latent, size=labels.shape[-2:], mode="nearest")
        return logits, latent

    @torch.no_grad()
    def _pseudo_labels(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """EMA-teacher pseudo-labels (B, H, W) and their weights (B, H, W) in [0, 1]
        (:func:`pseudo_label_weight`) from K samples of
        images (B, 1, H, W). In a distributed run each rank samples its rows, from the noise a
        single process would draw for them, and the results are gathered."""
        k = max(1, self.options.pseudo_samples)
        rows = slice(self.rows.start * k, self.rows.stop * k)  # of the K-repeated batch
        features = self.teacher.encode(images[self.rows]).repeat_interleave(k, dim=0)
        gen = torch.Generator(device=self.device).manual_seed(
            self.options.seed * 100_003 + self.iteration
        )
        net = self.teacher
        if self.world > 1:
            net = _RowsOfBatch(self.teacher, rows, images.shape[0] * k)
        probs = sample_probabilities(net, features, self.pseudo_sampler, gen)[rows]
        mean = probs.float().reshape(-1, k, *probs.shape[1:]).mean(dim=1)
        rampup = int(self.options.rampup_fraction * self.options.iterations)
        weight = pseudo_label_weight(mean, self.options,
                                     self.iteration / rampup if rampup > 0 else 1.0)
        pseudo = class_argmax(mean)
        return distributed.gather_rows(pseudo), distributed.gather_rows(weight)

    def _anchor(self, plan, pseudo: torch.Tensor, weight: torch.Tensor):
        """Where a crop's anchor (labels warped from a verified frame) is confident, it
        replaces the teacher's pseudo-label, with its confidence as the weight."""
        labels = apply_crops(plan, self._anchor_labels, self.crop, np.int64, fill=IGNORE_LABEL)
        conf = apply_crops(plan, self._anchor_confidence, self.crop, np.float32)
        labels, conf = self._to_device(labels), self._to_device(conf)
        use = (conf >= self.options.anchor_confidence) & (labels != IGNORE_LABEL)
        use &= labels < self.config.num_classes
        return torch.where(use, labels, pseudo), torch.where(use, conf, weight)

    def step(self) -> dict[str, float]:
        o = self.options
        self.net.train()
        img_l, lab_l = random_crops(self.rng, self.data.images, self.data.labels,
                                    o.batch_size, self.crop, foreground=o.foreground_crops,
                                    margin=o.crop_margin)
        x_l = self._input(img_l)
        if o.augment_labelled:
            x_l = strong_intensity(x_l, self.generator)
        y_l = self._to_device(lab_l)
        losses: dict[str, torch.Tensor] = {}
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits_l, latent_l = self._diffusion_forward(x_l, y_l)
            losses["supervised"] = ce_dice_loss(logits_l, y_l, dice_weight=o.dice_weight,
                                                class_weight=self.class_weight,
                                                ignore_index=IGNORE_LABEL)
            # pixels of unknown class (IGNORE_LABEL in noisy pseudo-labels) take no part
            if self.semi:
                plan = crop_plan(self.rng, self.data.unlabelled, None, o.batch_size, self.crop,
                                 margin=o.crop_margin)
                x_u = self._input(apply_crops(plan, self.data.unlabelled, self.crop, np.float32))
                pseudo, weight = self._pseudo_labels(x_u)
                if self.anchored:
                    pseudo, weight = self._anchor(plan, pseudo, weight)
                keep = weight >= 0.5  # the pixels the prototype terms trust
                x_u_strong = strong_intensity(x_u, self.generator)
                logits_u, latent_u = self._diffusion_forward(x_u_strong, pseudo)
                losses["pseudo"] = ce_dice_loss(
                    logits_u, pseudo, weight=weight, dice_weight=o.dice_weight
                )
                known_l = y_l != IGNORE_LABEL
                y_l = torch.where(known_l, y_l, 0)
                protos_l, present_l = masked_prototypes(
                    latent_l, y_l, known_l, self.config.num_classes
                )
                self.memory.update(protos_l, present_l)
                anchors, available = self.memory.prototypes, self.memory.initialised
                proto_kw = {"temperature": o.prototype_temperature,
                            "max_pixels": o.prototype_pixels, "generator": self.generator}
                losses["prototype"] = prototype_contrastive_loss(
                    latent_l, y_l, known_l, anchors, available, **proto_kw
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
        # fresh random streams for the rest of the run (a resumed run is not bit-identical to
        # an uninterrupted one, but never replays the crops it has already seen)
        self.rng = np.random.default_rng([self.options.seed, self.iteration])
        self.generator = torch.Generator().manual_seed(self.options.seed + self.iteration)

    def checkpoint(self, metrics: dict | None = None, with_state: bool = True) -> Checkpoint:
        # the weights are copied on every device: on the CPU .cpu() returns the live tensors,
        # and a checkpoint kept while training goes on (the fine-tune's best so far) would
        # follow the weights. The training state (optimiser, teacher) is not: write it at once
        return Checkpoint(
            model_config=self.config.to_dict(),
            state_dict={k: v.detach().to("cpu", copy=True)
                        for k, v in self.model.state_dict().items()},
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

    Started by ``torchrun`` with more than one process (or inside an existing process group),
    every rank calls this with the same arguments and trains data-parallel on its share of
    `options.batch_size` (see the module docstring and docs/scaling.md); the process group is
    created from torchrun's environment if needed and destroyed at the end. Every rank
    receives the same losses in `callback`, the validation Dice of rank 0, stops at the same
    iteration when `should_stop` is true on any rank, and returns the same weights;
    `on_checkpoint` is called on rank 0 only.
    """
    opts = options or TrainOptions()
    with distributed.process_group(opts.device):
        return _train(data, opts, model_config=model_config, init=init, resume=resume, val=val,
                      callback=callback, should_stop=should_stop,
                      checkpoint_every=checkpoint_every, on_checkpoint=on_checkpoint)


def _train(
    data: SparseDataset,
    opts: TrainOptions,
    *,
    model_config: ModelConfig | None,
    init: Checkpoint | None,
    resume: Checkpoint | None,
    val: SparseDataset | None,
    callback: Callable[[TrainProgress], None] | None,
    should_stop: Callable[[], bool] | None,
    checkpoint_every: int,
    on_checkpoint: Callable[[Checkpoint], None] | None,
) -> TrainResult:
    trainer = Trainer(data, opts, model_config=model_config, init=resume or init)
    main_process = trainer.rank == 0
    if resume is not None and resume.training_state:
        trainer.load_training_state(resume.training_state)
    history: list[TrainProgress] = []
    t0 = time.perf_counter()
    val_dice = None
    stopped = False
    while trainer.iteration < opts.iterations:
        # every rank takes part in the same collectives: the stop request of any rank stops all
        stop = should_stop is not None and bool(should_stop())
        if distributed.any_rank(stop, trainer.device):
            stopped = True
            logger.info("training stopped at iteration %d", trainer.iteration)
            break
        losses = trainer.step()
        it = trainer.iteration
        val_now = None
        if val is not None and opts.val_every and (it % opts.val_every == 0 or
                                                   it == opts.iterations):
            if main_process:
                val_now = validation_dice(
                    trainer.model, val, opts.timesteps, opts.val_steps, opts.val_samples,
                    opts.seed
                )
            val_now = val_dice = distributed.broadcast_float(val_now, trainer.device)
        progress = TrainProgress(it, opts.iterations, losses, val_now, time.perf_counter() - t0)
        history.append(progress)
        if callback is not None:
            callback(progress)
        if (main_process and on_checkpoint is not None and checkpoint_every > 0
                and it % checkpoint_every == 0):
            on_checkpoint(trainer.checkpoint({"iterations": it}))
    metrics = {"iterations": trainer.iteration, "train_seconds": time.perf_counter() - t0}
    if trainer.world > 1:
        metrics["processes"] = trainer.world
    if val_dice is not None:
        metrics["val_dice"] = val_dice
    if history:
        metrics["final_loss"] = history[-1].losses["total"]
    trainer.model.eval()
    return TrainResult(trainer.checkpoint(metrics), trainer.model, history, stopped)
