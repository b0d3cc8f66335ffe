#!/usr/bin/env python
"""Speed and memory of the engine: whole `segment` runs over frame sizes x DDIM steps x samples,
against the naive reference, plus training iterations per second.

    python benchmarks/bench_inference.py                       # CPU: 256/512/1024 x 1/4/8 x 1/4/8
    python benchmarks/bench_inference.py --device cuda --frames 64 --naive-frames 2

Each row times `napari_diffseg.engine.segment` on generated frames (one warm-up frame excluded)
and, in the same run, the naive reference on the first frames of the same video: the whole
network (image encoder included) rerun for every DDIM step of every sample, on full-resolution
label maps, one sample at a time. Both start from the same noise, so their labels must agree
(the table shows the share of equal pixels and the largest probability difference). Peak RSS is
the process's resident memory while the row ran (sampled every 2 ms); on CUDA also the peak
allocated GPU memory. Prints markdown tables and rewrites the `speed` section of
docs/benchmarks.md (unless --no-docs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import update_section  # noqa: E402

from napari_diffseg.data import SyntheticConfig, generate_sequence  # noqa: E402
from napari_diffseg.data.sequences import (  # noqa: E402
    apply_normalisation,
    context_stack,
    normalisation_range,
)
from napari_diffseg.engine import SegmentOptions, segment  # noqa: E402
from napari_diffseg.engine.defaults import PRECISIONS  # noqa: E402
from napari_diffseg.engine.device import device_description, precision_name  # noqa: E402
from napari_diffseg.engine.inference import (  # noqa: E402
    default_batch_size,
    load_for_inference,
    pad_to_multiple,
    uncertainty_from_samples,
)
from napari_diffseg.model import DDIMSampler, NoiseSchedule  # noqa: E402
from napari_diffseg.models import default_model_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MARKERS = ("<!-- speed:start -->", "<!-- speed:end -->")
TRAIN_HEADER = ("| training | mode | crops per iteration | it/s | peak RSS MB |\n"
                "|---|---|---|---|---|")
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_mb() -> float:
    """Resident memory of this process in MB (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE / 1e6
    except OSError:
        return float("nan")


class PeakRSS:
    """Samples the resident memory every 2 ms while the `with` block runs; `.peak` in MB."""

    def __enter__(self) -> PeakRSS:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def naive_segment(model, images: np.ndarray, *, timesteps: int, options: SegmentOptions):
    """The reference design: for every sample of every frame and every DDIM step, the whole
    network (encoder + denoiser) on full-resolution label maps; fp32. images: (N, H, W)
    normalised. Draws the same noise as the engine (one folded draw per frame from a
    generator seeded like the engine's), so the results are comparable pixel for pixel.
    Returns (mean probabilities (N, C, H, W), entropy (N, H, W))."""
    device = next(model.parameters()).device
    sampler = DDIMSampler(NoiseSchedule(timesteps), steps=options.steps, eta=0.0)
    generator = torch.Generator(device=device).manual_seed(options.seed)
    k = options.samples
    probs_out, ent_out = [], []
    for image in images:
        x = torch.from_numpy(image).to(device)  # (H, W), or (1 + 2c, H, W) with context
        x_img, (h, w) = pad_to_multiple(x[None, None] if x.ndim == 2 else x[None],
                                        model.config.multiple)
        s, c = model.config.denoiser_stride, model.config.num_classes
        hp, wp = x_img.shape[-2:]
        noise = torch.randn((k, c * s * s, hp // s, wp // s), generator=generator,
                            device=device)
        samples = []
        for j in range(k):
            x = model.unfold(noise[j : j + 1])
            for t, t_prev in sampler.timesteps:
                t_cont = torch.full((1,), t / sampler.schedule.timesteps, device=device)
                logits, _ = model(x_img, x, t_cont)  # encoder rerun every step and sample
                p = logits.float().softmax(dim=1)
                x = sampler.step(x, p * 2 - 1, t, t_prev)
            samples.append(p)
        stacked = torch.cat(samples)[None, ..., :h, :w]
        mean, entropy, _ = uncertainty_from_samples(stacked)
        probs_out.append(mean.cpu().numpy())
        ent_out.append(entropy.cpu().numpy())
    return np.concatenate(probs_out), np.concatenate(ent_out)


def speed_rows(model, ckpt, args, device) -> list[dict]:
    timesteps = int(ckpt.schedule["timesteps"])
    rows = []
    for size in args.sizes:
        seq = generate_sequence(SyntheticConfig(size=size, frames=args.frames + 1, seed=7))
        frames = seq.frames
        lo, hi = normalisation_range(frames[1:], ckpt.normalisation)
        for steps in args.steps:
            for samples in args.samples:
                opts = SegmentOptions(steps=steps, samples=samples, batch_size=args.batch_size,
                                      channels_last=args.channels_last, compile=args.compile,
                                      min_component=args.min_component,
                                      precision=args.precision)
                common = {"normalisation": ckpt.normalisation, "timesteps": timesteps,
                          "options": opts}
                segment(model, frames[:1], **common)  # warm-up
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                sync(device)
                with PeakRSS() as rss:
                    t0 = time.perf_counter()
                    seg = segment(model, frames[1:], **common)
                    sync(device)
                    fast = (time.perf_counter() - t0) / args.frames
                row = {"size": size, "steps": steps, "samples": samples, "s_per_frame": fast,
                       "fps": 1 / fast, "peak_rss_mb": rss.peak}
                if device.type == "cuda":
                    row["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 1e6
                if args.naive_frames:
                    n = min(args.naive_frames, args.frames)
                    # the frames and, for a model with temporal context, their neighbours
                    # as segment() stacks them for the video frames[1:]
                    images = context_stack(
                        apply_normalisation(frames[1:], lo, hi).astype(np.float32),
                        model.config.context_frames, np.arange(n))
                    sync(device)
                    t0 = time.perf_counter()
                    probs, _ = naive_segment(model, images, timesteps=timesteps, options=opts)
                    sync(device)
                    naive = (time.perf_counter() - t0) / n
                    ref = seg.probabilities[:n].astype(np.float32)
                    row.update({
                        "naive_s_per_frame": naive, "speedup": naive / fast,
                        "labels_equal": float((probs.argmax(1) == seg.labels[:n]).mean()),
                        "max_prob_diff": float(np.abs(probs - ref).max()),
                    })
                rows.append(row)
                print(format_row(row), flush=True)
    return rows


def train_rows(ckpt_path, args, device) -> list[dict]:
    """Iterations per second of the fine-tuning loop, from the bundled model, on generated
    512 px frames (--train-size): the dock's defaults (semi-supervised, 4 + 4 crops of 128 px;
    and supervised) and the engine's (`train` defaults: 8 + 8 crops of 256 px)."""
    from napari_diffseg.data import DEFAULT_CLASSES
    from napari_diffseg.data.sequences import SparseDataset, normalise_frames
    from napari_diffseg.engine import TrainOptions
    from napari_diffseg.engine.checkpoint import load_checkpoint
    from napari_diffseg.engine.training import Trainer, context_frames_for

    init = load_checkpoint(ckpt_path)
    seq = generate_sequence(SyntheticConfig(size=args.train_size, frames=20, seed=11))
    context = context_frames_for(init.model_config, None)  # what the model sees
    frames = context_stack(normalise_frames(seq.frames, init.normalisation), context)
    data = SparseDataset(classes=dict(DEFAULT_CLASSES), source="bench", context_frames=context)
    data.images.extend(frames[::5])
    data.labels.extend(seq.labels[::5])
    data.unlabelled.extend(f for i, f in enumerate(frames) if i % 5)
    data.sequences.append("bench")
    rows = []
    for name, mode, batch, crop in (("dock fine-tune defaults", "semi", 4, 128),
                                    ("dock defaults, supervised", "supervised", 4, 128),
                                    ("`train` defaults", "semi", 8, 256)):
        opts = TrainOptions(mode=mode, iterations=args.train_iterations + 2, batch_size=batch,
                            crop_size=crop, device=str(device), val_every=0,
                            timesteps=int(init.schedule["timesteps"]))
        trainer = Trainer(data, opts, init=init)
        for _ in range(2):  # warm-up
            trainer.step()
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            for _ in range(args.train_iterations):
                trainer.step()
            sync(device)
            seconds = time.perf_counter() - t0
        row = {"what": name, "mode": mode, "batch": batch, "crop": crop,
               "it_per_s": args.train_iterations / seconds, "peak_rss_mb": rss.peak}
        if device.type == "cuda":
            row["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 1e6
        rows.append(row)
        print(f"| {name} | {mode} | {batch} + {batch if mode == 'semi' else 0} × {crop} px | "
              f"{row['it_per_s']:.2f} | {rss.peak:.0f} |", flush=True)
    return rows


def format_row(r: dict) -> str:
    cells = [r["size"], r["steps"], r["samples"], f"{r['s_per_frame']:.3f}", f"{r['fps']:.2f}"]
    if "naive_s_per_frame" in r:
        cells += [f"{r['naive_s_per_frame']:.3f}", f"{r['speedup']:.1f}×",
                  f"{100 * r['labels_equal']:.2f} %", f"{r['max_prob_diff']:.1e}"]
    cells.append(f"{r['peak_rss_mb']:.0f}")
    if "gpu_peak_mb" in r:
        cells.append(f"{r['gpu_peak_mb']:.0f}")
    return "| " + " | ".join(str(c) for c in cells) + " |"


def speed_header(naive: bool, cuda: bool) -> str:
    cols = ["size", "steps", "samples", "s/frame", "frames/s"]
    if naive:
        cols += ["naive s/frame", "speed-up", "labels equal", "max Δp"]
    cols.append("peak RSS MB")
    if cuda:
        cols.append("GPU peak MB")
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--frames", type=int, default=4, help="timed frames per row")
    parser.add_argument("--min-component", type=int, default=0,
                        help="speck removal of the labels (the plugin uses 64; 0: none, as "
                        "the published tables were measured)")
    parser.add_argument("--naive-frames", type=int, default=1,
                        help="frames of the naive reference per row (0: skip it)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="frames per batch (default: the engine's for the device)")
    parser.add_argument("--train-iterations", type=int, default=10,
                        help="timed training iterations per row (0: skip training)")
    parser.add_argument("--train-size", type=int, default=512, help="frame size for training")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--channels-last", action="store_true",
                        help="SegmentOptions.channels_last (the naive reference stays as is)")
    parser.add_argument("--compile", action="store_true",
                        help="SegmentOptions.compile (compiled in the warm-up, not timed)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="SegmentOptions.precision (the naive reference stays fp32)")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/speed.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    path = args.model or default_model_path()
    model, ckpt = load_for_inference(path, args.device)
    device = next(model.parameters()).device
    batch = args.batch_size or default_batch_size(device)
    precision = {"bf16": "bf16 autocast", "fp32": "fp32"}[precision_name(device, args.precision)]
    precision += f" (`--precision {args.precision}`)"
    precision += "".join(f", {flag}" for flag in ("channels_last", "compile")
                         if getattr(args, flag))
    head = (f"device: {device_description(device)}; precision {precision}; torch "
            f"{torch.__version__}; model `{Path(path).name}` "
            f"({sum(p.numel() for p in model.parameters()):,} parameters, "
            f"encoder stride {model.config.encoder_stride}, denoiser stride "
            f"{model.config.denoiser_stride}); {args.frames} timed frames per row, batch "
            f"{batch}; naive reference on {args.naive_frames} frame(s) per row")
    print(head + "\n")
    print(speed_header(bool(args.naive_frames), device.type == "cuda"))
    t0 = time.perf_counter()
    rows = speed_rows(model, ckpt, args, device)
    train = []
    if args.train_iterations:
        print("\n" + TRAIN_HEADER)
        train = train_rows(path, args, device)
    wall = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"header": head, "speed": rows, "train": train,
                                    "wall_s": wall}, indent=2))
    if args.no_docs:
        return
    body = [head + f"; wall time {wall / 60:.1f} min.", "",
            speed_header(bool(args.naive_frames), device.type == "cuda"),
            *(format_row(r) for r in rows)]
    if train:
        body += ["", TRAIN_HEADER]
        body += [f"| {r['what']} | {r['mode']} | {r['batch']} + "
                 f"{r['batch'] if r['mode'] == 'semi' else 0} × {r['crop']} px | "
                 f"{r['it_per_s']:.2f} | {r['peak_rss_mb']:.0f} |" for r in train]
    command = "python " + " ".join(["benchmarks/bench_inference.py",
                                    *(argv if argv is not None else sys.argv[1:])])
    update_section(ROOT / "docs" / "benchmarks.md", MARKERS, "Inference speed and memory",
                   "\n".join(body) + "\n", command)


if __name__ == "__main__":
    main()
