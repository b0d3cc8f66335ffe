#!/usr/bin/env python
"""Train the bundled default model on generated angiography and measure it on held-out videos.

    python scripts/train_default_model.py            # CPU budget (this project's 2-core machine)
    python scripts/train_default_model.py --gpu      # larger budget, for a CUDA machine

Writes napari_diffseg/models/default.pt (weights + everything needed to use them, no optimiser
state) and docs/model_figures.json (the figures quoted in docs/model.md). Deterministic for a
seed up to floating-point non-determinism of the device.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from napari_diffseg.data import DEFAULT_CLASSES, SyntheticConfig, generate_sequence
from napari_diffseg.data.sequences import (
    DEFAULT_NORMALISATION,
    SparseDataset,
    normalise_frames,
)
from napari_diffseg.engine import SegmentOptions, TrainOptions, save_checkpoint, segment, train
from napari_diffseg.engine.device import device_description, resolve_device
from napari_diffseg.engine.metrics import evaluate_frames
from napari_diffseg.model import ModelConfig

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("train_default_model")


@dataclass
class Budget:
    train_sequences: int
    frames: int
    sizes: tuple[int, ...]
    iterations: int
    batch_size: int
    crop_size: int
    width: int
    label_width: int
    label_blocks: int
    encoder_stride: int = 2
    denoiser_stride: int = 4
    detail_width: int = 0


CPU = Budget(60, 40, (256, 320, 384, 448, 512), 2500, 8, 96, 24, 32, 3)
GPU = Budget(150, 40, (256, 320, 384, 448, 512), 20000, 16, 192, 32, 64, 4)
HELD_OUT = {"sequences": 4, "frames": 20, "size": 512, "difficulty": 0.5, "seed0": 100_000}


def training_data(budget: Budget, seed: int) -> SparseDataset:
    """Generated sequences, every frame labelled (the generator's ground truth), sizes mixed so
    that vessel calibres cover what 256-512 px videos show, difficulty 0.2-0.8."""
    rng = np.random.default_rng(seed)
    data = SparseDataset(classes=dict(DEFAULT_CLASSES), source="synthetic generator")
    for i in range(budget.train_sequences):
        cfg = SyntheticConfig(
            size=budget.sizes[i % len(budget.sizes)], frames=budget.frames, seed=seed + i,
            difficulty=float(rng.uniform(0.2, 0.8)),
        )
        seq = generate_sequence(cfg, name=f"train{i:03d}")
        frames = normalise_frames(seq.frames, DEFAULT_NORMALISATION)
        data.images.extend(frames)
        data.labels.extend(seq.labels)
        data.sequences.append(seq.name)
    logger.info("training data: %d sequences, %d frames", len(data.sequences), len(data.images))
    return data


def held_out_evaluation(model, ckpt, device) -> dict:
    """Dice / IoU / HD95 per class on held-out generated 512 px videos (every frame)."""
    preds, targets, seconds = [], [], 0.0
    for j in range(HELD_OUT["sequences"]):
        cfg = SyntheticConfig(size=HELD_OUT["size"], frames=HELD_OUT["frames"],
                              seed=HELD_OUT["seed0"] + j, difficulty=HELD_OUT["difficulty"])
        seq = generate_sequence(cfg, name=f"heldout{j}")
        t0 = time.perf_counter()
        seg = segment(model, seq.frames, normalisation=ckpt.normalisation,
                      timesteps=ckpt.schedule["timesteps"],
                      options=SegmentOptions(steps=4, samples=4, seed=0,
                                             batch_size=1 if device.type == "cpu" else 8))
        seconds += time.perf_counter() - t0
        preds.append(seg.labels)
        targets.append(seq.labels)
    report = evaluate_frames(np.concatenate(preds), np.concatenate(targets), DEFAULT_CLASSES)
    n_frames = HELD_OUT["sequences"] * HELD_OUT["frames"]
    return {
        "held_out": dict(HELD_OUT),
        "report": report.to_dict(),
        "table": report.format_table(),
        "segment_seconds_per_frame": seconds / n_frames,
        "device": device_description(device),
        "settings": {"steps": 4, "samples": 4},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="use the larger GPU budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, help="override the budget's iterations")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "napari_diffseg" / "models" / "default.pt")
    parser.add_argument("--figures", type=Path, default=ROOT / "docs" / "model_figures.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))

    budget = GPU if args.gpu else CPU
    if args.iterations:
        budget = Budget(**{**asdict(budget), "iterations": args.iterations})
    device = resolve_device("cuda" if args.gpu else "cpu")
    data = training_data(budget, seed=args.seed)
    options = TrainOptions(
        mode="supervised", iterations=budget.iterations, batch_size=budget.batch_size,
        crop_size=budget.crop_size, seed=args.seed, device=str(device), val_every=0,
    )
    config = ModelConfig(num_classes=len(DEFAULT_CLASSES), width=budget.width, depth=3,
                         label_width=budget.label_width, label_blocks=budget.label_blocks,
                         encoder_stride=budget.encoder_stride,
                         denoiser_stride=budget.denoiser_stride,
                         detail_width=budget.detail_width)

    def report(p):
        if p.iteration % 100 == 0:
            logger.info("iteration %d/%d loss %.4f (%.0f s)", p.iteration, p.total,
                        p.losses["total"], p.elapsed_s)

    t0 = time.perf_counter()
    result = train(data, options, model_config=config, callback=report)
    train_seconds = time.perf_counter() - t0
    ckpt = result.checkpoint
    ckpt.training_state = None  # ship weights only
    figures = held_out_evaluation(result.model.to(device), ckpt, device)
    figures.update({
        "budget": asdict(budget),
        "train_seconds": train_seconds,
        "train_device": device_description(device),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
        "parameters": sum(p.numel() for p in result.model.parameters()),
        "final_loss": ckpt.metrics.get("final_loss"),
    })
    ckpt.metrics.update({"held_out": figures["report"]["mean"],
                         "held_out_per_class": figures["report"]["per_class"]})
    save_checkpoint(args.out, ckpt)
    args.figures.write_text(json.dumps(figures, indent=2))
    logger.info("saved %s (%.1f MB)\n%s", args.out, args.out.stat().st_size / 1e6,
                figures["table"])


if __name__ == "__main__":
    main()
