"""The engine's subcommands of `napari-diffseg`: train, adapt, segment, evaluate (see cli.py)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger("napari_diffseg")


def add_engine_parsers(sub, positive_int) -> None:
    device_help = "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps"
    model_help = "checkpoint file (default: the bundled model)"

    p = sub.add_parser(
        "train", help="train or fine-tune a model on a DAVIS / MOSXAV dataset",
        description="Train on a DAVIS-style or MOSXAV dataset: frames with an annotation are "
        "labelled, all others unlabelled. Without --init, fine-tunes the bundled model when "
        "the data's classes match it, else trains from scratch. Under torchrun "
        "(torchrun --nproc_per_node N -m napari_diffseg train ...) the N processes train "
        "data-parallel on --batch-size / N crops each; rank 0 writes the checkpoints.",
    )
    p.add_argument("data", type=Path, help="dataset root, MOSXAV split folder or sequence")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (MODEL.pt)")
    p.add_argument("--init", help="checkpoint to start from, or 'none' for a new model")
    p.add_argument("--resume", type=Path, help="continue an interrupted run from its checkpoint")
    p.add_argument("--iterations", type=positive_int, default=2000)
    p.add_argument("--mode", choices=["supervised", "semi"], default="semi")
    p.add_argument("--device", default="auto", help=device_help)
    p.add_argument("--val", type=Path, help="dataset for validation Dice during training")
    p.add_argument("--split", help="MOSXAV ImageSets split of DATA to train on (e.g. train)")
    p.add_argument("--val-split", help="MOSXAV split of --val (e.g. val)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=8,
                   help="crops per iteration; under torchrun the global batch, split over "
                   "the processes (a multiple of their number)")
    p.add_argument("--crop-size", type=positive_int, default=256)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--width", type=positive_int, default=32, help="new model: encoder width")
    p.add_argument("--encoder-stride", type=positive_int, default=2, choices=[1, 2, 4],
                   help="new model: encoder on s x s folded pixels (1: full resolution, "
                   "better on small frames and short training, about 4x slower)")
    p.add_argument("--denoiser-stride", type=positive_int, default=4, choices=[1, 2, 4, 8],
                   help="new model: denoiser on s x s folded label maps (a multiple of the "
                   "encoder stride)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network (CUDA only; slower start, faster steps)")
    p.add_argument("--save-every", type=int, default=500,
                   help="also save a resumable checkpoint every N iterations (0: only at end)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "adapt", help="adapt a model to one video, from zero or more corrected frames",
        description="Adapt a model to one video: the model segments every frame, a "
        "vesselness prior (dark ridges) adds the vessels it misses, the fused pseudo-labels "
        "(unsure pixels ignored) and any corrected frames train it on the video itself "
        "(semi-supervised). What the dock's 'Adapt to this video' button runs.",
    )
    p.add_argument("input", type=Path, help="video, DICOM, TIFF, frame folder or sequence")
    p.add_argument("--out", type=Path, required=True, help="adapted checkpoint to write")
    p.add_argument("--model", type=Path, help=model_help + ", to start from")
    p.add_argument("--labels", type=Path,
                   help="corrected frames: a DAVIS annotations folder (<frame name>.png "
                   "label ids) or a TIFF of label frames (T x H x W; frames with a non-zero "
                   "pixel count as corrected unless --verified says which)")
    p.add_argument("--verified", help="with a TIFF: comma-separated indices of the corrected "
                   "frames (e.g. 0,10,20)")
    p.add_argument("--iterations", type=positive_int, default=None,
                   help="training iterations (default: 200)")
    p.add_argument("--samples", type=positive_int, default=2,
                   help="samples per frame of the first segmentation")
    p.add_argument("--steps", type=positive_int, default=2,
                   help="DDIM steps of the first segmentation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help=device_help)
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser("segment", help="segment a video: labels, uncertainty, summary.json")
    p.add_argument("input", type=Path, help="video, DICOM, TIFF, frame folder or sequence")
    p.add_argument("--model", type=Path, help=model_help)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--steps", type=positive_int, default=4, help="DDIM steps")
    p.add_argument("--samples", type=positive_int, default=4, help="samples per frame")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="frames per batch (default: 1 on a CPU, 8 on a GPU)")
    p.add_argument("--device", default="auto", help=device_help)
    p.add_argument("--mosxav", action="store_true",
                   help="write the labels in MOSXAV's layout: OUT/Annotations_Semantic/<seq>/ "
                   "and OUT/labels.json, in the source's mask encoding (see --encoding)")
    p.add_argument("--encoding", choices=["rgb", "index"],
                   help="--mosxav: mask encoding (default: the source's, else index)")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("evaluate", help="Dice, IoU, HD95 of a model on annotated frames")
    p.add_argument("data", type=Path, help="dataset root, MOSXAV split folder or sequence")
    p.add_argument("--model", type=Path, help=model_help)
    p.add_argument("--split", help="MOSXAV ImageSets split to evaluate on")
    p.add_argument("--steps", type=positive_int, default=4)
    p.add_argument("--samples", type=positive_int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help=device_help)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_evaluate)


def _progress_bar(total: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="it", file=sys.stderr, dynamic_ncols=True,
                disable=None)


def _model_path(path: Path | None) -> Path:
    from napari_diffseg.models import default_model_path

    return path if path is not None else default_model_path()


def cmd_train(args: argparse.Namespace) -> int:
    from napari_diffseg.data.sequences import load_dataset
    from napari_diffseg.engine import TrainOptions, load_checkpoint, save_checkpoint, train
    from napari_diffseg.engine.distributed import env_rank, env_world_size
    from napari_diffseg.model import ModelConfig
    from napari_diffseg.models import DEFAULT_MODEL

    # under torchrun every rank runs this; rank 0 alone talks and writes
    world, main_rank = env_world_size(), env_rank() == 0
    if args.batch_size % world:
        print(f"napari-diffseg train: error: --batch-size {args.batch_size} is not divisible "
              f"by the {world} processes of the run: use a multiple of {world}",
              file=sys.stderr)
        return 2
    if args.denoiser_stride % args.encoder_stride:
        print(f"napari-diffseg train: error: --denoiser-stride {args.denoiser_stride} must be a "
              f"multiple of --encoder-stride {args.encoder_stride}", file=sys.stderr)
        return 2
    if not main_rank:
        logger.setLevel(logging.ERROR)

    def say(message: str) -> None:
        if main_rank:
            print(message, file=sys.stderr)

    data = load_dataset(args.data, split=args.split)
    val = load_dataset(args.val, split=args.val_split) if args.val else None
    init = resume = None
    if args.resume:
        resume = load_checkpoint(args.resume)
    elif args.init and args.init.lower() != "none":
        init = load_checkpoint(args.init)
    elif args.init is None and DEFAULT_MODEL.is_file():
        candidate = load_checkpoint(DEFAULT_MODEL)
        if {int(k): v for k, v in candidate.classes.items()} == data.classes:
            init = candidate
            say(f"fine-tuning the bundled model ({DEFAULT_MODEL.name})")
        else:
            say(f"the data's classes {data.classes} differ from the bundled model's "
                f"{candidate.classes}: training a new model")
    options = TrainOptions(
        mode=args.mode, iterations=args.iterations, batch_size=args.batch_size,
        crop_size=args.crop_size, lr=args.lr, seed=args.seed, device=args.device,
        compile=args.compile, val_every=max(args.iterations // 10, 1) if val else 0,
    )
    stop = {"requested": False}

    def _interrupt(signum, frame):  # first Ctrl-C: stop cleanly and save
        # (torchrun passes one SIGINT on to every rank; train() stops them all together)
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        say("\nstopping after this iteration (Ctrl-C again to abort)")

    previous = signal.signal(signal.SIGINT, _interrupt)
    bar = _progress_bar(args.iterations, "train") if main_rank else None

    def callback(p) -> None:
        if bar is None:
            return
        bar.n = p.iteration
        post = {"loss": f"{p.losses['total']:.3f}"}
        if p.val_dice is not None:
            post["val_dice"] = f"{p.val_dice:.3f}"
        bar.set_postfix(post, refresh=False)
        bar.refresh()

    try:
        result = train(data, options, model_config=ModelConfig(
                           width=args.width, label_width=args.width,
                           encoder_stride=args.encoder_stride,
                           denoiser_stride=args.denoiser_stride),
                       init=init, resume=resume, val=val, callback=callback,
                       should_stop=lambda: stop["requested"],
                       checkpoint_every=args.save_every,
                       on_checkpoint=lambda ckpt: save_checkpoint(args.out, ckpt))
    finally:
        if bar is not None:
            bar.close()
        signal.signal(signal.SIGINT, previous)
    if not main_rank:
        return 0
    path = save_checkpoint(args.out, result.checkpoint)
    m = result.checkpoint.metrics
    msg = f"saved {path} after {m.get('iterations')} iterations"
    if "val_dice" in m:
        msg += f", validation Dice {m['val_dice']:.3f}"
    print(msg)
    return 0


def _corrected_frames(args: argparse.Namespace, video, classes: dict[int, str]
                      ) -> dict[int, np.ndarray]:
    """{frame index: labels} of --labels (a DAVIS annotations folder or a label TIFF)."""
    from napari_diffseg.io import ReadError, read
    from napari_diffseg.io.davis import read_annotation_folder

    if args.labels is None:
        return {}
    n, shape = video.frames.shape[0], video.frames.shape[1:3]
    if args.labels.is_dir():
        labels, labelled = read_annotation_folder(args.labels, video.meta.frame_names, shape,
                                                  classes)
    else:
        labels = np.asarray(read(args.labels).frames)
        if labels.shape != (n, *shape):
            raise ReadError(f"{args.labels}: label frames of shape {labels.shape}, the video "
                            f"is {(n, *shape)} (frames x height x width)", path=args.labels)
        labelled = [i for i in range(n) if labels[i].any()]
    if args.verified:
        try:
            labelled = sorted({int(i) for i in args.verified.split(",") if i.strip()})
        except ValueError as exc:
            raise ReadError(f"--verified {args.verified!r}: not comma-separated frame "
                            "indices", path=args.labels) from exc
    return {i: labels[i] for i in labelled}


def cmd_adapt(args: argparse.Namespace) -> int:
    from napari_diffseg.engine import load_checkpoint
    from napari_diffseg.engine.adapt import ADAPT_DEFAULTS, adapt_to_video
    from napari_diffseg.engine.training import TrainOptions
    from napari_diffseg.io import read

    model_path = _model_path(args.model)
    classes = {int(k): v for k, v in load_checkpoint(model_path).classes.items()}
    video = read(args.input)
    verified = _corrected_frames(args, video, classes)
    iterations = args.iterations or ADAPT_DEFAULTS["iterations"]
    options = TrainOptions(**{**ADAPT_DEFAULTS, "iterations": iterations, "seed": args.seed,
                              "device": args.device})
    print(f"adapting {model_path.name} to {args.input} ({video.frames.shape[0]} frames, "
          f"{len(verified)} corrected)", file=sys.stderr)
    stop = {"requested": False}

    def _interrupt(signum, frame):
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        print("\nstopping after this step (Ctrl-C again to abort)", file=sys.stderr)

    bars: dict = {}

    def callback(event: dict) -> None:
        kind = event.get("kind")
        if kind == "status" and "total" in event:
            stage = event["stage"]
            if stage not in bars:
                for bar in bars.values():
                    bar.close()
                bars[stage] = _progress_bar(event["total"], stage)
            bars[stage].n = event["done"]
            bars[stage].refresh()
        elif kind == "progress":
            bar = bars.get("train")
            if bar is not None:
                bar.n = event["iteration"]
                bar.set_postfix({"loss": f"{event['losses']['total']:.3f}"}, refresh=False)
                bar.refresh()

    previous = signal.signal(signal.SIGINT, _interrupt)
    t0 = time.perf_counter()
    try:
        done = adapt_to_video(video.frames, str(model_path), str(args.out), verified,
                              options=options, callback=callback,
                              should_stop=lambda: stop["requested"],
                              segment_samples=args.samples, segment_steps=args.steps,
                              seed=args.seed, name=video.sequence or Path(args.input).stem)
    finally:
        for bar in bars.values():
            bar.close()
        signal.signal(signal.SIGINT, previous)
    if done["path"] is None:
        print("stopped before training: no model written", file=sys.stderr)
        return 1
    pseudo = done["metrics"].get("pseudo_labels", {})
    print(f"saved {done['path']} after {done['metrics'].get('iterations')} iterations in "
          f"{time.perf_counter() - t0:.0f} s (pseudo-labels: "
          f"{pseudo.get('known_fraction', 0):.0%} of pixels known, "
          f"{pseudo.get('vessel_fraction', 0):.1%} vessel)")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from napari_diffseg.engine import SegmentOptions
    from napari_diffseg.engine.device import device_description
    from napari_diffseg.engine.inference import iter_segment, load_for_inference
    from napari_diffseg.io import read, write_annotations, write_float_maps, write_mosxav

    model_path = _model_path(args.model)
    model, ckpt = load_for_inference(model_path, args.device)
    video = read(args.input)
    frames = video.frames
    names = video.meta.frame_names
    n = frames.shape[0]
    # results stream to disk batch by batch: only the labels (uint8) and the frame scores are
    # kept for the whole video, so a long 1024 px cine never holds its float maps at once
    labels = np.zeros(frames.shape[:3], dtype=np.uint8)
    scores = np.zeros(n, dtype=np.float32)
    bar = _progress_bar(n, "segment")
    t0 = time.perf_counter()
    try:
        for chunk in iter_segment(
            model, frames, normalisation=ckpt.normalisation,
            timesteps=int(ckpt.schedule["timesteps"]),
            options=SegmentOptions(steps=args.steps, samples=args.samples, seed=args.seed,
                                   batch_size=args.batch_size),
        ):
            labels[chunk.indices] = chunk.labels
            scores[chunk.indices] = chunk.frame_scores
            write_float_maps(args.out / "uncertainty", chunk.entropy,
                             frame_names=[names[i] for i in chunk.indices])
            bar.n = chunk.done
            bar.refresh()
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    if args.mosxav:
        encoding = args.encoding or video.meta.extra.get("mask_encoding")
        sequence = video.sequence or Path(args.input).stem
        write_mosxav(args.out, sequence, labels, frame_names=names,
                     encoding="rgb" if encoding == "rgb" else "index",
                     classes={int(k): v for k, v in ckpt.classes.items()})
    else:
        write_annotations(args.out / "labels", labels, frame_names=names)
    order = sorted(range(len(names)), key=lambda i: -float(scores[i]))
    device = device_description(next(model.parameters()).device)
    summary = {
        "input": str(args.input),
        "model": str(model_path),
        "classes": {str(k): v for k, v in ckpt.classes.items()},
        "frames": len(names),
        "steps": args.steps,
        "samples": args.samples,
        "seed": args.seed,
        "device": device,
        "timings": {"total_s": time.perf_counter() - t0, "segment_s": seconds,
                    "per_frame_s": seconds / max(n, 1)},
        "frame_scores": {names[i]: float(scores[i]) for i in range(len(names))},
        "review_order": [names[i] for i in order],
        "uncertainty": "per-pixel predictive entropy (nats) in uncertainty/<frame>.tif; "
                       "frame score = mean entropy over the plausible foreground",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {len(names)} label maps and uncertainty maps to {args.out} "
          f"({seconds / max(n, 1):.2f} s/frame on {device})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from napari_diffseg.engine import SegmentOptions
    from napari_diffseg.engine.evaluation import evaluate_videos
    from napari_diffseg.engine.inference import load_for_inference
    from napari_diffseg.io import read_sequences

    model_path = _model_path(args.model)
    model, ckpt = load_for_inference(model_path, args.device)
    videos = read_sequences(args.data, split=args.split)
    total = sum(len(v.labelled) for v in videos)
    bar = _progress_bar(total, "evaluate")

    def progress(done: int, _total: int) -> None:
        bar.n = done
        bar.refresh()

    try:
        report = evaluate_videos(model, ckpt, videos,
                                 SegmentOptions(steps=args.steps, samples=args.samples,
                                                seed=args.seed), progress=progress)
    finally:
        bar.close()
    if args.json:
        print(json.dumps({"model": str(model_path), "data": str(args.data),
                          **report.to_dict()}, indent=2))
    else:
        print(f"{report.frames} annotated frames of {args.data}, model {model_path.name}")
        print(report.format_table())
    return 0
