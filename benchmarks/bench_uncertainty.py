#!/usr/bin/env python
"""Does the uncertainty mean something? Frame uncertainty vs frame error on test videos.

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/bench_uncertainty.py --preset cpu
    python benchmarks/bench_uncertainty.py --preset cpu --size 128 \
        --model benchmarks/results/models/quality_diff_full_every5_clean_s0.pt

Segments fully labelled generated test videos (never seen in training) with K diffusion samples
and compares, frame by frame, an uncertainty score with the error 1 − Dice (mean Dice over the
foreground classes present in the prediction or the reference):
* Pearson and Spearman correlation over all test frames, and the mean of the per-video Spearman
  correlations (the ranking a user sees inside one video);
* the share of the total error removed by correcting (replacing with the reference) the 10 %
  most uncertain frames, against 10 % random frames (mean ± std over 1,000 draws) and against
  the oracle (the 10 % frames with the largest error).
Scores: ``frame_score`` (the engine's: mean predictive entropy over the plausible foreground,
what the review ranks by), the mean mutual information over the same pixels, and the mean
predictive entropy over the whole frame.

Model: the bundled default model (``napari_diffseg/models/default.pt``) unless --model names
another checkpoint (e.g. one saved by ``bench_quality.py --save-models``). Prints a markdown
table, writes per-frame values to a JSON and rewrites the section between
<!-- uncertainty:start --> and <!-- uncertainty:end --> of docs/benchmarks.md (not for
--preset smoke unless --docs is given).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from docs_section import update_section
from scipy import stats

from napari_diffseg.data import SyntheticConfig, generate_sequence
from napari_diffseg.engine import SegmentOptions, segment
from napari_diffseg.engine.device import device_description
from napari_diffseg.engine.inference import load_for_inference
from napari_diffseg.engine.metrics import dice_iou
from napari_diffseg.models import default_model_path

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("<!-- uncertainty:start -->", "<!-- uncertainty:end -->")
TEST_SEED0 = 200_000  # other seeds than the quality benchmark's and the default model's
SCORES = {
    "frame_score": "frame score (mean entropy, plausible foreground)",
    "mi_foreground": "mean mutual information, plausible foreground",
    "entropy_frame": "mean entropy, whole frame",
}


@dataclass(frozen=True)
class Preset:
    videos: int
    frames: int
    size: int
    steps: int
    samples: int
    difficulty: tuple[float, float]  # difficulty spread linearly over the videos
    fraction: float = 0.1
    random_draws: int = 1000


PRESETS = {
    "smoke": Preset(2, 4, 64, 1, 2, (0.3, 0.7)),
    "cpu": Preset(8, 16, 256, 4, 4, (0.2, 0.8)),
    "gpu": Preset(24, 40, 512, 4, 8, (0.2, 0.8)),
}


def frame_error(pred: np.ndarray, target: np.ndarray, foreground: list[int]) -> float:
    """1 − mean Dice over the foreground classes present in pred or target (NaN if none)."""
    dice = [d for d, _ in dice_iou(pred, target, foreground).values() if not math.isnan(d)]
    return 1.0 - float(np.mean(dice)) if dice else float("nan")


def error_removed(error: np.ndarray, order: np.ndarray, k: int) -> float:
    """Share of the total error removed by correcting the frames order[:k]."""
    return float(error[order[:k]].sum() / error.sum()) if error.sum() > 0 else float("nan")


def analyse(frames: list[dict], p: Preset, seed: int = 0) -> dict:
    """Correlations and error removed, for every score, from per-frame records."""
    keep = [f for f in frames if not math.isnan(f["error"])]
    error = np.array([f["error"] for f in keep])
    videos = np.array([f["video"] for f in keep])
    n = len(keep)
    k = max(1, int(round(p.fraction * n)))
    rng = np.random.default_rng(seed)
    random = [error_removed(error, rng.permutation(n), k) for _ in range(p.random_draws)]
    out = {
        "frames": n,
        "k": k,
        "random": {"mean": float(np.mean(random)), "std": float(np.std(random))},
        "oracle": error_removed(error, np.argsort(-error, kind="stable"), k),
        "mean_error": float(error.mean()),
        "scores": {},
    }
    for name in SCORES:
        score = np.array([f[name] for f in keep])
        per_video = []
        for v in np.unique(videos):
            sel = videos == v
            if sel.sum() > 2 and np.ptp(score[sel]) > 0 and np.ptp(error[sel]) > 0:
                per_video.append(stats.spearmanr(score[sel], error[sel]).statistic)
        flat = np.ptp(score) == 0 or np.ptp(error) == 0
        out["scores"][name] = {
            "pearson": float("nan") if flat else float(stats.pearsonr(score, error).statistic),
            "spearman": float("nan") if flat else float(stats.spearmanr(score, error).statistic),
            "spearman_within_video": float(np.mean(per_video)) if per_video else float("nan"),
            "removed_top": error_removed(error, np.argsort(-score, kind="stable"), k),
        }
    return out


def table(result: dict) -> str:
    r = result
    pct = f"{r['k']} of {r['frames']} frames"
    lines = [
        "| score | Pearson r | Spearman ρ | Spearman ρ within a video (mean) | error removed: "
        f"top 10 % ({pct}) | random 10 % (mean ± std) | oracle 10 % |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in r["scores"].items():
        lines.append(
            f"| {SCORES[name]} | {s['pearson']:.3f} | {s['spearman']:.3f} | "
            f"{s['spearman_within_video']:.3f} | {s['removed_top']:.1%} | "
            f"{r['random']['mean']:.1%} ± {r['random']['std']:.1%} | {r['oracle']:.1%} |"
        )
    return "\n".join(lines)


def update_docs(path: Path, body: str, command: str) -> None:
    """Replace this benchmark's section of the docs (between its markers)."""
    update_section(
        path, MARKERS, "Uncertainty vs error (`benchmarks/bench_uncertainty.py`)", body, command
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--model", type=Path, help="checkpoint (default: the bundled model)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, help="override the preset's frame size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out",
        type=Path,
        help="JSON of per-frame values (default benchmarks/results/uncertainty_<preset>.json)",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        help="markdown file whose uncertainty section is "
        "rewritten (default docs/benchmarks.md; smoke: none)",
    )
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    p = PRESETS[args.preset]
    if args.size:
        p = Preset(**{**asdict(p), "size": args.size})
    model_path = args.model or default_model_path()
    model, ckpt = load_for_inference(model_path, args.device)
    device = next(model.parameters()).device
    classes = {int(k): v for k, v in ckpt.classes.items()}
    foreground = [k for k in classes if k != 0]
    opts = SegmentOptions(
        steps=p.steps, samples=p.samples, seed=0, batch_size=4, device=args.device
    )
    records: list[dict] = []
    t0 = time.perf_counter()
    for j in range(p.videos):
        lo, hi = p.difficulty
        difficulty = lo + (hi - lo) * j / max(p.videos - 1, 1)
        seq = generate_sequence(
            SyntheticConfig(
                size=p.size, frames=p.frames, seed=TEST_SEED0 + j, difficulty=difficulty
            ),
            name=f"test{j:03d}",
        )
        seg = segment(
            model,
            seq.frames,
            normalisation=ckpt.normalisation,
            timesteps=int(ckpt.schedule["timesteps"]),
            options=opts,
        )
        region = seg.probabilities[:, 0].astype(np.float32) < 0.9
        for i in range(p.frames):
            fg = region[i] if region[i].any() else np.ones_like(region[i])
            records.append(
                {
                    "video": j,
                    "frame": i,
                    "difficulty": difficulty,
                    "error": frame_error(seg.labels[i], seq.labels[i], foreground),
                    "frame_score": float(seg.frame_scores[i]),
                    "mi_foreground": float(seg.mutual_information[i][fg].mean()),
                    "entropy_frame": float(seg.entropy[i].mean()),
                }
            )
        print(
            f"[{time.perf_counter() - t0:6.0f} s] video {j + 1}/{p.videos}",
            file=sys.stderr,
            flush=True,
        )
    wall = time.perf_counter() - t0
    result = analyse(records, p)
    try:
        model_name = str(Path(model_path).resolve().relative_to(ROOT))
    except ValueError:
        model_name = str(model_path)
    command = "python " + " ".join(
        ["benchmarks/bench_uncertainty.py", *(argv if argv is not None else sys.argv[1:])]
    )
    meta = {
        "preset_name": args.preset,
        "preset": asdict(p),
        "model": model_name,
        "device": device_description(device),
        "torch": torch.__version__,
        "wall_seconds": wall,
        "command": command,
    }
    body = "\n".join(
        [
            f"model: `{model_name}`; preset `{args.preset}`: {p.videos} generated test videos of "
            f"{p.frames} frames at {p.size}×{p.size} px (seeds from {TEST_SEED0:,}; difficulty "
            f"{p.difficulty[0]}–{p.difficulty[1]} spread over the videos), every frame scored; "
            f"{p.steps} DDIM steps × {p.samples} samples; device: {meta['device']}; wall time "
            f"{wall / 60:.1f} min; mean frame error (1 − Dice) {result['mean_error']:.3f}.",
            "",
            table(result),
        ]
    )
    out = args.out or ROOT / "benchmarks" / "results" / f"uncertainty_{args.preset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "result": result, "frames": records}, indent=1))
    print(body)
    docs = (
        None
        if args.no_docs
        else (args.docs or (None if args.preset == "smoke" else ROOT / "docs" / "benchmarks.md"))
    )
    if docs is not None:
        update_docs(docs, body, command)


if __name__ == "__main__":
    main()
