#!/usr/bin/env python
"""Pictures and label shares of a model on the real angiograms beside the project.

    python scripts/real_data_report.py --tag bundled
    python scripts/real_data_report.py --tag adapted --model-for proj1=path/to/adapted.pt ...
    python scripts/real_data_report.py --tag default --review tta --whole-video

For every input in ``../shared/realdata`` (the clinical JPEG cines and the compressed XA
DICOMs; see its README) it segments a few chosen frames and writes, per frame, one PNG of
three panels -- the frame, the labels over it in the class colours, the per-pixel uncertainty
(predictive entropy, 0 .. ln C) -- to ``docs/images/real/<input>-f<frame>-<tag>.png``, and the
share of the frame labelled per class to ``docs/real_data_<tag>.json``. There is no ground
truth for these files: the pictures are for looking, the shares for comparing runs.
By default only the chosen frames are segmented (K diffusion samples); ``--review tta
--whole-video`` gives what ``napari-diffseg segment`` and the dock give by default: every frame
segmented with test-time augmentation, then the guidewire tracked over the whole video.

The real files are only read, never copied into the project or used to train the bundled
model (``--model-for`` takes models adapted to one video at run time, the plugin's feature).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from napari_diffseg.engine.inference import (
    DEFAULT_MIN_COMPONENT,
    iter_segment,
    load_for_inference,
    review_options,
)
from napari_diffseg.engine.postprocess import clean_video_runs
from napari_diffseg.io import read
from napari_diffseg.models import default_model_path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "realdata"
#: input name -> (path below REAL, frames shown: those at full opacification where possible)
INPUTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "proj0": ("video/vukicevic_clinical_sample2_proj0", (12, 24)),
    "proj1": ("video/vukicevic_clinical_sample2_proj1", (10, 30)),
    "sample1": ("video/vukicevic_clinical_sample1", (0, 1)),
    "phantom_IM7": ("dicom/vukicevic_phantom_XA_IM7.dcm", (4,)),
    "phantom_IM8": ("dicom/vukicevic_phantom_XA_IM8.dcm", (4,)),
}
COLOURS = {"vessel": (255, 60, 60), "catheter": (60, 220, 60), "guidewire": (255, 215, 0)}


def to_uint8(frame: np.ndarray) -> np.ndarray:
    f = frame.astype(np.float32)
    lo, hi = np.percentile(f, [0.5, 99.5])
    return (np.clip((f - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def overlay(gray: np.ndarray, labels: np.ndarray, classes: dict[int, str]) -> np.ndarray:
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    for k, name in classes.items():
        if k == 0:
            continue
        colour = np.array(COLOURS.get(name, (255, 0, 255)), np.float32)
        m = labels == k
        rgb[m] = 0.35 * rgb[m] + 0.65 * colour
    return rgb.astype(np.uint8)


def heat(entropy: np.ndarray, num_classes: int) -> np.ndarray:
    """Entropy on the fixed range 0 .. ln C, dark blue -> cyan -> white."""
    x = np.clip(entropy / math.log(num_classes), 0, 1)
    r = np.clip(2 * x - 1, 0, 1)
    g = np.clip(1.5 * x, 0, 1)
    b = np.clip(0.3 + 1.4 * x, 0, 1)
    return (np.stack([r, g, b], -1) * 255).astype(np.uint8)


def panel(gray, labels, entropy, classes, title: str) -> Image.Image:
    parts = [np.repeat(gray[..., None], 3, 2), overlay(gray, labels, classes),
             heat(entropy, len(classes))]
    size = 384
    tiles = [Image.fromarray(p).resize((size, size), Image.BILINEAR) for p in parts]
    out = Image.new("RGB", (3 * size + 8, size + 22), (20, 20, 20))
    for i, tile in enumerate(tiles):
        out.paste(tile, (i * (size + 4), 22))
    draw = ImageDraw.Draw(out)
    legend = "  ".join(f"{n}" for k, n in sorted(classes.items()) if k)
    draw.text((4, 4), f"{title}   |   labels: {legend}   |   entropy 0..ln {len(classes)}",
              fill=(230, 230, 230))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="bundled", help="name of this run in the file names")
    parser.add_argument("--model", type=Path, default=None,
                        help="checkpoint for every input (default: the bundled model)")
    parser.add_argument("--model-for", action="append", default=[], metavar="INPUT=PATH",
                        help="a checkpoint for one input only (e.g. one adapted to it)")
    parser.add_argument("--only", nargs="*", help="inputs to run (default: all)")
    parser.add_argument("--review", choices=("samples", "tta"), default="samples",
                        help="K diffusion samples (the pictures before 2026-12-07) or the 8 "
                        "views of test-time augmentation (segment's and the dock's default)")
    parser.add_argument("--steps", type=int, default=None, help="default: the review's")
    parser.add_argument("--samples", type=int, default=None, help="default: the review's")
    parser.add_argument("--keep-static", action="store_true",
                        help="--whole-video without segment's static-vessel step")
    parser.add_argument("--whole-video", action="store_true",
                        help="segment every frame and track the guidewire over the video, "
                        "as segment does, before showing the chosen frames")
    parser.add_argument("--frames", action="append", default=[], metavar="INPUT=F,F",
                        help="the frames to show for one input instead of its chosen ones "
                        "(e.g. proj1=0,30: a frame before the contrast arrives and one at "
                        "full opacification)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "real")
    args = parser.parse_args()
    if not REAL.is_dir():
        raise SystemExit(f"no real data at {REAL}")
    per_input = dict(item.split("=", 1) for item in args.model_for)
    frames_for = {k: tuple(int(f) for f in v.split(","))
                  for k, v in (item.split("=", 1) for item in args.frames)}
    args.out.mkdir(parents=True, exist_ok=True)
    shares: dict[str, dict] = {}
    for name, (rel, shown) in INPUTS.items():
        shown = frames_for.get(name, shown)
        if args.only and name not in args.only:
            continue
        if args.only is None and args.model_for and name not in per_input:
            continue
        model_path = Path(per_input.get(name) or args.model or default_model_path())
        model, ckpt = load_for_inference(model_path, "cpu")
        classes = {int(k): v for k, v in ckpt.classes.items()}
        video = read(REAL / rel)
        frames = np.asarray(video.frames)
        if frames.ndim == 4:
            frames = frames.mean(axis=-1)
        # normalise with the whole video's range, as the dock and the CLI do, then pick frames
        todo = list(range(len(frames))) if args.whole_video else list(shown)
        sampling = {k: v for k, v in (("steps", args.steps), ("samples", args.samples))
                    if v is not None}
        options = review_options(args.review, seed=0, batch_size=1,
                                 min_component=DEFAULT_MIN_COMPONENT, **sampling)
        all_labels = np.zeros(frames.shape[:3], np.uint8)
        entropies = {}
        for chunk in iter_segment(model, frames, normalisation=ckpt.normalisation,
                                  timesteps=ckpt.schedule["timesteps"], indices=todo,
                                  options=options):
            all_labels[chunk.indices] = chunk.labels
            for j, f in enumerate(chunk.indices):
                if int(f) in shown:
                    entropies[int(f)] = chunk.entropy[j]
        shares[name] = {"model": model_path.name, "review": args.review,
                        "steps": options.steps, "samples": options.samples,
                        "whole_video": args.whole_video, "frames": {}}
        if args.whole_video:  # segment's whole-video step: static vessel, then the wire
            done = clean_video_runs(frames, all_labels, todo, classes,
                                    static=not args.keep_static)
            shares[name]["wire_tracking"] = {"kept_hidden": done.kept_hidden,
                                             "dropped": done.dropped}
            shares[name]["static_vessel"] = {"applied": not args.keep_static,
                                             "frames": done.static}
            done.apply(all_labels)
        if args.whole_video:  # every frame's shares, e.g. to see the frames before the bolus
            shares[name]["share_by_frame"] = {
                classes[k]: [round(float((lab == k).mean()), 5) for lab in all_labels]
                for k in classes if k}
        for f in shown:
            labels, entropy = all_labels[f], entropies[f]
            share = {classes[k]: float((labels == k).mean()) for k in classes if k}
            shares[name]["frames"][str(f)] = share
            title = f"{name} frame {f} - {args.tag} ({model_path.name})"
            panel(to_uint8(frames[f]), labels, entropy, classes, title).save(
                args.out / f"{name}-f{f}-{args.tag}.png")
            print(f"{name:12s} frame {f:3d}: " + ", ".join(
                f"{k} {100 * v:.2f} %" for k, v in share.items()))
    out = ROOT / "docs" / f"real_data_{args.tag}.json"
    out.write_text(json.dumps(shares, indent=2))
    print(f"wrote {out} and the pictures in {args.out}")


if __name__ == "__main__":
    main()
