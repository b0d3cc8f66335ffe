#!/usr/bin/env python
"""Regenerate the committed sample in sample_data/ and the generator picture in docs/.

    python scripts/make_sample_data.py            (or: make sample-data)

Writes
- sample_data/coronary_demo.mp4: a 512x512, 40-frame synthetic coronary angiogram (H.264, 15 fps)
- sample_data/coronary_demo/: the same sequence as a DAVIS-style dataset, as MOSXAV ships its
  data: JPEGImages/coronary_demo/NNNNN.jpg, Annotations/coronary_demo/NNNNN.png (palette PNG
  label ids) on every 5th frame, classes.json
- docs/images/synthetic_frames.png: a few frames with their labels overlaid
Deterministic: the same seed gives the same sequence.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import imageio.v3 as iio

from napari_diffseg.data import DEFAULT_CLASSES, SyntheticConfig, generate_sequence
from napari_diffseg.data.preview import contact_sheet
from napari_diffseg.io import write_davis

ROOT = Path(__file__).resolve().parents[1]
NAME = "coronary_demo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "sample_data")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--label-every", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    config = SyntheticConfig(size=512, frames=40, seed=args.seed, difficulty=0.5, guidewire=True)
    seq = generate_sequence(config, name=NAME)
    args.out.mkdir(parents=True, exist_ok=True)

    video = args.out / f"{NAME}.mp4"
    # crf 18: visually lossless for these gray frames while keeping the file around 1-2 MB
    iio.imwrite(video, seq.frames, plugin="pyav", codec="libx264", fps=seq.fps,
                in_pixel_format="gray", out_pixel_format="yuv420p")
    logging.info("wrote %s (%.1f MB)", video, video.stat().st_size / 1e6)

    root = args.out / NAME
    frames_dir = root / "JPEGImages" / NAME
    frames_dir.mkdir(parents=True, exist_ok=True)
    names = [f"{i:05d}" for i in range(seq.frames.shape[0])]
    for name, frame in zip(names, seq.frames, strict=True):
        iio.imwrite(frames_dir / f"{name}.jpg", frame, quality=92)
    labelled = list(range(0, seq.frames.shape[0], args.label_every))
    write_davis(root, NAME, seq.labels, frame_names=names, frames=labelled,
                classes=DEFAULT_CLASSES)
    logging.info("wrote %s (%d frames, labels on %s)", root, len(names), labelled)

    args.docs.mkdir(parents=True, exist_ok=True)
    picture = args.docs / "synthetic_frames.png"
    contact_sheet(seq, [0, 10, 20, 30, 39], picture)
    logging.info("wrote %s", picture)


if __name__ == "__main__":
    main()
