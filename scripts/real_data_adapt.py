#!/usr/bin/env python
"""'Adapt to this video' on the real angiograms beside the project, with 0 or 2 corrected frames.

    python scripts/real_data_adapt.py --input proj0 --corrected 0
    python scripts/real_data_adapt.py --input proj0 --corrected 2

Writes ``benchmarks/results/models/real_<input>_adapt<k>.pt`` (ignored by git: a model adapted
to a real video is the user's, never the bundled one); ``scripts/real_data_report.py
--model-for <input>=<that file>`` then draws its pictures.

How the two corrected frames are made (``--corrected 2``): the way a user corrects in the
dock. The start model's labels of the frame are kept, and the large branches it misses are
painted over them: the strokes below are centrelines with a width, read off the frame by eye
on a 32-px grid (one person, no clinical training, a few minutes per frame; not an expert
annotation); the catheter is painted as catheter. Specks under 64 px are erased. Nothing
else is changed, so everything the strokes do not cover keeps the model's answer.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from skimage.draw import disk

from napari_diffseg.engine import SegmentOptions, load_checkpoint
from napari_diffseg.engine.adapt import ADAPT_DEFAULTS, adapt_to_video
from napari_diffseg.engine.inference import DEFAULT_MIN_COMPONENT, iter_segment, load_for_inference
from napari_diffseg.engine.postprocess import remove_specks
from napari_diffseg.engine.training import TrainOptions
from napari_diffseg.io import read
from napari_diffseg.models import default_model_path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "realdata"
INPUTS = {
    "proj0": "video/vukicevic_clinical_sample2_proj0",
    "proj1": "video/vukicevic_clinical_sample2_proj1",
    "sample1": "video/vukicevic_clinical_sample1",
    "phantom_IM7": "dicom/vukicevic_phantom_XA_IM7.dcm",
    "phantom_IM8": "dicom/vukicevic_phantom_XA_IM8.dcm",
}

#: Hand strokes: input -> frame -> [(class name, width px at the start, width at the end,
#: [(x, y), ...] centreline in frame pixels)].
STROKES: dict[str, dict[int, list[tuple[str, float, float, list[tuple[int, int]]]]]] = {
    "proj0": {
        12: [
            ("catheter", 7, 7, [(85, 0), (75, 50), (60, 122)]),
            ("vessel", 13, 12, [(62, 96), (90, 78), (130, 70)]),  # left main
            ("vessel", 12, 8, [(130, 70), (165, 70), (200, 70), (230, 67), (260, 64),
                               (280, 65), (300, 75), (320, 88), (340, 102), (350, 112)]),
            ("vessel", 10, 5, [(100, 92), (135, 95), (165, 92), (200, 90), (225, 92),
                               (240, 107), (245, 130), (250, 150), (270, 160), (290, 167),
                               (310, 180), (325, 200), (345, 225), (355, 250), (360, 280),
                               (365, 310), (370, 340), (372, 360)]),
            ("vessel", 7, 4, [(170, 120), (160, 150), (150, 190), (142, 225), (130, 255),
                              (118, 280), (115, 300), (125, 325), (135, 350), (150, 375),
                              (170, 387), (195, 395), (210, 400)]),
            ("vessel", 5, 3, [(175, 120), (180, 160), (190, 195), (205, 220), (215, 240),
                              (220, 265)]),
        ],
        24: [
            ("catheter", 7, 7, [(90, 0), (78, 60), (62, 128)]),
            ("vessel", 13, 12, [(62, 100), (100, 92), (130, 85)]),  # left main
            ("vessel", 12, 8, [(130, 82), (165, 80), (200, 80), (235, 77), (270, 70),
                               (290, 70), (320, 85), (345, 105), (370, 125), (380, 140)]),
            ("vessel", 10, 5, [(100, 107), (130, 107), (165, 102), (200, 100), (225, 102),
                               (240, 115), (245, 135), (245, 155), (260, 165), (290, 177),
                               (310, 190), (325, 210), (340, 235), (350, 260), (350, 285),
                               (355, 310), (365, 340), (370, 360)]),
            ("vessel", 7, 4, [(175, 130), (160, 165), (150, 200), (140, 235), (130, 270),
                              (122, 300), (125, 325), (135, 350), (145, 370), (160, 385),
                              (190, 400), (210, 410), (235, 408)]),
            ("vessel", 5, 3, [(175, 130), (180, 165), (190, 200), (205, 230), (220, 260),
                              (230, 285), (235, 310)]),
        ],
    },
}


def paint(labels: np.ndarray, strokes, classes: dict[int, str]) -> np.ndarray:
    """Paint strokes (class, w0, w1, points) into a copy of labels (H, W), one disc per px."""
    out = labels.copy()
    ids = {v: k for k, v in classes.items()}
    for name, w0, w1, points in strokes:
        pts = np.asarray(points, dtype=float)
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        total = max(seg.sum(), 1.0)
        done = 0.0
        for (x0, y0), (x1, y1), length in zip(pts[:-1], pts[1:], seg, strict=True):
            for s in np.linspace(0, 1, max(int(length), 1) + 1):
                frac = (done + s * length) / total
                radius = (w0 + (w1 - w0) * frac) / 2
                rr, cc = disk((y0 + s * (y1 - y0), x0 + s * (x1 - x0)), radius,
                              shape=out.shape)
                out[rr, cc] = ids[name]
            done += length
    return out


def corrected_frames(name: str, frames: np.ndarray, model_path: Path) -> dict[int, np.ndarray]:
    """The start model's labels of the stroked frames with the strokes painted over them."""
    model, ckpt = load_for_inference(model_path, "cpu")
    classes = {int(k): v for k, v in ckpt.classes.items()}
    wanted = sorted(STROKES[name])
    proposal = {}
    for chunk in iter_segment(model, frames, normalisation=ckpt.normalisation,
                              timesteps=ckpt.schedule["timesteps"], indices=wanted,
                              options=SegmentOptions(steps=4, samples=4, seed=0, batch_size=1,
                                                     min_component=DEFAULT_MIN_COMPONENT)):
        for j, f in enumerate(chunk.indices):
            proposal[int(f)] = chunk.labels[j]
    return {f: remove_specks(paint(proposal[f], STROKES[name][f], classes),
                             DEFAULT_MIN_COMPONENT) for f in wanted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", choices=sorted(INPUTS), required=True)
    parser.add_argument("--corrected", type=int, choices=[0, 2], default=0)
    parser.add_argument("--model", type=Path, default=None, help="start model (bundled)")
    parser.add_argument("--iterations", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    model_path = args.model or default_model_path()
    video = read(REAL / INPUTS[args.input])
    frames = np.asarray(video.frames)
    verified = {}
    if args.corrected:
        if args.input not in STROKES:
            raise SystemExit(f"no hand strokes for {args.input}; they exist for {list(STROKES)}")
        verified = corrected_frames(args.input, frames, model_path)
    out = args.out or ROOT / "benchmarks" / "results" / "models" / \
        f"real_{args.input}_adapt{args.corrected}.pt"
    out.parent.mkdir(parents=True, exist_ok=True)
    options = TrainOptions(**{**ADAPT_DEFAULTS, "device": "cpu",
                              **({"iterations": args.iterations} if args.iterations else {})})

    def say(event: dict) -> None:
        if event.get("kind") == "progress" and event["iteration"] % 50 == 0:
            print(f"iteration {event['iteration']}/{event['total']} "
                  f"loss {event['losses']['total']:.3f}", flush=True)
        elif event.get("kind") in ("status", "done") and "message" in event:
            print(event["message"], flush=True)

    done = adapt_to_video(frames, str(model_path), str(out), verified, options=options,
                          callback=say, name=args.input)
    metrics = load_checkpoint(out).metrics if done.get("path") else {}
    print(json.dumps({"input": args.input, "corrected": sorted(verified), "model": str(out),
                      "metrics": {k: v for k, v in metrics.items()
                                  if isinstance(v, (int, float, str))}}, indent=2))


if __name__ == "__main__":
    main()
