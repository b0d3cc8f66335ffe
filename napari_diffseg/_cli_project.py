"""Subcommands that work on a video's annotation project (the folder the dock autosaves):
``propagate`` (the dock's Propagate button) and ``models`` (the Fine-tune tab's model list)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from napari_diffseg._cli_progress import status


def add_project_parsers(sub, positive_int) -> None:
    p = sub.add_parser(
        "propagate",
        help="propagate verified frames' labels to their neighbours (in the video's project)",
        description="Carry the labels of verified frames of a video's annotation project "
        "(<video>.diffseg/, as the napari dock saves it) to the next and previous frames "
        "along the optical flow, fused with the model's labels where it is confident. "
        "Verified and painted frames are never changed; the frames written become "
        "'propagated' in the project.",
    )
    p.add_argument("input", type=Path, help="the video (file, folder or sequence)")
    p.add_argument("--project", type=Path,
                   help="the project folder (default: the one the dock uses, <video>.diffseg)")
    p.add_argument("--from", dest="sources",
                   help="comma-separated verified frames to propagate (default: all of them)")
    p.add_argument("--frames", type=positive_int, default=5, help="frames each way")
    p.add_argument("--direction", choices=["both", "forward", "backward"], default="both")
    p.add_argument("--method", choices=["tvl1", "ilk"], default="tvl1",
                   help="optical flow: TV-L1 (default) or iterative Lucas-Kanade (faster)")
    p.add_argument("-q", "--quiet", action="store_true", help="no status lines")
    p.set_defaults(func=cmd_propagate)

    p = sub.add_parser("models", help="list the models fine-tuned in a video's project",
                       description="The model history of a video's annotation project: "
                       "every model fine-tuned or adapted there, its parent, the verified "
                       "frames it was trained on, its validation Dice and time.")
    p.add_argument("input", type=Path, help="the video, or its project folder (.diffseg)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)


def _project_of(video_path: Path, sequence: str | None, project: Path | None) -> Path:
    from napari_diffseg.io.project import project_dir_for

    return project if project is not None else project_dir_for(video_path, sequence)


def cmd_propagate(args: argparse.Namespace) -> int:
    from napari_diffseg.engine.propagate import PropagateOptions, propagate_sources
    from napari_diffseg.io import read
    from napari_diffseg.io.project import load_project, save_project

    video = read(args.input)
    folder = _project_of(video.meta.path or args.input, video.sequence, args.project)
    state, labels, uncertainty = load_project(folder, expected_shape=video.frames.shape[:3])
    if labels is None:
        print(f"napari-diffseg propagate: error: {folder} holds no labels yet: segment and "
              "correct the video first", file=sys.stderr)
        return 2
    if args.sources:
        try:
            sources = sorted({int(i) for i in args.sources.split(",") if i.strip()})
        except ValueError:
            print(f"napari-diffseg propagate: error: --from {args.sources!r}: not "
                  "comma-separated frame indices", file=sys.stderr)
            return 2
        missing = [i for i in sources if i not in state.verified]
        if missing:
            print(f"napari-diffseg propagate: error: frame(s) {missing} are not verified in "
                  f"{folder} (verified: {state.verified or 'none'})", file=sys.stderr)
            return 2
    else:
        sources = list(state.verified)
    if not sources:
        print(f"napari-diffseg propagate: error: {folder} has no verified frame to propagate",
              file=sys.stderr)
        return 2
    protected = sorted(set(state.verified) | set(state.edited))
    model_frames = [i for i in state.segmented
                    if i not in state.propagated and i not in protected]
    fuse = uncertainty is not None and bool(model_frames)
    options = PropagateOptions(frames=args.frames, direction=args.direction,
                               method=args.method)
    status(f"propagating frame(s) {sources} of {args.input} ({len(model_frames)} frames "
           "with the model's answer to fuse with)", quiet=args.quiet)
    t0 = time.perf_counter()
    unc = None if uncertainty is None else uncertainty.astype(np.float32)
    proposals = propagate_sources(
        video.frames, labels, sources, keep=protected, options=options,
        model_labels=labels if fuse else None, uncertainty=unc if fuse else None,
        num_classes=max(len(state.classes), 2), model_frames=model_frames)
    labels = labels.copy()
    for index, item in sorted(proposals.items()):
        labels[index] = item.labels
        if unc is not None and item.uncertainty is not None:
            unc[index] = item.uncertainty
        state.set_source(index, "propagated")
    save_project(folder, state, labels, unc if proposals else None, changed=[])
    written = sorted(proposals)
    print(f"propagated {len(sources)} frame(s) to {len(written)} frames "
          f"{written} in {time.perf_counter() - t0:.1f} s: {folder}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from napari_diffseg.io.model_history import list_models

    folder = args.input
    if not (folder.is_dir() and folder.suffix == ".diffseg"):
        from napari_diffseg.io import read

        video = read(args.input)
        folder = _project_of(video.meta.path or args.input, video.sequence, None)
    records = list_models(folder)
    if args.json:
        print(json.dumps([r.to_json() for r in records], indent=1))
        return 0
    if not records:
        print(f"no models in {folder / 'models'}")
        return 0
    for r in records:
        print(r.describe())
    return 0
