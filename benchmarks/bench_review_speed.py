#!/usr/bin/env python
"""Speed of the dock's two review choices with the bundled model: the K diffusion samples
(``review_options("samples")``, 4 steps x 4 samples) against test-time augmentation
(``review_options("tta")``, 8 flipped / turned views of one step), and one pass (1 step x 1
sample) for scale.

    python benchmarks/bench_review_speed.py              # 256 and 512 px, 6 timed frames

Each row segments generated frames with ``napari_diffseg.engine.segment`` after one warm-up
frame and reports frames per second. Prints a markdown table and rewrites the `review-speed`
section of docs/benchmarks.md (unless --no-docs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import update_section  # noqa: E402

from napari_diffseg.data import SyntheticConfig, generate_sequence  # noqa: E402
from napari_diffseg.engine.device import precision_name  # noqa: E402
from napari_diffseg.engine.inference import (  # noqa: E402
    SegmentOptions,
    load_for_inference,
    review_options,
    segment,
)
from napari_diffseg.models import default_model_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("<!-- review-speed:start -->", "<!-- review-speed:end -->")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--frames", type=int, default=6, help="timed frames per row")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md",
                        help="markdown file whose review-speed section is rewritten")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)

    model, ckpt = load_for_inference(default_model_path(), "cpu")
    common = {"normalisation": ckpt.normalisation,
              "timesteps": int(ckpt.schedule.get("timesteps", 10))}
    choices = (("diffusion samples, 4 × 4", review_options("samples")),
               ("test-time augmentation, 8 views (default)", review_options("tta")),
               ("one pass, 1 × 1", SegmentOptions(steps=1, samples=1)))
    rows = []
    for size in args.sizes:
        frames = generate_sequence(SyntheticConfig(size=size, frames=args.frames + 1,
                                                   seed=9)).frames
        for name, options in choices:
            segment(model, frames[:1], options=options, **common)  # warm-up
            t0 = time.perf_counter()
            segment(model, frames[1:], options=options, **common)
            rate = args.frames / (time.perf_counter() - t0)
            rows.append((size, name, rate))
            print(f"{size:5d} px  {name:<42} {rate:6.2f} frames/s", flush=True)
    table = ("| size | review | frames/s |\n|---|---|---|\n"
             + "".join(f"| {s} | {n} | {r:.2f} |\n" for s, n, r in rows))
    body = (f"The bundled model on the CPU ({torch.get_num_threads()} threads, "
            f"{precision_name('cpu')} by the default precision), {args.frames} "
            f"generated frames per row after one warm-up frame.\n\n{table}")
    print()
    print(table)
    if not args.no_docs:
        update_section(args.docs, MARKERS,
                       "Speed of the review choices (`benchmarks/bench_review_speed.py`)",
                       body, "python benchmarks/bench_review_speed.py")


if __name__ == "__main__":
    main()
