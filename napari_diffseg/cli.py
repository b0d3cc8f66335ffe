"""`napari-diffseg` command line: the same library functions the plugin uses, from a terminal.

Subcommands
-----------
train DATA        train or fine-tune a model on a DAVIS / MOSXAV dataset
adapt INPUT       adapt a model to one video, from zero or more corrected frames
segment INPUT     segment a video (any readable format): labels, uncertainty, summary.json
evaluate DATA     per-class Dice, IoU and HD95 of a model on a dataset's annotated frames
propagate INPUT   carry a video project's verified frames to their neighbours
models INPUT      list the models fine-tuned in a video's project
make-sample OUT   write a synthetic DAVIS-style angiography dataset with sparse labels
info PATH         show what the readers see in a file or folder (format, frames, labels)
demo              open napari with the plugin and the bundled sample video
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from napari_diffseg import __version__

logger = logging.getLogger("napari_diffseg")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _difficulty(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-diffseg",
        description="Diffusion-model segmentation of X-ray angiography videos (napari plugin).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_engine_parsers(sub)
    from napari_diffseg._cli_project import add_project_parsers

    add_project_parsers(sub, _positive_int)

    p = sub.add_parser(
        "make-sample",
        help="write a synthetic DAVIS-style angiography dataset",
        description="Generate synthetic coronary angiography sequences with ground truth and "
        "write them as a DAVIS-style dataset: JPEGImages/<seq>/NNNNN.png, "
        "Annotations/<seq>/NNNNN.png on every K-th frame, classes.json.",
    )
    p.add_argument("out", type=Path, help="output folder (created)")
    p.add_argument("--sequences", type=_positive_int, default=3, help="number of sequences")
    p.add_argument("--frames", type=_positive_int, default=40, help="frames per sequence")
    p.add_argument("--size", type=_positive_int, default=256, help="frame height and width")
    p.add_argument("--label-every", type=_positive_int, default=5,
                   help="annotate every K-th frame (1 = all frames)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same data)")
    p.add_argument("--difficulty", type=_difficulty, default=0.5,
                   help="0 (easy) .. 1 (hard): noise, contrast, motion, clutter")
    p.add_argument("--layout", choices=["davis", "mosxav"], default="davis",
                   help="davis: JPEGImages/Annotations/classes.json; mosxav: a tree shaped "
                   "like a MOSXAV download (trainval/ with --sequences, test/ with "
                   "--test-sequences, JPEG frames, Annotations_Semantic, ImageSets, labels.json)")
    p.add_argument("--test-sequences", type=int, default=1,
                   help="mosxav layout: sequences in test/ (every frame annotated)")
    p.add_argument("--encoding", choices=["rgb", "index"], default="rgb",
                   help="mosxav layout: masks as RGB class colours or as class indices")
    p.set_defaults(func=_cmd_make_sample)

    p = sub.add_parser("info", help="show what the readers find in a file or folder")
    p.add_argument("path", type=Path)
    p.add_argument("--sequence", help="sequence of a DAVIS root with several sequences")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("demo", help="open napari with the plugin and the sample video")
    p.add_argument("--screenshot", type=Path, help="save a screenshot of the window and quit")
    p.set_defaults(func=_cmd_demo)
    return parser


def _add_engine_parsers(sub) -> None:
    from napari_diffseg._cli_engine import add_engine_parsers

    add_engine_parsers(sub, _positive_int)


def _cmd_make_sample(args: argparse.Namespace) -> int:
    from napari_diffseg.data import make_dataset, make_mosxav
    from napari_diffseg.io import check_writable_folder

    check_writable_folder(args.out)

    if args.layout == "mosxav":
        root = make_mosxav(
            args.out, trainval=args.sequences, test=args.test_sequences, frames=args.frames,
            size=args.size, seed=args.seed, label_every=args.label_every,
            encoding=args.encoding, difficulty=args.difficulty,
        )
        print(f"wrote a MOSXAV-shaped tree ({args.sequences} trainval, {args.test_sequences} "
              f"test sequences of {args.frames} frames) to {root}")
        return 0
    root = make_dataset(
        args.out,
        sequences=args.sequences,
        frames=args.frames,
        size=args.size,
        label_every=args.label_every,
        seed=args.seed,
        difficulty=args.difficulty,
    )
    print(f"wrote {args.sequences} sequence(s) of {args.frames} frames to {root}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from napari_diffseg.io import read

    video = read(args.path, sequence=args.sequence)
    info = {
        "path": str(video.meta.path),
        "format": video.meta.source_format,
        "shape": list(video.frames.shape),
        "dtype": str(video.frames.dtype),
        "fps": video.meta.fps,
        "spacing_mm": list(video.meta.spacing) if video.meta.spacing else None,
        "sequence": video.sequence,
        "labelled_frames": list(video.labelled),
        "classes": {str(k): v for k, v in (video.classes or {}).items()} or None,
        "first_frames": video.meta.frame_names[:3],
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key:>16}: {value}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from napari_diffseg.demo import run_demo
    from napari_diffseg.io import check_writable_folder

    if args.screenshot is not None:
        check_writable_folder(args.screenshot.parent or Path("."), "folder of --screenshot")
    return run_demo(screenshot=args.screenshot)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )
    # --quiet (train, segment, evaluate) keeps the warnings and errors of the library's log
    logger.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.NOTSET)
    from napari_diffseg.engine.checkpoint import CheckpointError
    from napari_diffseg.io import ReadError, WriteError

    try:
        return int(args.func(args) or 0)
    except (ReadError, WriteError, CheckpointError) as exc:
        print(f"napari-diffseg {args.command}: error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # permission denied, no space left, read-only file system, ...
        print(f"napari-diffseg {args.command}: error: {describe_os_error(exc)}",
              file=sys.stderr)
        return 2


def describe_os_error(exc: OSError) -> str:
    """One line for an OS error: the path(s) it names, then the reason in words."""
    from napari_diffseg.io import os_reason

    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    reason = os_reason(exc)
    return _one_line(f"{' -> '.join(paths)}: {reason}" if paths else reason)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
