#!/usr/bin/env python
"""Does the uncertainty find the errors? Every measure of the engine as a label-error detector.

    nice -n 15 python benchmarks/bench_uncertainty.py --preset cpu
    python benchmarks/bench_uncertainty.py --preset cpu --size 128 \
        --model benchmarks/results/models/quality_diff_full_every5_clean_s0.pt --no-docs

Segments fully labelled generated test videos (never seen in training) three ways: one pass
(1 DDIM step, 1 sample), K diffusion samples (the dock's default), and test-time augmentation
(V flipped / turned, contrast-jittered views, one step each). For every uncertainty measure
(single-pass softmax entropy; diffusion predictive entropy, mutual information, per-class sample
disagreement; TTA entropy and mutual information; expected-Dice frame scores; a combination)
it reports, against the label errors of the run the measure comes from (labels != reference):

* pixel level: AUROC and AUPRC of the map for the error pixels, UEO (the Dice between the
  thresholded map and the error mask at the best threshold), the ECE of the run's mean
  probabilities, and the share of the missed thin-structure pixels (guidewire, vessel parts
  under 3 px wide) among the 5 % most uncertain pixels;
* frame level: Spearman ρ between the frame score and 1 − Dice, and the share of all wrong
  pixels removed by correcting the top 5 / 10 / 20 % of frames by the score, against random
  frames and the oracle.
The definitions are in :mod:`napari_diffseg.engine.uncertainty_metrics`.

Model: the bundled default model unless --model names another checkpoint. Prints a markdown
table, writes the figures to a JSON and rewrites the section between
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

from napari_diffseg.data import SyntheticConfig, generate_sequence
from napari_diffseg.engine import SegmentOptions, segment
from napari_diffseg.engine.device import device_description
from napari_diffseg.engine.inference import load_for_inference
from napari_diffseg.engine.metrics import dice_iou
from napari_diffseg.engine.uncertainty_metrics import (
    expected_calibration_error,
    missed_flagged,
    pixel_auprc,
    pixel_auroc,
    spearman,
    thin_mask,
    triage,
    uncertainty_error_overlap,
)
from napari_diffseg.models import default_model_path

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("<!-- uncertainty:start -->", "<!-- uncertainty:end -->")
TEST_SEED0 = 200_000  # other seeds than the quality benchmark's and the default model's
FRACTIONS = (0.05, 0.10, 0.20)
THIN_SHARE = 0.05  # missed thin structures flagged among this share of the pixels


@dataclass(frozen=True)
class Preset:
    videos: int
    frames: int
    size: int
    steps: int
    samples: int
    views: int
    difficulty: tuple[float, float]  # difficulty spread linearly over the videos
    random_draws: int = 1000


PRESETS = {
    "smoke": Preset(2, 4, 64, 2, 2, 2, (0.3, 0.7), 50),
    "cpu": Preset(8, 16, 256, 4, 4, 8, (0.2, 0.8)),
    "gpu": Preset(24, 40, 512, 4, 8, 8, (0.2, 0.8)),
}

#: measure -> (run, pixel map, frame score, description); maps and scores are keys of a run's
#: arrays (see `collect`)
MEASURES = {
    "single_entropy": ("single", "entropy", "fg_entropy",
                       "single-pass softmax entropy (1 step × 1 sample)"),
    "diff_entropy": ("diffusion", "entropy", "fg_entropy", "diffusion predictive entropy"),
    "diff_mi": ("diffusion", "mutual_information", "fg_mutual_information",
                "diffusion mutual information"),
    "diff_disagreement": ("diffusion", "disagreement", "fg_disagreement",
                          "per-class sample disagreement (largest class std)"),
    "diff_expected_dice": ("diffusion", "entropy", "expected_dice",
                           "diffusion expected-Dice frame score (map: entropy)"),
    "tta_entropy": ("tta", "entropy", "fg_entropy", "TTA predictive entropy"),
    "tta_mi": ("tta", "mutual_information", "fg_mutual_information", "TTA mutual information"),
    "tta_expected_dice": ("tta", "entropy", "expected_dice",
                          "TTA expected-Dice frame score (map: TTA entropy)"),
    "combined": ("diffusion", "combined", "combined",
                 "combination: z(diffusion entropy) + z(TTA entropy); frames: "
                 "z(expected Dice, diffusion) + z(expected Dice, TTA)"),
}


def frame_error(pred: np.ndarray, target: np.ndarray, foreground: list[int]) -> float:
    """1 − mean Dice over the foreground classes present in pred or target (NaN if none)."""
    dice = [d for d, _ in dice_iou(pred, target, foreground).values() if not math.isnan(d)]
    return 1.0 - float(np.mean(dice)) if dice else float("nan")


def _foreground_mean(values: np.ndarray, background: np.ndarray) -> np.ndarray:
    """(T,) mean of values (T, H, W) over each frame's plausible foreground (background
    probability < 0.9; the whole frame if there is none), as the engine's frame score."""
    region = background < 0.9
    out = np.empty(values.shape[0], dtype=np.float64)
    for i in range(values.shape[0]):
        sel = region[i] if region[i].any() else np.ones_like(region[i])
        out[i] = float(values[i][sel].mean())
    return out


