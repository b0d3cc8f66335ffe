#!/usr/bin/env python
"""Compare real clinical angiograms with the generator's frames (classic and wide styles).

    python scripts/compare_real_synthetic.py [--real ../shared/realdata/video] [--scenes 6]

Reads the real JPEG frames under ``--real`` (default ``../shared/realdata/video`` relative to
the repository; skipped with a message when absent: they are never part of the project),
generates ``--scenes`` single 512 px frames of each style, and prints a Markdown table of
statistics (intensity percentiles raw and after the percentile normalisation, vessel
calibres from a Sato ridge filter and, for generated frames, from the true labels,
vessel/background contrast, noise sigma, background band-pass std at 2/8/32 px). Writes
``docs/images/real-vs-synthetic.png``: real frames on top, classic and wide below, and
plots of the normalised histograms, calibre distributions and radial power spectra.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from napari_diffseg.data import SyntheticConfig, generate_sequence
from napari_diffseg.data.sequences import DEFAULT_NORMALISATION, normalise_frames
from napari_diffseg.data.stats import (
    background_std,
    calibres_from_labels,
    noise_sigma,
    radial_spectrum,
    ridge_mask,
    vessel_contrast,
)

ROOT = Path(__file__).resolve().parents[1]
COLOURS = {"real": (220, 60, 60), "classic": (60, 110, 220), "wide": (40, 160, 70)}
TILE = 256


def real_frames(root: Path, per_video: int = 3) -> list[np.ndarray]:
    """A few gray frames (H, W) uint8 of every folder of JPEGs under ``root``."""
    frames = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jpg"))
        if not files:
            continue
        pick = np.linspace(0.35, 0.65, per_video) * (len(files) - 1) if len(files) > 2 \
            else np.arange(len(files))
        for i in sorted(set(np.round(pick).astype(int).tolist())):
            frames.append(np.asarray(Image.open(files[i]).convert("L")))
    return frames


def generated(style: str, scenes: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(frame, labels) of ``scenes`` single 512 px frames (bolus plateau) of a style."""
    out = []
    for s in range(scenes):
        seq = generate_sequence(SyntheticConfig(size=512, frames=1, seed=1000 + s, style=style))
        out.append((seq.frames[0], seq.labels[0]))
    return out


def statistics(frames: list[np.ndarray], labels: list[np.ndarray] | None) -> dict:
    """Per-source statistics (medians over frames) and the curves of the plots."""
    rows: dict[str, list] = {k: [] for k in ("p1", "p50", "p99", "n1", "n50", "n99",
                                             "cal50", "cal90", "calmax", "lab50", "lab90",
                                             "labmax", "contrast", "noise", "bg2", "bg8",
                                             "bg32")}
    hist, cal_all, spectra = [], [], []
    for i, f in enumerate(frames):
        p = np.percentile(f, [1, 50, 99])
        n = normalise_frames(f[None], DEFAULT_NORMALISATION)[0]
        mask = ridge_mask(f)
        cal = calibres_from_labels(mask)
        for k, v in zip(("p1", "p50", "p99"), p, strict=True):
            rows[k].append(v)
        for k, v in zip(("n1", "n50", "n99"), np.percentile(n, [1, 50, 99]), strict=True):
            rows[k].append(v)
        if cal.size:
            rows["cal50"].append(np.percentile(cal, 50))
            rows["cal90"].append(np.percentile(cal, 90))
            rows["calmax"].append(cal.max())
        if labels is not None:
            lab = calibres_from_labels(labels[i] == 1)
            if lab.size:
                rows["lab50"].append(np.percentile(lab, 50))
                rows["lab90"].append(np.percentile(lab, 90))
                rows["labmax"].append(lab.max())
        rows["contrast"].append(vessel_contrast(f, mask))
        rows["noise"].append(noise_sigma(f))
        bg = background_std(f, mask)
        rows["bg2"].append(bg[2.0])
        rows["bg8"].append(bg[8.0])
        rows["bg32"].append(bg[32.0])
        hist.append(np.histogram(n, bins=60, range=(-1.5, 1.5), density=True)[0])
        cal_all.append(cal)
        spectra.append(radial_spectrum(f)[1])
    summary = {k: (float(np.nanmedian(v)) if v else float("nan")) for k, v in rows.items()}
    cals = np.concatenate(cal_all) if cal_all else np.zeros(0)
    return {"summary": summary, "hist": np.mean(hist, axis=0),
            "calibre": np.histogram(cals, bins=26, range=(0, 26), density=True)[0],
            "spectrum": np.mean(spectra, axis=0)}


