#!/usr/bin/env python
"""Does the denoiser read the image or copy x_t? A probe, optionally after a short fine-tune.

    nice -n 15 python benchmarks/probe_x_t.py                       # the bundled model as is
    nice -n 15 python benchmarks/probe_x_t.py --iterations 150 --save /tmp/ft_base.pt
    nice -n 15 python benchmarks/probe_x_t.py --iterations 150 --label-swap 0.3 \
        --label-noise 0.3 --high-t-fraction 0.3 --save /tmp/ft_swap.pt

For 4 held-out generated 256 px frames, the denoiser predicts the clean labels at step t from
an x_t built (same noise) from the reference labels and from an all-background map. A denoiser
that reads the image gets the foreground right from either; one that copies x_t gets it right
only from the reference. Prints the foreground accuracy of both for t = 3, 5, 7, 10 of 10.
With --iterations, first fine-tunes the model supervised on 3 generated 256 px videos of 10
labelled frames (the same budget for every variant, so the variants compare), with the
TrainOptions given (see docs/model.md, "Samples that are samples"); --save keeps the result for
``bench_uncertainty.py --model``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from napari_diffseg.data import SyntheticConfig, generate_sequence
from napari_diffseg.data.sequences import (
    apply_normalisation,
    dataset_from_videos,
    normalisation_range,
)
from napari_diffseg.engine.checkpoint import build_model, load_checkpoint, save_checkpoint
from napari_diffseg.engine.training import TrainOptions, train
from napari_diffseg.io import Video, VideoMetadata
from napari_diffseg.model import NoiseSchedule
from napari_diffseg.model.losses import labels_to_analog
from napari_diffseg.models import default_model_path

TRAIN_SEED0 = 300_100
PROBE_SEED = 200_003


def _video(seed: int, size: int = 256, frames: int = 10) -> Video:
    seq = generate_sequence(SyntheticConfig(size=size, frames=frames, seed=seed,
                                            difficulty=0.5))
    meta = VideoMetadata(Path(f"s{seed}"), "davis", [f"{i:05d}" for i in range(frames)])
    return Video(seq.frames, meta, labels=seq.labels, labelled=list(range(frames)),
                 classes=seq.classes, sequence=f"s{seed}")


@torch.no_grad()
def probe(model, normalisation: dict, timesteps: int) -> dict[int, tuple[float, float]]:
    """{t: (foreground accuracy from x_t of the reference, from x_t of background)}."""
    model.eval()
    seq = generate_sequence(SyntheticConfig(size=256, frames=4, seed=PROBE_SEED,
                                            difficulty=0.5), name="probe")
    lo, hi = normalisation_range(seq.frames, normalisation)
    image = apply_normalisation(seq.frames, lo, hi, normalisation.get("clahe"))
    image = torch.from_numpy(image.astype(np.float32))[:, None]
    ref = torch.from_numpy(seq.labels.astype(np.int64))
    c = model.config.num_classes
    schedule = NoiseSchedule(timesteps)
    cond = model.encode(image)
    noise = torch.randn((4, c, 256, 256), generator=torch.Generator().manual_seed(0))
    foreground = ref > 0
    out = {}
    for step in sorted({max(1, round(timesteps * f)) for f in (0.3, 0.5, 0.7, 1.0)}):
        t = torch.full((4,), step)
        accuracy = []
        for labels in (ref, torch.zeros_like(ref)):
            x_t = schedule.q_sample(labels_to_analog(labels, c), t, noise)
            logits, _ = model.denoise(x_t, cond, schedule.time(t))
            accuracy.append(float((logits.argmax(1) == ref)[foreground].float().mean()))
        out[step] = (accuracy[0], accuracy[1])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--iterations", type=int, default=0)
    parser.add_argument("--label-swap", type=float, default=0.0)
    parser.add_argument("--label-noise", type=float, default=0.0)
    parser.add_argument("--high-t-fraction", type=float, default=0.0)
    parser.add_argument("--shortcut-dropout", type=float, default=0.0)
    parser.add_argument("--condition-dropout", type=float, default=0.0)
    parser.add_argument("--save", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.model or default_model_path(), map_location="cpu")
    timesteps = int(ckpt.schedule["timesteps"])
    model = build_model(ckpt)
    if args.iterations:
        data = dataset_from_videos([_video(TRAIN_SEED0 + i) for i in range(3)], "probe")
        opts = TrainOptions(
            mode="supervised", iterations=args.iterations, batch_size=4, crop_size=128,
            lr=2e-4, device="cpu", val_every=0, seed=0, label_swap=args.label_swap,
            label_noise=args.label_noise, high_t_fraction=args.high_t_fraction,
            shortcut_dropout=args.shortcut_dropout, condition_dropout=args.condition_dropout,
        )
        t0 = time.perf_counter()
        result = train(data, opts, init=ckpt)
        print(f"fine-tuned {args.iterations} iterations in {time.perf_counter() - t0:.0f} s")
        model = result.model
        if args.save:
            save_checkpoint(args.save, result.checkpoint)
    print("| t / T | foreground accuracy, x_t from the reference | from background |")
    print("|---|---|---|")
    for step, (from_ref, from_bg) in probe(model, ckpt.normalisation, timesteps).items():
        print(f"| {step} / {timesteps} | {from_ref:.3f} | {from_bg:.3f} |")


if __name__ == "__main__":
    main()
