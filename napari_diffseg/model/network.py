"""Conditional denoiser: an image encoder run once per frame, a light label denoiser per step.

The split is what makes sampling cheap: the frame's features do not depend on the diffusion
step or the sample, so :meth:`DiffSegNet.encode` runs once per frame and
:meth:`DiffSegNet.denoise` (a few residual blocks on 2x2-folded pixels) runs for every step of
every stochastic sample, on the same conditioning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F


def cycled_dilations(blocks: int) -> tuple[int, ...]:
    """The denoiser's default dilations: 1, 2, 4 cycled over `blocks` blocks."""
    return tuple(2 ** (i % 3) for i in range(blocks))


@dataclass
class ModelConfig:
    """Architecture of :class:`DiffSegNet` (stored in checkpoints as a plain dict).

    Attributes
    ----------
    num_classes: C, background included.
    in_channels: 1 for gray frames, 3 for RGB.
    width: channels of the encoder's first level (doubled at each level) and of its output.
    depth: encoder levels; H and W are padded to a multiple of ``2**depth`` by the engine.
    label_width: channels of the label denoiser (also the dimension D of the latent features
        the prototype loss works on).
    label_blocks: residual blocks of the denoiser, with dilations 1, 2, 4, ... (cycled).
    label_dilations: the dilation of each of the denoiser's blocks, one per block; empty (the
        default, and checkpoints written before this field existed): 1, 2, 4 cycled.
        :func:`keep_label_blocks` sets it when the blocks it keeps are not the first ones.
    time_dim: size of the timestep embedding.
    denoiser_stride: the denoiser works on s x s pixel blocks folded into channels (pixel
        unshuffle) and unfolds its logits back to full resolution: s² times fewer positions
        per step, while every pixel keeps its own input and output channels.
    encoder_stride: the same for the image encoder (its U-Net starts on e x e folded pixels
        and its full-resolution image logits are unfolded from e² channels per position);
        must divide denoiser_stride. Checkpoints written before this field existed were
        e = 1 (see :data:`LEGACY_DEFAULTS`).
    detail_width: channels of the full-resolution detail branch (two 3x3 convolutions on the
        frame itself) whose evidence joins the image logits, so that 1-2 px guidewires are
        placed by full-resolution filters even when the encoder is strided; 0: none (the
        default: on the bundled model's budget, width 8 gave guidewire Dice 0.39 against 0.37
        and mean Dice 0.52 against 0.53, within the spread of a retraining).
    context_frames: neighbouring frames on each side that the image encoder sees as extra
        input channels (temporal context): the input is frame t, then t - 1, t + 1, t - 2,
        t + 2, ... (:func:`napari_diffseg.data.context_indices`; a missing neighbour at the
        start or end of a video is the frame itself). 0: frame-wise, as checkpoints written
        before this field existed. The detail branch reads frame t only.
    global_context: the encoder's bottleneck adds, at every position, a learned function of
        its mean over the whole input (a frame-level signal: is there a contrast-filled tree
        in this frame at all?), which convolutions of a bounded receptive field cannot see.
        False in checkpoints written before this field existed
        (:func:`add_global_context` adds it to a trained model without changing its answer).
    """

    num_classes: int = 4
    in_channels: int = 1
    width: int = 32
    depth: int = 3
    label_width: int = 32
    label_blocks: int = 4
    time_dim: int = 64
    denoiser_stride: int = 4
    encoder_stride: int = 2
    detail_width: int = 0
    context_frames: int = 0
    global_context: bool = False
    label_dilations: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        self.label_dilations = tuple(int(d) for d in self.label_dilations)
        if self.label_dilations and (len(self.label_dilations) != self.label_blocks
                                     or min(self.label_dilations) < 1):
            raise ValueError(f"label_dilations {self.label_dilations} must give a dilation "
                             f">= 1 for each of the {self.label_blocks} denoiser blocks")
        e, s = self.encoder_stride, self.denoiser_stride
        if e < 1 or s < 1 or s % e:
            raise ValueError(
                f"encoder_stride ({e}) must be >= 1 and divide denoiser_stride ({s})"
            )
        if not 0 <= self.context_frames <= 4:
            raise ValueError(f"context_frames must be in 0..4, got {self.context_frames}")

    @property
    def image_channels(self) -> int:
        """Input channels of the encoder: the frame and its 2 x context_frames neighbours."""
        return self.in_channels * (1 + 2 * self.context_frames)

    @property
    def multiple(self) -> int:
        return max(self.encoder_stride * 2**self.depth, self.denoiser_stride)

    @property
    def dilations(self) -> tuple[int, ...]:
        """The dilation of each denoiser block."""
        return self.label_dilations or cycled_dilations(self.label_blocks)

    def to_dict(self) -> dict:
        return asdict(self)


