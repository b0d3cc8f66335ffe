#!/usr/bin/env python
"""Segmentation quality: U-Net, mean teacher and the diffusion method, clean and noisy labels.

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/bench_quality.py --preset cpu

Methods (same data, crops, batch, iterations and seeds for all):
  a  unet          plain U-Net on the diffusion model's image encoder, labelled frames only
  b  mean_teacher  (a) + EMA-teacher pseudo-labels (confidence >= 0.8) on unlabelled frames
  c  diff_sup      diffusion model, supervised only (TrainOptions mode="supervised")
  d  diff_pseudo   (c) + EMA-teacher pseudo-labels (mode="semi", prototype weights 0)
  e  diff_full     (d) + prototype contrastive consistency (TrainOptions defaults)
Settings: training sequences labelled on every 5th frame (MOSXAV's protocol) or on one frame
per sequence; labels clean or with 30 % of the labelled masks corrupted
(napari_diffseg.data.corrupt_labels). Test: fully labelled generated sequences never seen in
training, every frame scored (per-class and mean Dice, IoU, HD95).

Prints markdown tables, writes every run to a JSON (--out) as it finishes (--resume skips the
runs already there), and rewrites the section between <!-- quality:start --> and
<!-- quality:end --> of docs/benchmarks.md (not for --preset smoke unless --docs is given).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import UNetOptions, predict_unet, train_unet  # noqa: E402
from docs_section import update_section  # noqa: E402

from napari_diffseg.data import (  # noqa: E402
    DEFAULT_CLASSES,
    SyntheticConfig,
    corrupt_labels,
    generate_sequence,
)
from napari_diffseg.data.dataset import sequence_seeds  # noqa: E402
from napari_diffseg.data.sequences import (  # noqa: E402
    DEFAULT_NORMALISATION,
    SparseDataset,
    normalise_frames,
)
from napari_diffseg.engine import (  # noqa: E402
    SegmentOptions,
    TrainOptions,
    save_checkpoint,
    segment,
    train,
)
from napari_diffseg.engine.metrics import evaluate_frames  # noqa: E402
from napari_diffseg.model import ModelConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = {
    "unet": "(a) U-Net, supervised",
    "mean_teacher": "(b) U-Net + mean teacher",
    "diff_sup": "(c) diffusion, supervised",
    "diff_pseudo": "(d) diffusion + EMA pseudo-labels",
    "diff_full": "(e) diffusion + pseudo-labels + prototypes (full)",
}
SETTINGS = {"every5": "labels on every 5th frame", "one": "one labelled frame per sequence"}
NOISE = {"clean": "clean labels", "noisy": "30 % of labelled masks corrupted"}
FOREGROUND = [name for k, name in DEFAULT_CLASSES.items() if k != 0]
TRAIN_SEED, TEST_SEED0 = 2025, 100_000
MARKERS = ("<!-- quality:start -->", "<!-- quality:end -->")


@dataclass(frozen=True)
class Preset:
    size: int  # frames are size x size px
    frames: int  # frames per sequence (train and test)
    train_sequences: int
    test_sequences: int
    iterations: int
    batch_size: int  # labelled crops per iteration (+ as many unlabelled in semi modes)
    crop_size: int
    width: int  # image encoder width (the shared backbone)
    label_width: int
    label_blocks: int
    seeds: tuple[int, ...]
    steps: int  # DDIM steps at evaluation
    samples: int  # diffusion samples per frame at evaluation
    noise_fraction: float = 0.3
    difficulty: float = 0.5
    # the network layout: 0.1's (full-resolution encoder, denoiser on 2x2 folded maps), what
    # the published tables were measured with. The fast layout of the bundled model (2, 4)
    # collapsed on these 128 px frames and 64 px crops at 200 iterations (see
    # docs/benchmarks.md); --encoder-stride 2 --denoiser-stride 4 runs it
    encoder_stride: int = 1
    denoiser_stride: int = 2


PRESETS = {
    "smoke": Preset(64, 10, 2, 1, 2, 2, 32, 8, 8, 1, (0,), 1, 1),
    "cpu": Preset(128, 20, 8, 4, 200, 4, 64, 16, 24, 3, (0, 1, 2), 2, 2),
    "gpu": Preset(256, 40, 30, 12, 4000, 8, 128, 32, 32, 4, (0, 1, 2), 4, 4),
}


# -- data ------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def _train_sequences(size: int, frames: int, count: int, difficulty: float):
    return [
        generate_sequence(
            SyntheticConfig(size=size, frames=frames, seed=s, difficulty=difficulty),
            name=f"train{i:03d}",
        )
        for i, s in enumerate(sequence_seeds(TRAIN_SEED, count))
    ]


@lru_cache(maxsize=4)
def test_sequences(size: int, frames: int, count: int, difficulty: float):
    """Fully labelled held-out sequences (seeds from 100,000; training uses other seeds)."""
    return [
        generate_sequence(
            SyntheticConfig(size=size, frames=frames, seed=TEST_SEED0 + j, difficulty=difficulty),
            name=f"test{j:03d}",
        )
        for j in range(count)
    ]


def labelled_indices(frames: int, setting: str) -> list[int]:
    """every5: frames 0, 5, 10, ... (MOSXAV); one: the every-5th frame nearest the middle."""
    every5 = list(range(0, frames, 5))
    if setting == "every5":
        return every5
    return [min(every5, key=lambda i: abs(i - frames // 2))]


def training_data(p: Preset, setting: str, noise: str, seed: int) -> tuple[SparseDataset, dict]:
    """Labelled and unlabelled frames of the training sequences, labels corrupted for
    ``noise == "noisy"`` (30 % of the labelled masks; the draw depends on the seed)."""
    data = SparseDataset(classes=dict(DEFAULT_CLASSES), source="synthetic generator")
    for seq in _train_sequences(p.size, p.frames, p.train_sequences, p.difficulty):
        frames = normalise_frames(seq.frames, DEFAULT_NORMALISATION)
        keep = set(labelled_indices(p.frames, setting))
        for i in range(p.frames):
            if i in keep:
                data.images.append(frames[i])
                data.labels.append(seq.labels[i].astype(np.uint8))
            else:
                data.unlabelled.append(frames[i])
        data.sequences.append(seq.name)
    info = {"labelled": len(data.images), "unlabelled": len(data.unlabelled), "corrupted": []}
    if noise == "noisy":
        rng = np.random.default_rng([seed, 7])
        data.labels, info["corrupted"] = corrupt_labels(
            data.labels, p.noise_fraction, rng, num_classes=len(DEFAULT_CLASSES)
        )
    return data, info


# -- one run ---------------------------------------------------------------------------------
def model_config(p: Preset) -> ModelConfig:
    return ModelConfig(
        num_classes=len(DEFAULT_CLASSES),
        width=p.width,
        depth=3,
        label_width=p.label_width,
        label_blocks=p.label_blocks,
        encoder_stride=p.encoder_stride,
        denoiser_stride=p.denoiser_stride,
        detail_width=0,
    )


def diffusion_options(method: str, p: Preset, seed: int, device: str) -> TrainOptions:
    common = {
        "iterations": p.iterations,
        "batch_size": p.batch_size,
        "crop_size": p.crop_size,
        "seed": seed,
        "device": device,
        "val_every": 0,
    }
    if method == "diff_sup":
        return TrainOptions(mode="supervised", **common)
    if method == "diff_pseudo":
        return TrainOptions(
            mode="semi", prototype_weight=0.0, prototype_consistency_weight=0.0, **common
        )
    return TrainOptions(mode="semi", **common)  # the full method: every default


def run_one(job: dict) -> dict:
    """Train one method on one setting / noise / seed, evaluate it on the test sequences."""
    torch.set_num_threads(job.get("threads", 1))
    p = Preset(**{**job["preset"], "seeds": tuple(job["preset"]["seeds"])})
    method, setting, noise, seed = job["method"], job["setting"], job["noise"], job["seed"]
    device = job["device"]
    data, info = training_data(p, setting, noise, seed)
    tests = test_sequences(p.size, p.frames, p.test_sequences, p.difficulty)
    t0 = time.perf_counter()
    if method in ("unet", "mean_teacher"):
        result = train_unet(
            data,
            UNetOptions(
                mode="supervised" if method == "unet" else "mean_teacher",
                iterations=p.iterations,
                batch_size=p.batch_size,
                crop_size=p.crop_size,
                seed=seed,
                device=device,
            ),
            model_config(p),
        )
        train_s = time.perf_counter() - t0
        params = sum(x.numel() for x in result.model.parameters())
        final_loss = result.losses[-1]["total"] if result.losses else float("nan")
        t1 = time.perf_counter()
        preds = [
            predict_unet(result.model, normalise_frames(s.frames, DEFAULT_NORMALISATION)).argmax(
                axis=1
            )
            for s in tests
        ]
    else:
        result = train(
            data, diffusion_options(method, p, seed, device), model_config=model_config(p)
        )
        train_s = time.perf_counter() - t0
        params = sum(x.numel() for x in result.model.parameters())
        final_loss = result.checkpoint.metrics.get("final_loss", float("nan"))
        ckpt = result.checkpoint
        if job.get("save_dir") and method == "diff_full":
            ckpt.training_state = None
            save_checkpoint(
                Path(job["save_dir"]) / f"quality_{method}_{setting}_{noise}_s{seed}.pt", ckpt
            )
        t1 = time.perf_counter()
        opts = SegmentOptions(steps=p.steps, samples=p.samples, seed=0, batch_size=8, device=device)
        preds = [
            segment(
                result.model,
                s.frames,
                normalisation=ckpt.normalisation,
                timesteps=int(ckpt.schedule["timesteps"]),
                options=opts,
            ).labels
            for s in tests
        ]
    predict_s = time.perf_counter() - t1
    report = evaluate_frames(
        np.concatenate(preds), np.concatenate([s.labels for s in tests]), DEFAULT_CLASSES
    )
    return {
        "method": method,
        "setting": setting,
        "noise": noise,
        "seed": seed,
        "report": report.to_dict(),
        "train_seconds": train_s,
        "predict_seconds": predict_s,
        "parameters": params,
        "final_loss": float(final_loss),
        **info,
    }


def run_key(r: dict) -> str:
    return f"{r['method']}/{r['setting']}/{r['noise']}/{r['seed']}"


# -- tables ----------------------------------------------------------------------------------
def _stat(values: list[float | None]) -> tuple[float, float, int]:
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return float("nan"), float("nan"), 0
    return float(np.mean(v)), float(np.std(v)), len(v)


def _fmt(values: list[float | None], digits: int = 3) -> str:
    m, s, n = _stat(values)
    return "–" if n == 0 else f"{m:.{digits}f} ± {s:.{digits}f}"


def _metric(r: dict, cls: str | None, key: str) -> float | None:
    rep = r["report"]
    return rep["mean"][key] if cls is None else rep["per_class"].get(cls, {}).get(key)


_NAMES = {"dice": "Dice", "iou": "IoU", "hd95": "HD95"}


def quality_table(runs: list[dict], setting: str, noise: str, methods: list[str]) -> str:
    cols = [(c, k) for c in [*FOREGROUND, None] for k in ("dice", "iou", "hd95")]
    head = ["method", "seeds"] + [f"{c or '**mean**'} {_NAMES[k]}" for c, k in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        rs = [r for r in runs if (r["method"], r["setting"], r["noise"]) == (m, setting, noise)]
        if not rs:
            continue
        cells = [METHODS[m], str(len(rs))]
        for c, k in cols:
            text = _fmt([_metric(r, c, k) for r in rs], 1 if k == "hd95" else 3)
            cells.append(f"**{text}**" if c is None and k == "dice" else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def noise_table(runs: list[dict], settings: list[str], methods: list[str]) -> str:
    """Mean Dice clean vs noisy and the drop (paired by seed: mean ± std of the differences)."""
    head = ["method"]
    for s in settings:
        head += [f"{s}: clean", f"{s}: noisy", f"{s}: drop"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in methods:
        cells = [METHODS[m]]
        for s in settings:
            by = {
                n: {
                    r["seed"]: _metric(r, None, "dice")
                    for r in runs
                    if (r["method"], r["setting"], r["noise"]) == (m, s, n)
                }
                for n in NOISE
            }
            paired = [
                by["clean"][k] - by["noisy"][k]
                for k in by["clean"]
                if k in by["noisy"] and by["clean"][k] is not None and by["noisy"][k] is not None
            ]
            cells += [
                _fmt(list(by["clean"].values())),
                _fmt(list(by["noisy"].values())),
                _fmt(paired),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def time_table(runs: list[dict], methods: list[str]) -> str:
    lines = ["| method | parameters | train s/run | predict s/run |", "|---|---|---|---|"]
    for m in methods:
        rs = [r for r in runs if r["method"] == m]
        if rs:
            lines.append(
                f"| {METHODS[m]} | {rs[0]['parameters']:,} | "
                f"{np.mean([r['train_seconds'] for r in rs]):.1f} | "
                f"{np.mean([r['predict_seconds'] for r in rs]):.1f} |"
            )
    return "\n".join(lines)


def _strides(meta: dict) -> str:
    a = meta.get("architecture")
    if not a:
        return ""
    return (f" (encoder stride {a['encoder_stride']}, denoiser stride {a['denoiser_stride']}, "
            f"detail branch width {a['detail_width']})")


def report_markdown(results: dict, methods, settings, noises) -> str:
    runs = list(results["runs"].values())
    meta = results["meta"]
    p = meta["preset"]
    expected = len(methods) * len(settings) * len(noises) * len(p["seeds"])
    parts = [
        f"preset `{meta['preset_name']}`: {p['train_sequences']} training sequences and "
        f"{p['test_sequences']} fully labelled test sequences of {p['frames']} frames at "
        f"{p['size']}×{p['size']} px (difficulty {p['difficulty']}); {p['iterations']} "
        f"iterations of {p['batch_size']} labelled (+ {p['batch_size']} unlabelled) crops of "
        f"{p['crop_size']} px; encoder width {p['width']}, depth 3 (shared backbone), denoiser "
        f"width {p['label_width']} × {p['label_blocks']} blocks{_strides(meta)}; evaluation "
        f"{p['steps']} DDIM steps × {p['samples']} samples; {p['noise_fraction']:.0%} of "
        f"labelled masks corrupted in the noisy rows; seeds {', '.join(map(str, p['seeds']))}.",
        "",
        f"device: {meta['device']}; torch {meta['torch']}; {meta['workers']} worker process(es) "
        f"× 1 thread; wall time {meta.get('wall_seconds', float('nan')) / 60:.1f} min; "
        f"{len(runs)} of {expected} runs"
        + ("" if len(runs) >= expected else " (**partial: the grid did not finish**)")
        + ".",
    ]
    for s in settings:
        for n in noises:
            parts += [
                "",
                f"**{SETTINGS[s]}, {NOISE[n]}** (test frames: mean ± std over seeds; HD95 in px)",
                "",
                quality_table(runs, s, n, methods),
            ]
    if "clean" in noises and "noisy" in noises:
        parts += [
            "",
            "**Mean Dice, clean vs noisy labels** (drop = clean − noisy, paired by seed)",
            "",
            noise_table(runs, settings, methods),
        ]
    parts += ["", "**Cost per run**", "", time_table(runs, methods)]
    return "\n".join(parts)


def update_docs(path: Path, body: str, command: str) -> None:
    """Replace this benchmark's section of the docs (between its markers)."""
    update_section(
        path, MARKERS, "Segmentation quality (`benchmarks/bench_quality.py`)", body, command
    )


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--noise", nargs="+", choices=list(NOISE), default=list(NOISE))
    parser.add_argument("--seeds", type=int, nargs="+", help="override the preset's seeds")
    parser.add_argument("--iterations", type=int, help="override the preset's iterations")
    parser.add_argument("--workers", type=int, default=1, help="runs in parallel (1 thread each)")
    parser.add_argument("--encoder-stride", type=int, help="override the preset's layout")
    parser.add_argument("--denoiser-stride", type=int, help="override the preset's layout")
    parser.add_argument(
        "--out",
        type=Path,
        help="JSON of every run (default benchmarks/results/quality_<preset>.json)",
    )
    parser.add_argument("--resume", action="store_true", help="skip runs already in --out")
    parser.add_argument(
        "--docs",
        type=Path,
        help="markdown file whose quality section is "
        "rewritten (default docs/benchmarks.md; smoke: none)",
    )
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--save-models", type=Path, help="save the full method's checkpoints")
    args = parser.parse_args(argv)

    preset = PRESETS[args.preset]
    if args.seeds:
        preset = Preset(**{**asdict(preset), "seeds": tuple(args.seeds)})
    if args.iterations:
        preset = Preset(**{**asdict(preset), "iterations": args.iterations})
    for name in ("encoder_stride", "denoiser_stride"):
        if getattr(args, name):
            preset = Preset(**{**asdict(preset), name: getattr(args, name)})
    out = args.out or ROOT / "benchmarks" / "results" / f"quality_{args.preset}.json"
    docs = (
        None
        if args.no_docs
        else (args.docs or (None if args.preset == "smoke" else ROOT / "docs" / "benchmarks.md"))
    )
    if args.save_models:
        args.save_models.mkdir(parents=True, exist_ok=True)
    from napari_diffseg.engine.device import device_description, resolve_device

    results = {"runs": {}}
    if args.resume and out.exists():
        results = json.loads(out.read_text())
    results["meta"] = {
        "preset_name": args.preset,
        "preset": asdict(preset),
        "architecture": model_config(preset).to_dict(),
        "workers": args.workers,
        "device": device_description(resolve_device(args.device)),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "os_cpus": os.cpu_count(),
        "command": "python "
        + " ".join(
            [f"benchmarks/{Path(sys.argv[0]).name}", *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    jobs = [
        {
            "method": m,
            "setting": s,
            "noise": n,
            "seed": seed,
            "preset": asdict(preset),
            "device": args.device,
            "save_dir": str(args.save_models or ""),
        }
        for seed in preset.seeds
        for s in args.settings
        for n in args.noise
        for m in args.methods
    ]
    jobs = [j for j in jobs if run_key(j) not in results["runs"]]
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    wall0 = float(results.get("wall_seconds", 0.0))  # earlier, resumed part

    def done(r: dict) -> None:
        results["runs"][run_key(r)] = r
        results["meta"]["wall_seconds"] = wall0 + time.perf_counter() - t0
        results["wall_seconds"] = results["meta"]["wall_seconds"]
        out.write_text(json.dumps(results, indent=1))
        print(
            f"[{time.perf_counter() - t0:7.0f} s] {run_key(r)}: mean Dice "
            f"{r['report']['mean']['dice']} (train {r['train_seconds']:.0f} s)",
            file=sys.stderr,
            flush=True,
        )

    torch.set_num_threads(1)
    if args.workers <= 1:
        for job in jobs:
            done(run_one(job))
    else:
        with ProcessPoolExecutor(args.workers) as pool:
            for fut in as_completed([pool.submit(run_one, j) for j in jobs]):
                done(fut.result())
    results["meta"]["wall_seconds"] = wall0 + time.perf_counter() - t0
    out.write_text(json.dumps(results, indent=1))
    body = report_markdown(results, args.methods, args.settings, args.noise)
    print(body)
    if docs is not None:
        update_docs(docs, body, results["meta"]["command"])


if __name__ == "__main__":
    main()
