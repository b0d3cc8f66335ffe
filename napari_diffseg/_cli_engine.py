"""The engine's subcommands of `napari-diffseg`: train, adapt, segment, evaluate (see cli.py)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_diffseg._cli_progress import progress_bar, status
from napari_diffseg.engine.defaults import (
    DEFAULT_MIN_COMPONENT,
    FINETUNE_ANCHOR_FRAMES,
    PRECISIONS,
)

logger = logging.getLogger("napari_diffseg")


def _add_review(parser: argparse.ArgumentParser, positive_int, uncertainty_help: str) -> None:
    """--steps, --samples, --uncertainty and --precision: how segment and evaluate sample the
    labels."""
    parser.add_argument("--steps", type=positive_int, default=4, help="DDIM steps")
    parser.add_argument("--samples", type=positive_int, default=4, help="samples per frame")
    parser.add_argument("--uncertainty", choices=("tta", "samples"), default="tta",
                        help=uncertainty_help)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="arithmetic of the network: bf16 (faster where the device has "
                        "it in hardware: CUDA, CPUs with AVX-512 BF16 or AMX), fp32, or auto: "
                        "bf16 where the device has it, else fp32 (default)")


def _add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress and no status lines on stderr (errors and the "
                        "results on stdout stay)")


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
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="crops per iteration (default: 4 on a CPU, 8 on a GPU); under "
                   "torchrun the global batch, split over the processes (a multiple of "
                   "their number)")
    p.add_argument("--crop-size", type=positive_int, default=None,
                   help="crop size in pixels (default: 128 on a CPU, 256 on a GPU)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--width", type=positive_int, default=32, help="new model: encoder width")
    p.add_argument("--encoder-stride", type=positive_int, default=2, choices=[1, 2, 4],
                   help="new model: encoder on s x s folded pixels (1: full resolution, "
                   "better on small frames and short training, about 4x slower)")
    p.add_argument("--denoiser-stride", type=positive_int, default=4, choices=[1, 2, 4, 8],
                   help="new model: denoiser on s x s folded label maps (a multiple of the "
                   "encoder stride)")
    p.add_argument("--context-frames", type=int, default=0, choices=range(0, 5),
                   metavar="N", help="temporal context: the model also sees N neighbouring "
                   "frames on each side (a frame-wise --init model is expanded to it; "
                   "default 0, or what the starting model already sees)")
    p.add_argument("--global-context", action="store_true",
                   help="add the encoder's frame-level block (a summary of the whole frame "
                   "read at every pixel; an --init model gains it at zero and starts as it "
                   "was; a model that has it, as the bundled one, keeps it without this)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network (CUDA only; slower start, faster steps)")
    p.add_argument("--save-every", type=int, default=500,
                   help="also save a resumable checkpoint every N iterations (0: only at end)")
    _add_quiet(p)
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
    p.add_argument("--context-frames", type=int, default=0, choices=range(0, 5),
                   metavar="N", help="temporal context: the adapted model also sees N "
                   "neighbouring frames on each side (default 0, or what --model sees)")
    p.add_argument("--anchor-frames", type=int, default=FINETUNE_ANCHOR_FRAMES, metavar="D",
                   help="carry the corrected frames' labels along the video's motion to the "
                   "frames up to D away; where reliable they replace the pseudo-labels "
                   f"(default {FINETUNE_ANCHOR_FRAMES}, as the dock; 0: none)")
    p.add_argument("--samples", type=positive_int, default=2,
                   help="samples per frame of the first segmentation")
    p.add_argument("--steps", type=positive_int, default=2,
                   help="DDIM steps of the first segmentation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help=device_help)
    _add_quiet(p)
    p.set_defaults(func=cmd_adapt)

    p = sub.add_parser("segment", help="segment a video: labels, uncertainty, summary.json")
    p.add_argument("input", type=Path, help="video, DICOM, TIFF, frame folder or sequence")
    p.add_argument("--model", type=Path, help=model_help)
    p.add_argument("--out", type=Path, required=True, help="output folder")
    _add_review(p, positive_int,
                "what the uncertainty maps and frame scores measure, as the dock's choice: "
                "the entropy of 8 flipped / turned views (tta, the default: finds errors "
                "best at 512 px; --steps and --samples are then ignored), "
                "or the diffusion samples' mutual information (samples: faster on a CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="frames per batch (default: 1 on a CPU, 8 on a GPU)")
    p.add_argument("--device", default="auto", help=device_help)
    p.add_argument("--min-component", type=int, default=None,
                   help="label components smaller than this many pixels (at 512 x 512, "
                   "scaled with the frame area) become background; 0: the plain argmax "
                   f"(default {DEFAULT_MIN_COMPONENT})")
    p.add_argument("--no-wire-tracking", dest="wire_tracking", action="store_false",
                   help="judge the guidewire frame by frame; by default, once every frame is "
                   "done, a wire seen before and after the contrast bolus is kept in the "
                   "frames between, inside their vessel, and a wire no frame shows outside "
                   "the vessel becomes vessel")
    p.add_argument("--keep-static", dest="static_filter", action="store_false",
                   help="keep vessel labels over structures that the video's frames without "
                   "contrast (before the injection, after the wash-out) show just as dark: "
                   "lung markings, clips, wires, a catheter; by default, once every frame is "
                   "done, they become background (videos with contrast in every frame are "
                   "left as they are)")
    p.add_argument("--mosxav", action="store_true",
                   help="write the labels in MOSXAV's layout: OUT/Annotations_Semantic/<seq>/ "
                   "and OUT/labels.json, in the source's mask encoding (see --encoding)")
    p.add_argument("--encoding", choices=["rgb", "index"],
                   help="--mosxav: mask encoding (default: the source's, else index)")
    _add_quiet(p)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("evaluate", help="Dice, IoU, HD95 of a model on annotated frames")
    p.add_argument("data", type=Path, help="dataset root, MOSXAV split folder or sequence")
    p.add_argument("--model", type=Path, help=model_help)
    p.add_argument("--split", help="MOSXAV ImageSets split to evaluate on")
    _add_review(p, positive_int, "score the labels that segment --uncertainty makes with the same "
                "choice: tta (the default of segment and the dock, 8 flipped / turned "
                "views; --steps and --samples are then ignored) or samples (the diffusion "
                "samples, --steps x --samples: faster on a CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help=device_help)
    p.add_argument("--min-component", type=int, default=None,
                   help=f"speck threshold as for segment (default {DEFAULT_MIN_COMPONENT})")
    p.add_argument("--no-wire-tracking", dest="wire_tracking", action="store_false",
                   help="segment and score only the annotated frames, without segment's "
                   "whole-video guidewire tracking (faster on sparsely annotated videos; by "
                   "default every frame of an annotated video is segmented, so the scores "
                   "are those of segment's labels)")
    p.add_argument("--keep-static", dest="static_filter", action="store_false",
                   help="score without segment's static-vessel step (see segment "
                   "--keep-static)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_quiet(p)
    p.set_defaults(func=cmd_evaluate)


@dataclass(frozen=True)
class TrainSizes:
    """Crops per iteration and crop size of a `train` run, and the line that says why."""

    batch_size: int
    crop_size: int
    line: str


def choose_train_sizes(device, batch_size: int | None, crop_size: int | None,
                       world: int = 1) -> TrainSizes:
    """Fill the sizes the user left out (None) with the defaults of the device's kind.

    On a GPU (or MPS) the method's defaults (:class:`TrainOptions`: 8 crops of 256 px); on a
    CPU the dock's fine-tuning sizes (4 crops of 128 px), which ran 2.7 it/s semi-supervised on
    a 2-core CPU where the GPU sizes ran 0.32 it/s (docs/benchmarks.md). A default batch is
    rounded up to a multiple of the `world` processes of a torchrun job.
    """
    from napari_diffseg.engine import TrainOptions
    from napari_diffseg.engine.device import device_description
    from napari_diffseg.engine.finetune import FINETUNE_DEFAULTS

    on_cpu = device.type == "cpu"
    kind = "CPU" if on_cpu else "GPU"
    if on_cpu:
        defaults = (FINETUNE_DEFAULTS["batch_size"], FINETUNE_DEFAULTS["crop_size"])
    else:
        defaults = (TrainOptions.batch_size, TrainOptions.crop_size)
    left_out = [flag for flag, value in (("--batch-size", batch_size), ("--crop-size", crop_size))
                if value is None]
    if batch_size is None:
        batch_size = -(-defaults[0] // world) * world
    if crop_size is None:
        crop_size = defaults[1]
    if len(left_out) == 2:
        why = f"{kind} defaults, override with --batch-size/--crop-size"
    elif left_out:
        why = f"{left_out[0]} is the {kind} default"
    else:
        why = "as given"
    where = device_description(device) + (f" x {world} processes" if world > 1 else "")
    return TrainSizes(batch_size, crop_size,
                      f"{where}: batch {batch_size}, crops {crop_size} px; {why}")


def _min_component(args: argparse.Namespace) -> int:
    return DEFAULT_MIN_COMPONENT if args.min_component is None else max(args.min_component, 0)


def _review_line(args: argparse.Namespace, device) -> str:
    """How segment / evaluate sample, in the words of their status line, with the precision
    the network computes in on `device`."""
    from napari_diffseg.engine.device import precision_name

    review = ("test-time augmentation, 8 flipped / turned views" if args.uncertainty == "tta"
              else f"{args.steps} steps x {args.samples} samples")
    return f"{review}, {precision_name(device, args.precision)}"


def _model_path(path: Path | None) -> Path:
    from napari_diffseg.models import default_model_path

    return path if path is not None else default_model_path()


def cmd_train(args: argparse.Namespace) -> int:
    from napari_diffseg.data.sequences import load_dataset
    from napari_diffseg.engine import TrainOptions, load_checkpoint, save_checkpoint, train
    from napari_diffseg.engine.distributed import env_rank, env_world_size, rank_device
    from napari_diffseg.engine.training import context_frames_for
    from napari_diffseg.io import check_writable_folder
    from napari_diffseg.model import ModelConfig
    from napari_diffseg.models import DEFAULT_MODEL

    # under torchrun every rank runs this; rank 0 alone talks and writes
    world, main_rank = env_world_size(), env_rank() == 0
    quiet = args.quiet or not main_rank
    try:
        device = rank_device(args.device)
    except ValueError as exc:
        print(f"napari-diffseg train: error: {exc}", file=sys.stderr)
        return 2
    check_writable_folder(args.out.parent, "folder of --out")  # before any work, not after
    sizes = choose_train_sizes(device, args.batch_size, args.crop_size, world)
    if sizes.batch_size % world:
        print(f"napari-diffseg train: error: --batch-size {sizes.batch_size} is not divisible "
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
        status(message, quiet=quiet)

    say(sizes.line)
    say(f"reading {args.data} ...")
    data = load_dataset(args.data, split=args.split,
                        context_frames=args.context_frames)  # logs what it found
    val = None
    if args.val:
        say(f"reading the validation data {args.val} ...")
        val = load_dataset(args.val, split=args.val_split, context_frames=args.context_frames)
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
    # a model never loses the neighbours it already sees: the frames are stacked to match
    origin = resume or init
    context = context_frames_for(origin.model_config if origin else None, args.context_frames)
    if context != data.context_frames:
        say(f"the model sees {context} neighbouring frame(s) on each side: reading the "
            "frames again with them ...")
        data = load_dataset(args.data, split=args.split, context_frames=context)
        if val is not None:
            val = load_dataset(args.val, split=args.val_split, context_frames=context)
    options = TrainOptions(
        mode=args.mode, iterations=args.iterations, batch_size=sizes.batch_size,
        crop_size=sizes.crop_size, lr=args.lr, seed=args.seed, device=args.device,
        compile=args.compile, val_every=max(args.iterations // 10, 1) if val else 0,
        context_frames=context, global_context=args.global_context or None,
    )
    stop = {"requested": False}

    def _interrupt(signum, frame):  # first Ctrl-C: stop cleanly and save
        # (torchrun passes one SIGINT on to every rank; train() stops them all together)
        if stop["requested"]:
            raise KeyboardInterrupt
        stop["requested"] = True
        if main_rank:  # even with --quiet: the user pressed a key and waits for an answer
            print("\nstopping after this iteration (Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, _interrupt)
    start = int(resume.metrics.get("iterations", 0)) if resume is not None else 0
    say(f"building the model on {device} and starting {args.mode} training "
        f"({args.iterations} iterations) ...")
    bar = progress_bar(args.iterations, "train", quiet=quiet, initial=start)

    def callback(p) -> None:
        post = {"loss": f"{p.losses['total']:.3f}"}
        if p.val_dice is not None:
            post["val_dice"] = f"{p.val_dice:.3f}"
        bar.set_postfix(post, refresh=False)
        bar.update(p.iteration - bar.n)

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
    from napari_diffseg.io import check_writable_folder, read

    check_writable_folder(args.out.parent, "folder of --out")  # before any work, not after
    model_path = _model_path(args.model)
    classes = {int(k): v for k, v in load_checkpoint(model_path).classes.items()}
    video = read(args.input)
    verified = _corrected_frames(args, video, classes)
    iterations = args.iterations or ADAPT_DEFAULTS["iterations"]
    options = TrainOptions(**{**ADAPT_DEFAULTS, "iterations": iterations, "seed": args.seed,
                              "device": args.device,
                              "context_frames": args.context_frames or None})
    if args.anchor_frames < 0:
        print("napari-diffseg adapt: error: --anchor-frames must be 0 or more",
              file=sys.stderr)
        return 2
    status(f"adapting {model_path.name} to {args.input} ({video.frames.shape[0]} frames, "
           f"{len(verified)} corrected)", quiet=args.quiet)
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
                unit = "it" if stage == "train" else "frame"
                bars[stage] = progress_bar(event["total"], stage, unit=unit, quiet=args.quiet)
            bars[stage].update(event["done"] - bars[stage].n)
        elif kind == "progress":
            bar = bars.get("train")
            if bar is not None:
                bar.set_postfix({"loss": f"{event['losses']['total']:.3f}"}, refresh=False)
                bar.update(event["iteration"] - bar.n)

    previous = signal.signal(signal.SIGINT, _interrupt)
    t0 = time.perf_counter()
    try:
        done = adapt_to_video(video.frames, str(model_path), str(args.out), verified,
                              options=options, callback=callback,
                              should_stop=lambda: stop["requested"],
                              segment_samples=args.samples, segment_steps=args.steps,
                              seed=args.seed, name=video.sequence or Path(args.input).stem,
                              anchor_frames=args.anchor_frames)
    finally:
        for bar in bars.values():
            bar.close()
        signal.signal(signal.SIGINT, previous)
    if done["path"] is None:
        print("stopped before training: no model written", file=sys.stderr)
        return 1
    pseudo = done["metrics"].get("pseudo_labels", {})
    wire = pseudo.get("wire_tracking") or {}
    wire_note = "".join(
        f", guidewire {what} in {len(wire[key])} frames"
        for key, what in (("kept_hidden", "kept under the contrast"), ("dropped", "dropped"))
        if wire.get(key))
    if pseudo.get("static_vessel"):
        wire_note += (f", vessel there before the contrast left unknown in "
                      f"{len(pseudo['static_vessel'])} frames")
    print(f"saved {done['path']} after {done['metrics'].get('iterations')} iterations in "
          f"{time.perf_counter() - t0:.0f} s (pseudo-labels: "
          f"{pseudo.get('known_fraction', 0):.0%} of pixels known, "
          f"{pseudo.get('vessel_fraction', 0):.1%} vessel{wire_note})")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from napari_diffseg.engine.device import device_description, precision_name
    from napari_diffseg.engine.inference import load_for_inference, review_options
    from napari_diffseg.engine.pipeline import segment_video
    from napari_diffseg.engine.postprocess import VideoCleanup, hidden_wire_classes, vessel_class
    from napari_diffseg.io import (
        atomic_path,
        check_writable_folder,
        read,
        write_annotations,
        write_float_maps,
        write_mosxav,
    )

    check_writable_folder(args.out)  # before the model, the video and the work
    model_path = _model_path(args.model)
    status(f"loading the model {model_path} ...", quiet=args.quiet)
    model, ckpt = load_for_inference(model_path, args.device)
    model_device = next(model.parameters()).device
    device = device_description(model_device)
    status(f"reading {args.input} ...", quiet=args.quiet)
    video = read(args.input)
    frames = video.frames
    names = video.meta.frame_names
    n = frames.shape[0]
    status(f"segmenting {n} frames of {frames.shape[2]}x{frames.shape[1]} px on {device} "
           f"({_review_line(args, model_device)}) ...", quiet=args.quiet)
    # results stream to disk batch by batch: only the labels (uint8) and the frame scores are
    # kept for the whole video, so a long 1024 px cine never holds its float maps at once
    labels = np.zeros(frames.shape[:3], dtype=np.uint8)
    scores = np.zeros(n, dtype=np.float32)
    bar = progress_bar(n, "segment", unit="frame", quiet=args.quiet)
    t0 = time.perf_counter()
    done = VideoCleanup()  # the whole-video step's changes (none for classes without it)
    try:
        for item in segment_video(
            model, frames, classes=ckpt.classes, normalisation=ckpt.normalisation,
            timesteps=int(ckpt.schedule["timesteps"]),
            options=review_options(args.uncertainty, steps=args.steps, samples=args.samples,
                                   seed=args.seed, batch_size=args.batch_size,
                                   min_component=_min_component(args),
                                   precision=args.precision),
            static=args.static_filter, wire=args.wire_tracking, labels=labels,
        ):
            if isinstance(item, VideoCleanup):
                done = item
                continue
            scores[item.indices] = item.frame_scores  # (the labels are written into `labels`)
            write_float_maps(args.out / "uncertainty", item.uncertainty,
                             frame_names=[names[i] for i in item.indices])
            bar.update(item.done - bar.n)
    finally:
        bar.close()
    wire = hidden_wire_classes(ckpt.classes) if args.wire_tracking else None
    vessel = vessel_class(ckpt.classes) if args.static_filter else None
    tracking = {"applied": wire is not None, "kept_hidden": [names[i] for i in done.kept_hidden],
                "dropped": [names[i] for i in done.dropped]}
    static = {"applied": vessel is not None, "frames": [names[i] for i in done.static]}
    done.apply(labels)
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
    summary = {
        "input": str(args.input),
        "model": str(model_path),
        "classes": {str(k): v for k, v in ckpt.classes.items()},
        "frames": len(names),
        "steps": args.steps,
        "samples": args.samples,
        "seed": args.seed,
        "device": device,
        "precision": precision_name(model_device, args.precision),
        "wire_tracking": tracking,
        "static_vessel": static,
        "timings": {"total_s": time.perf_counter() - t0, "segment_s": seconds,
                    "per_frame_s": seconds / max(n, 1)},
        "frame_scores": {names[i]: float(scores[i]) for i in range(len(names))},
        "review_order": [names[i] for i in order],
        "uncertainty": (
            "per-pixel mutual information of the diffusion samples (nats)"
            if args.uncertainty == "samples" else
            "per-pixel predictive entropy of 8 flipped / turned views (nats)"
        ) + " in uncertainty/<frame>.tif; frame score = its mean over the plausible "
            "foreground",
    }
    with atomic_path(args.out / "summary.json") as temp:  # never a truncated summary
        temp.write_text(json.dumps(summary, indent=2))
    print(f"wrote {len(names)} label maps and uncertainty maps to {args.out} "
          f"({seconds / max(n, 1):.2f} s/frame on {device})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from napari_diffseg.engine.device import device_description
    from napari_diffseg.engine.evaluation import evaluate_videos
    from napari_diffseg.engine.inference import load_for_inference, review_options
    from napari_diffseg.engine.postprocess import video_step_applies
    from napari_diffseg.io import read_sequences

    model_path = _model_path(args.model)
    status(f"loading the model {model_path} ...", quiet=args.quiet)
    model, ckpt = load_for_inference(model_path, args.device)
    status(f"reading {args.data} ...", quiet=args.quiet)
    videos = read_sequences(args.data, split=args.split)
    annotated = sum(len(v.labelled) for v in videos)
    scored = [v for v in videos if v.labels is not None and v.labelled]
    tracking = args.wire_tracking and video_step_applies(ckpt.classes,
                                                         static=args.static_filter)
    total = sum(len(v.frames) for v in scored) if tracking else annotated
    model_device = next(model.parameters()).device
    which = (f"all {total} frames of the {len(scored)} annotated sequence(s), for segment's "
             f"whole-video step; {annotated} annotated" if tracking else
             f"the {total} annotated frames of {len(videos)} sequence(s)")
    status(f"segmenting {which}, on {device_description(model_device)} "
           f"({_review_line(args, model_device)}) ...", quiet=args.quiet)
    bar = progress_bar(total, "evaluate", unit="frame", quiet=args.quiet)

    def progress(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    try:
        report = evaluate_videos(model, ckpt, videos,
                                 review_options(args.uncertainty, steps=args.steps,
                                                samples=args.samples, seed=args.seed,
                                                min_component=_min_component(args),
                                                precision=args.precision),
                                 progress=progress, wire_tracking=args.wire_tracking,
                                 static=args.static_filter)
    finally:
        bar.close()
    if args.json:
        print(json.dumps({"model": str(model_path), "data": str(args.data),
                          "review": _review_line(args, model_device), **report.to_dict()},
                         indent=2))
    else:
        print(f"{report.frames} annotated frames of {args.data}, model {model_path.name}, "
              f"{_review_line(args, model_device)}")
        print(report.format_table())
    return 0