def table(stats: dict[str, dict]) -> str:
    """Markdown table of the summaries, one column per source."""
    names = list(stats)
    lines = ["| statistic (median over frames) | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    rows = [("raw p1 / p50 / p99", ("p1", "p50", "p99"), "{:.0f}"),
            ("normalised p1 / p50 / p99", ("n1", "n50", "n99"), "{:.2f}"),
            ("ridge calibre p50 / p90 / max (px)", ("cal50", "cal90", "calmax"), "{:.1f}"),
            ("label calibre p50 / p90 / max (px)", ("lab50", "lab90", "labmax"), "{:.1f}"),
            ("vessel / background (ridge cores)", ("contrast",), "{:.2f}"),
            ("noise sigma (gray levels)", ("noise",), "{:.2f}"),
            ("background std at 2 / 8 / 32 px", ("bg2", "bg8", "bg32"), "{:.1f}")]
    for title, keys, fmt in rows:
        cells = []
        for n in names:
            vals = [stats[n]["summary"][k] for k in keys]
            cells.append("n/a" if np.isnan(vals).all() else " / ".join(fmt.format(v)
                                                                        for v in vals))
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(curves: dict[str, np.ndarray], x: np.ndarray, title: str) -> Image.Image:
    """A small line plot (TILE x TILE) of the named curves over ``x``."""
    img = Image.new("RGB", (TILE, TILE), "white")
    draw = ImageDraw.Draw(img)
    m, top = 22, 20
    draw.rectangle([m, top, TILE - 6, TILE - m], outline=(0, 0, 0))
    ys = np.concatenate([np.asarray(c, float) for c in curves.values()])
    lo, hi = float(np.nanmin(ys)), float(np.nanmax(ys))
    for name, c in curves.items():
        c = np.asarray(c, float)
        px = m + (x - x.min()) / max(np.ptp(x), 1e-9) * (TILE - 6 - m)
        py = TILE - m - (c - lo) / max(hi - lo, 1e-9) * (TILE - m - top)
        draw.line(list(zip(px.tolist(), py.tolist(), strict=True)), fill=COLOURS[name],
                  width=2)
    draw.text((m, 4), title, fill=(0, 0, 0))
    for i, name in enumerate(curves):
        draw.text((m + 4 + 70 * i, TILE - m + 4), name, fill=COLOURS[name])
    return img


def figure(real: list[np.ndarray], classic: list, wide: list, stats: dict,
           out: Path) -> None:
    """Grid: real / classic / wide rows of frames, then the three plots."""
    n = 4
    rows = [("real", real[:n]), ("classic", [f for f, _ in classic[:n]]),
            ("wide", [f for f, _ in wide[:n]])]
    canvas = Image.new("RGB", (n * TILE, (len(rows) + 1) * TILE), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (name, frames) in enumerate(rows):
        for c, f in enumerate(frames):
            canvas.paste(Image.fromarray(f).resize((TILE, TILE)).convert("RGB"),
                         (c * TILE, r * TILE))
        draw.rectangle([0, r * TILE, 70, r * TILE + 14], fill=(255, 255, 255))
        draw.text((3, r * TILE + 2), name, fill=COLOURS[name])
    y = len(rows) * TILE
    canvas.paste(_plot({k: v["hist"] for k, v in stats.items()}, np.linspace(-1.5, 1.5, 60),
                       "normalised intensity histogram"), (0, y))
    canvas.paste(_plot({k: v["calibre"] for k, v in stats.items()}, np.arange(26) + 0.5,
                       "ridge calibre (px) density"), (TILE, y))
    freqs = radial_spectrum(np.zeros((64, 64)))[0]
    canvas.paste(_plot({k: v["spectrum"] for k, v in stats.items()}, freqs,
                       "log power vs cycles/px"), (2 * TILE, y))
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "realdata" / "video")
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images"
                        / "real-vs-synthetic.png")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.real.is_dir():
        logging.warning("no real frames at %s: nothing to compare (they are not shipped with "
                        "the project; pass --real DIR of folders of JPEG frames)", args.real)
        return 0
    real = real_frames(args.real)
    if not real:
        logging.warning("no JPEG frames found under %s", args.real)
        return 0
    classic, wide = generated("classic", args.scenes), generated("wide", args.scenes)
    stats = {"real": statistics(real, None),
             "classic": statistics([f for f, _ in classic], [lab for _, lab in classic]),
             "wide": statistics([f for f, _ in wide], [lab for _, lab in wide])}
    print(f"{len(real)} real frames, {args.scenes} generated frames per style\n")
    print(table(stats))
    figure(real, classic, wide, stats, args.out)
    logging.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
