#!/usr/bin/env python
"""Inference speed of the engine: seconds per frame for frame sizes x DDIM steps x samples.

    python benchmarks/bench_inference.py [--model MODEL.pt] [--device auto] [--sizes 256 512]

Prints a markdown table (device named) for docs/benchmarks.md. Uses the bundled model by
default and generated frames, so it runs anywhere; timings exclude the first (warm-up) batch.
"""

from __future__ import annotations

import argparse
import time

import torch

from napari_diffseg.data import SyntheticConfig, generate_sequence
from napari_diffseg.engine import SegmentOptions, segment
from napari_diffseg.engine.device import device_description
from napari_diffseg.engine.inference import load_for_inference
from napari_diffseg.models import default_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()

    model, ckpt = load_for_inference(args.model or default_model_path(), args.device)
    device = next(model.parameters()).device
    print(f"device: {device_description(device)}; torch {torch.__version__}; "
          f"{args.frames} frames per run, batch {args.batch_size}\n")
    print("| size | steps | samples | s/frame | frames/s |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        seq = generate_sequence(SyntheticConfig(size=size, frames=args.frames + args.batch_size))
        for steps in args.steps:
            for samples in args.samples:
                opts = SegmentOptions(steps=steps, samples=samples, batch_size=args.batch_size)
                common = {"normalisation": ckpt.normalisation,
                          "timesteps": int(ckpt.schedule["timesteps"]), "options": opts}
                segment(model, seq.frames[: args.batch_size], **common)  # warm-up
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                segment(model, seq.frames[args.batch_size :], **common)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                per_frame = (time.perf_counter() - t0) / args.frames
                print(f"| {size} | {steps} | {samples} | {per_frame:.3f} | "
                      f"{1 / per_frame:.2f} |", flush=True)


if __name__ == "__main__":
    main()