def _norm(channels: int) -> nn.GroupNorm:
    groups = math.gcd(channels, 8)
    return nn.GroupNorm(groups, channels)


class ResBlock(nn.Module):
    """Norm-SiLU-Conv twice with a residual; optional FiLM from an embedding (scale, shift)."""

    def __init__(self, cin: int, cout: int, emb_dim: int = 0, dilation: int = 1) -> None:
        super().__init__()
        self.norm1 = _norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)
        self.norm2 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation)
        self.film = nn.Linear(emb_dim, 2 * cout) if emb_dim else None
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.film is not None and emb is not None:
            scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return h + self.skip(x)


class ImageEncoder(nn.Module):
    """A small U-Net on e x e folded pixels: image (B, Cin, H, W) -> features
    (B, width, H/e, W/e), e = ``config.encoder_stride``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        w = config.width
        self.stride = config.encoder_stride
        self.stem = nn.Conv2d(config.image_channels * self.stride**2, w, 3, padding=1)
        chans = [w * 2**i for i in range(config.depth + 1)]
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for i in range(config.depth):
            self.down_blocks.append(ResBlock(chans[i], chans[i]))
            self.downsamples.append(nn.Conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1))
        self.mid = ResBlock(chans[-1], chans[-1])
        self.global_mix = None
        if config.global_context:
            c = chans[-1]
            self.global_mix = nn.Sequential(nn.Linear(c, c), nn.SiLU(), nn.Linear(c, c))
            # zero output: a model that gains the block answers as before until it learns
            nn.init.zeros_(self.global_mix[2].weight)
            nn.init.zeros_(self.global_mix[2].bias)
        self.up_blocks = nn.ModuleList()
        self.upsamples = nn.ModuleList()
        for i in reversed(range(config.depth)):
            self.upsamples.append(nn.Conv2d(chans[i + 1], chans[i], 3, padding=1))
            self.up_blocks.append(ResBlock(2 * chans[i], chans[i]))
        self.out_norm = _norm(w)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            image = F.pixel_unshuffle(image, self.stride)
        h = self.stem(image)
        skips = []
        for block, down in zip(self.down_blocks, self.downsamples, strict=True):
            h = block(h)
            skips.append(h)
            h = down(h)
        h = self.mid(h)
        if self.global_mix is not None:
            h = h + self.global_mix(h.mean(dim=(2, 3)))[:, :, None, None]
        for up, block in zip(self.upsamples, self.up_blocks, strict=True):
            h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
            h = block(torch.cat([h, skips.pop()], dim=1))
        return F.silu(self.out_norm(h))


class DetailBranch(nn.Module):
    """(frame (B, Cin, H, W), encoder features (B, width, H/e, W/e)) -> logits (B, C, H, W):
    two 3x3 convolutions on the full-resolution frame, mixed per pixel with the (nearest
    upsampled) features that say what the structure is. Cheap: it runs once per frame."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dw = config.detail_width
        self.stride = config.encoder_stride
        self.conv1 = nn.Conv2d(config.in_channels, dw, 3, padding=1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1)
        self.mix = nn.Conv2d(dw + config.width, config.num_classes, 1)
        self.in_channels = config.in_channels

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        image = image[:, : self.in_channels]  # frame t (its neighbours follow it)
        h = F.silu(self.conv2(F.silu(self.conv1(image))))
        if self.stride > 1:
            features = F.interpolate(features, scale_factor=float(self.stride), mode="nearest")
        return self.mix(torch.cat([h, features.to(h.dtype)], dim=1))


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of continuous time t (B,) in [0, 1] -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([args.sin(), args.cos()], dim=1)