def collect(seg, reference: np.ndarray, foreground: list[int]) -> dict:
    """One run's arrays: maps (T, H, W), frame scores (T,), errors, probabilities."""
    background = seg.probabilities[:, 0].astype(np.float32)
    run = {
        "labels": seg.labels,
        "probabilities": seg.probabilities,
        "entropy": seg.entropy,
        "mutual_information": seg.mutual_information,
        "expected_dice": seg.frame_scores.astype(np.float64),  # frame_score="expected_dice"
        "dice_error": np.array([frame_error(p, t, foreground)
                                for p, t in zip(seg.labels, reference, strict=True)]),
        "wrong_pixels": (seg.labels != reference).sum(axis=(1, 2)).astype(np.float64),
    }
    if seg.class_disagreement is not None:
        run["disagreement"] = seg.class_disagreement.astype(np.float32).max(axis=1)
    for name in ("entropy", "mutual_information", "disagreement"):
        if name in run:
            run[f"fg_{name}"] = _foreground_mean(run[name], background)
    return run


def _concat(runs: list[dict]) -> dict:
    return {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}


def _z(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else x - x.mean()


def analyse(runs: dict[str, dict], reference: np.ndarray, foreground_thin: list[int],
            p: Preset) -> dict:
    """Every measure's figures (see the module docstring)."""
    runs = dict(runs)
    runs["diffusion"] = dict(runs["diffusion"])
    d, t = runs["diffusion"], runs["tta"]
    d["combined"] = (d["entropy"] / max(float(d["entropy"].std()), 1e-12)
                     + t["entropy"] / max(float(t["entropy"].std()), 1e-12)).astype(np.float32)
    d["combined_frame"] = _z(d["expected_dice"]) + _z(t["expected_dice"])
    thin = thin_mask(reference, foreground_thin)
    out = {"runs": {}, "measures": {}}
    for name, run in runs.items():
        valid = ~np.isnan(run["dice_error"])
        out["runs"][name] = {
            "mean_dice": float(1 - np.nanmean(run["dice_error"])),
            "pixel_error_rate": float((run["labels"] != reference).mean()),
            "ece": expected_calibration_error(run["probabilities"], reference),
            "frames_scored": int(valid.sum()),
        }
    for name, (run_name, map_key, score_key, _) in MEASURES.items():
        run = runs[run_name]
        if map_key not in run:
            continue
        error = run["labels"] != reference
        score_map = run[map_key]
        frame_score = run["combined_frame" if score_key == "combined" else score_key]
        ueo, _ = uncertainty_error_overlap(score_map, error)
        missed_thin = thin & error
        tri = triage(frame_score, run["wrong_pixels"], FRACTIONS, draws=p.random_draws)
        err_px = error.sum()
        out["measures"][name] = {
            "run": run_name,
            "auroc": pixel_auroc(score_map, error),
            "auprc": pixel_auprc(score_map, error),
            "error_rate": float(err_px / error.size),
            "ueo": ueo,
            "ece": out["runs"][run_name]["ece"],
            "spearman": spearman(frame_score, run["dice_error"]),
            "thin_flagged": missed_flagged(score_map, missed_thin, THIN_SHARE),
            "triage": [asdict(r) for r in tri],
            "mi_share_on_errors": (float(run["mutual_information"][error].mean()
                                         / max(run["entropy"][error].mean(), 1e-12))
                                   if err_px else float("nan")),
        }
    return out


def table(result: dict) -> str:
    lines = [
        "| measure | run | pixel AUROC | AUPRC (error rate) | UEO | ECE | Spearman ρ "
        "(frame score, 1 − Dice) | error removed, top 5 / 10 / 20 % frames | "
        "missed thin px flagged (top 5 % px) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in result["measures"].items():
        tri = " / ".join(f"{r['by_score']:.0%}" for r in m["triage"])
        lines.append(
            f"| {MEASURES[name][3]} | {m['run']} | {m['auroc']:.3f} | {m['auprc']:.3f} "
            f"({m['error_rate']:.1%}) | {m['ueo']:.3f} | {m['ece']:.3f} | {m['spearman']:.3f} | "
            f"{tri} | {m['thin_flagged']:.0%} |"
        )
    first = next(iter(result["measures"].values()))["triage"]
    rand = " / ".join(f"{r['random_mean']:.0%} ± {r['random_std']:.0%}" for r in first)
    lines.append(f"| *random frames* (mean ± std of 1,000 draws) | | | | | | | {rand} | |")
    for name, m in result["measures"].items():
        if name in ("single_entropy", "diff_entropy", "tta_entropy"):
            oracle = " / ".join(f"{r['oracle']:.0%}" for r in m["triage"])
            lines.append(f"| *oracle frames* ({m['run']} run) | | | | | | | {oracle} | |")
    runs = "; ".join(
        f"{k}: mean Dice {v['mean_dice']:.3f}, {v['pixel_error_rate']:.2%} pixels wrong"
        for k, v in result["runs"].items()
    )
    lines += ["", f"Labels of each run: {runs}."]
    mi = {k: result["measures"][k]["mi_share_on_errors"] for k in ("diff_mi", "tta_mi")
          if k in result["measures"]}
    lines.append("Mutual information as a share of the predictive entropy on the error pixels: "
                 + ", ".join(f"{k.split('_')[0]} {v:.1%}" for k, v in mi.items()) + ".")
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
    parser.add_argument("--videos", type=int, help="override the preset's number of videos")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path,
                        help="JSON of the figures (default benchmarks/results/"
                        "uncertainty_<preset>.json)")
    parser.add_argument("--docs", type=Path,
                        help="markdown file whose uncertainty section is rewritten (default "
                        "docs/benchmarks.md; smoke: none)")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    p = PRESETS[args.preset]
    if args.size or args.videos:
        p = Preset(**{**asdict(p), "size": args.size or p.size,
                      "videos": args.videos or p.videos})
    model_path = args.model or default_model_path()
    model, ckpt = load_for_inference(model_path, args.device)
    device = next(model.parameters()).device
    classes = {int(k): v for k, v in ckpt.classes.items()}
    foreground = [k for k in classes if k != 0]
    thin_classes = [k for k, v in classes.items() if v in ("vessel", "guidewire")]
    timesteps = int(ckpt.schedule["timesteps"])
    common = {"seed": 0, "device": args.device, "class_disagreement": True,
              "frame_score": "expected_dice"}
    options = {
        "single": SegmentOptions(steps=1, samples=1, **common),
        "diffusion": SegmentOptions(steps=p.steps, samples=p.samples, **common),
        "tta": SegmentOptions(tta=p.views, **common),
    }
    per_run: dict[str, list[dict]] = {k: [] for k in options}
    references = []
    seconds = dict.fromkeys(options, 0.0)
    t0 = time.perf_counter()
    for j in range(p.videos):
        lo, hi = p.difficulty
        difficulty = lo + (hi - lo) * j / max(p.videos - 1, 1)
        seq = generate_sequence(
            SyntheticConfig(size=p.size, frames=p.frames, seed=TEST_SEED0 + j,
                            difficulty=difficulty),
            name=f"test{j:03d}",
        )
        references.append(seq.labels)
        for name, opts in options.items():
            ts = time.perf_counter()
            seg = segment(model, seq.frames, normalisation=ckpt.normalisation,
                          timesteps=timesteps, options=opts)
            seconds[name] += time.perf_counter() - ts
            per_run[name].append(collect(seg, seq.labels, foreground))
        print(f"[{time.perf_counter() - t0:6.0f} s] video {j + 1}/{p.videos}", file=sys.stderr,
              flush=True)
    reference = np.concatenate(references)
    runs = {k: _concat(v) for k, v in per_run.items()}
    result = analyse(runs, reference, thin_classes, p)
    wall = time.perf_counter() - t0
    n_frames = p.videos * p.frames
    for name in options:
        result["runs"][name]["s_per_frame"] = seconds[name] / n_frames
    try:
        model_name = str(Path(model_path).resolve().relative_to(ROOT))
    except ValueError:
        model_name = str(model_path)
    command = "python " + " ".join(
        ["benchmarks/bench_uncertainty.py", *(argv if argv is not None else sys.argv[1:])]
    )
    meta = {"preset_name": args.preset, "preset": asdict(p), "model": model_name,
            "device": device_description(device), "torch": torch.__version__,
            "wall_seconds": wall, "command": command}
    speeds = ", ".join(f"{k} {v['s_per_frame']:.2f} s/frame" for k, v in result["runs"].items())
    body = "\n".join([
        f"model: `{model_name}`; preset `{args.preset}`: {p.videos} generated test videos of "
        f"{p.frames} frames at {p.size}×{p.size} px (seeds from {TEST_SEED0:,}; difficulty "
        f"{p.difficulty[0]}–{p.difficulty[1]} spread over the videos), {n_frames} frames, "
        f"every pixel scored; runs: single = 1 step × 1 sample, diffusion = {p.steps} DDIM "
        f"steps × {p.samples} samples, tta = {p.views} views × 1 step; each measure against "
        f"the label errors of its own run; frame triage removes wrong pixels; device: "
        f"{meta['device']} ({speeds}); wall time {wall / 60:.1f} min.",
        "",
        table(result),
    ])
    out = args.out or ROOT / "benchmarks" / "results" / f"uncertainty_{args.preset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "result": result}, indent=1))
    print(body)
    docs = None if args.no_docs else (
        args.docs or (None if args.preset == "smoke" else ROOT / "docs" / "benchmarks.md"))
    if docs is not None:
        update_docs(docs, body, command)


if __name__ == "__main__":
    main()