class LabelDenoiser(nn.Module):
    """(noisy label map, image conditioning, t) -> (clean-label logits, latent features).

    The first convolution is linear in its input, so its image half is applied once per frame
    (:meth:`condition`); each step only convolves the noisy label map and adds it.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d, e, s = config.label_width, config.time_dim, config.denoiser_stride
        self.stride = s
        self.encoder_stride = config.encoder_stride
        self.feature_fold = s // config.encoder_stride
        self.time_dim = e
        self.time_mlp = nn.Sequential(nn.Linear(e, e), nn.SiLU(), nn.Linear(e, e))
        self.inp_image = nn.Conv2d(config.width * self.feature_fold**2, d, 3, padding=1)
        self.inp_labels = nn.Conv2d(config.num_classes * s * s, d, 3, padding=1, bias=False)
        self.blocks = nn.ModuleList(
            ResBlock(d, d, emb_dim=e, dilation=dilation) for dilation in config.dilations
        )
        self.out_norm = _norm(d)
        self.head = nn.Conv2d(d, config.num_classes * s * s, 1)
        # per-pixel image evidence at full resolution, added to the logits of every step: the
        # folded blocks refine it from the noisy labels, thin structures keep their own pixels
        # (unfolded from e² channels per encoder position when the encoder is strided)
        self.image_logits = nn.Conv2d(
            config.width, config.num_classes * config.encoder_stride**2, 1
        )
        self.detail = DetailBranch(config) if config.detail_width else None
        self.label_width = d

    def _fold(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_unshuffle(x, self.stride) if self.stride > 1 else x

    def _unfold(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(x, self.stride) if self.stride > 1 else x

    def full_image_logits(
        self, features: torch.Tensor, image: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Image features (B, width, H/e, W/e) and the frame (B, Cin, H, W) -> per-pixel image
        logits (B, C, H, W)."""
        logits = self.image_logits(features)
        if self.encoder_stride > 1:
            logits = F.pixel_shuffle(logits, self.encoder_stride)
        if self.detail is not None:
            if image is None:
                raise ValueError("this network's detail branch needs the frame itself")
            logits = logits + self.detail(image, features)
        return logits

    def condition(self, features: torch.Tensor, image: torch.Tensor | None = None) -> torch.Tensor:
        """Image features (B, width, H/e, W/e) and the frame -> conditioning (B, label_width +
        C s², H/s, W/s): the image half of the first convolution and the folded
        full-resolution image logits."""
        f = self.feature_fold
        folded = F.pixel_unshuffle(features, f) if f > 1 else features
        return torch.cat(
            [self.inp_image(folded), self._fold(self.full_image_logits(features, image))], dim=1
        )

    def forward_folded(
        self, x_folded: torch.Tensor, cond: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The denoiser on s x s folded label maps (B, C s², H/s, W/s) -> (folded logits
        (B, C s², H/s, W/s), latent): what the sampler calls, so that no step unfolds."""
        emb = self.time_mlp(timestep_embedding(t, self.time_dim))
        image_term, image_logits = cond[:, : self.label_width], cond[:, self.label_width :]
        h = self.inp_labels(x_folded.to(cond.dtype)) + image_term
        for block in self.blocks:
            h = block(h, emb)
        latent = F.silu(self.out_norm(h))
        return self.head(latent) + image_logits, latent

    def forward(
        self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits, latent = self.forward_folded(self._fold(x_t), cond, t)
        return self._unfold(logits), latent


#: values of fields added to :class:`ModelConfig` after checkpoints were first written: a
#: stored config without the field describes this architecture
LEGACY_DEFAULTS = {"encoder_stride": 1, "detail_width": 0, "context_frames": 0,
                   "global_context": False, "label_dilations": ()}


def expand_context(model: DiffSegNet, context_frames: int) -> DiffSegNet:
    """A copy of `model` that sees `context_frames` neighbours on each side and, until it is
    trained, answers exactly as `model` does: the encoder's first convolution gets zero
    weights for the new input channels (frame t's channels come first, so they keep theirs).
    How a frame-wise model starts temporal fine-tuning (and how the bundled model's phase 4
    began, scripts/train_default_model.py)."""
    old = model.config
    if context_frames < old.context_frames:
        raise ValueError(f"the model already sees {old.context_frames} neighbours on each "
                         f"side; cannot reduce that to {context_frames}")
    if context_frames == old.context_frames:
        return model
    new = DiffSegNet(ModelConfig(**{**old.to_dict(), "context_frames": context_frames}))
    state = model.state_dict()
    stem = state["encoder.stem.weight"]
    weight = stem.new_zeros((stem.shape[0], new.config.image_channels * old.encoder_stride**2,
                             *stem.shape[2:]))
    # pixel_unshuffle puts input channel c's e x e block at channels c e² .. (c + 1) e² - 1
    weight[:, : stem.shape[1]] = stem
    state["encoder.stem.weight"] = weight
    new.load_state_dict(state)
    return new.to(next(model.parameters()).device)


def add_global_context(model: DiffSegNet) -> DiffSegNet:
    """A copy of `model` with the encoder's frame-level block (``ModelConfig.global_context``)
    which, until it is trained, answers exactly as `model` does (the block's output layer
    starts at zero). `model` itself if it has the block already."""
    if model.config.global_context:
        return model
    new = DiffSegNet(ModelConfig(**{**model.config.to_dict(), "global_context": True}))
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not k.startswith("encoder.global_mix.") for k in missing):
        raise RuntimeError(f"cannot add the global block: missing {missing}, "
                           f"unexpected {unexpected}")
    return new.to(next(model.parameters()).device)


def keep_label_blocks(model: DiffSegNet, blocks: int | Sequence[int]) -> DiffSegNet:
    """A copy of `model` whose denoiser keeps only some of its residual blocks: a lighter,
    faster denoiser (each block is two of the convolutions every DDIM step of every sample
    runs) that starts from the trained weights and is fine-tuned to make up for the blocks it
    lost. The blocks are residual, so the copy already answers close to `model`.

    blocks: a count N keeps the first N; a sequence keeps the blocks of those indices, in
    order, each with its own dilation (``ModelConfig.label_dilations`` records them when they
    are not the default 1, 2, 4 cycle). `model` itself if every block is kept."""
    old = model.config
    keep = list(range(blocks)) if isinstance(blocks, int) else sorted(set(int(b) for b in blocks))
    if not keep or keep[0] < 0 or keep[-1] >= old.label_blocks:
        raise ValueError(f"the denoiser has {old.label_blocks} blocks; a copy can keep fewer, "
                         f"cannot keep {blocks}")
    if len(keep) == old.label_blocks:
        return model
    dilations = tuple(old.dilations[i] for i in keep)
    new = DiffSegNet(ModelConfig(**{**old.to_dict(), "label_blocks": len(keep),
                                    "label_dilations": () if dilations == cycled_dilations(
                                        len(keep)) else dilations}))
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("denoiser.blocks."):
            index, rest = key[len("denoiser.blocks."):].split(".", 1)
            if int(index) not in keep:
                continue
            key = f"denoiser.blocks.{keep.index(int(index))}.{rest}"
        state[key] = value
    new.load_state_dict(state)
    return new.to(next(model.parameters()).device)


class DiffSegNet(nn.Module):
    """Conditional diffusion segmenter predicting the clean label map (x0 prediction)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ImageEncoder(config)
        self.denoiser = LabelDenoiser(config)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """image: (B, Cin, H, W) float in about [-1, 1], H and W multiples of
        ``config.multiple`` -> per-frame conditioning (B, label_width + C s², H/s, W/s), s the
        denoiser stride. Compute it once per frame; repeat rows for several samples."""
        return self.denoiser.condition(self.encoder(image), image)

    def folded_label_shape(self, cond: torch.Tensor) -> tuple[int, int, int, int]:
        """Shape (B, C s², H/s, W/s) of the folded label maps that go with `cond`."""
        b, _, h, w = cond.shape
        s = self.config.denoiser_stride
        return b, self.config.num_classes * s * s, h, w

    def denoise_folded(
        self, x_folded: torch.Tensor, cond: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`denoise` on folded maps (see :meth:`LabelDenoiser.forward_folded`); the
        channel c s² + i s + j of a folded map is class c at pixel (s y + i, s x + j)."""
        return self.denoiser.forward_folded(x_folded, cond, t)

    def unfold(self, folded: torch.Tensor) -> torch.Tensor:
        """(B, C s², H/s, W/s) -> (B, C, H, W)."""
        return self.denoiser._unfold(folded)

    def denoise(
        self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x_t: (B, C, H, W) noisy label map; cond: from :meth:`encode`; t: (B,) in [0, 1]
        -> (logits (B, C, H, W) of the clean label map, latent (B, label_width, H/s, W/s))."""
        return self.denoiser(x_t, cond, t)

    def forward(
        self,
        image: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        keep_condition: torch.Tensor | None = None,
        keep_shortcut: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training's entry point. keep_condition, keep_shortcut: optional (B,) 0/1 masks;
        a row with keep_condition 0 is denoised without the image at all (the conditioning
        zeroed, as classifier-free guidance trains), one with keep_shortcut 0 without the
        per-pixel image logits added to its output, so its answer must pass through the
        denoiser, which reads x_t."""
        cond = self.encode(image)
        if keep_condition is not None or keep_shortcut is not None:
            b, d = cond.shape[0], self.config.label_width
            ones = cond.new_ones(b)
            kc = (ones if keep_condition is None else keep_condition.to(cond.dtype))
            ks = kc * (ones if keep_shortcut is None else keep_shortcut.to(cond.dtype))
            cond = torch.cat([cond[:, :d] * kc[:, None, None, None],
                              cond[:, d:] * ks[:, None, None, None]], dim=1)
        return self.denoise(x_t, cond, t)
