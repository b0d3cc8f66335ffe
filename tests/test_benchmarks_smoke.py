"""The benchmarks run end to end on their smallest settings (seconds)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
DOC_STUB = """# Benchmarks

## Inference speed

| size | s/frame |
|---|---|
| 256 | 0.1 |

<!-- quality:start -->
old quality text
<!-- quality:end -->

<!-- uncertainty:start -->
old uncertainty text
<!-- uncertainty:end -->

Closing words.
"""


def _bench(script: str, tmp_path: Path, *args: str) -> str:
    """Run benchmarks/<script> with `args` on one thread in `tmp_path`; its stdout."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _run(script: str, tmp_path: Path, *args: str) -> str:
    return _bench(script, tmp_path, "--preset", "smoke", *args)


def _rows(markdown: str, first_cell: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in markdown.splitlines()
        if line.startswith(f"| {first_cell}")
    ]


def _number(cell: str) -> float:
    return float(cell.strip("*").split("±")[0])


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    path = tmp_path / "benchmarks.md"
    path.write_text(DOC_STUB)
    return path


def test_quality_benchmark_smoke(tmp_path, docs):
    out = tmp_path / "quality.json"
    stdout = _run("bench_quality.py", tmp_path, "--out", str(out), "--docs", str(docs))
    # 2 settings x 2 label conditions: one table each, five methods per table
    headers = [line for line in stdout.splitlines() if line.startswith("| method | seeds |")]
    assert len(headers) == 4
    for label in ("(a)", "(b)", "(c)", "(d)", "(e)"):
        rows = _rows(stdout, label)
        assert len(rows) == 4 + 1 + 1  # four quality tables, the noise table, the cost table
        mean_dice = [_number(r[11]) for r in rows[:4]]  # the bold mean Dice column
        assert all(math.isfinite(v) and 0 <= v <= 1 for v in mean_dice)
        drops = [_number(c) for c in rows[4][1:]]
        assert all(math.isfinite(v) for v in drops)
    runs = json.loads(out.read_text())["runs"]
    assert len(runs) == 5 * 2 * 2
    text = docs.read_text()
    assert "old quality text" not in text and "(e) diffusion" in text
    assert "| 256 | 0.1 |" in text and "old uncertainty text" in text
    assert text.endswith("Closing words.\n")


def test_uncertainty_benchmark_smoke(tmp_path, docs):
    sys.path.insert(0, str(BENCH))
    from bench_uncertainty import MEASURES

    out = tmp_path / "uncertainty.json"
    stdout = _run("bench_uncertainty.py", tmp_path, "--out", str(out), "--docs", str(docs))
    rows = [r for name in MEASURES.values() for r in _rows(stdout, name[3])]
    assert len(rows) == len(MEASURES)
    for row in rows:
        auroc = float(row[2])
        assert 0 <= auroc <= 1
        removed = [float(c.strip(" %")) for c in row[7].split("/")]
        assert len(removed) == 3 and all(0 <= v <= 100 for v in removed)
    result = json.loads(out.read_text())["result"]
    assert set(result["measures"]) == set(MEASURES)
    assert set(result["runs"]) == {"single", "diffusion", "tta"}
    text = docs.read_text()
    assert "old uncertainty text" not in text and "old quality text" in text


def test_noisy_setting_corrupts_thirty_percent_of_the_labelled_masks():
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH / "bench_quality.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = bench  # dataclasses look their module up there
    try:
        spec.loader.exec_module(bench)
    finally:
        sys.modules.pop("bench_quality", None)
    preset = bench.PRESETS["cpu"]
    small = bench.Preset(**{**preset.__dict__, "size": 64})  # same counts, cheaper frames
    clean, _ = bench.training_data(small, "every5", "clean", seed=0)
    noisy, info = bench.training_data(small, "every5", "noisy", seed=0)
    changed = [
        i
        for i, (a, b) in enumerate(zip(clean.labels, noisy.labels, strict=True))
        if not np.array_equal(a, b)
    ]
    n = len(clean.labels)
    assert changed == info["corrupted"]
    assert abs(len(changed) / n - 0.3) <= 0.5 / n + 1e-9
    assert len(noisy.unlabelled) == len(clean.unlabelled) > 0


def test_finetune_benchmark_smoke(tmp_path):
    out = tmp_path / "finetune.json"
    docs = tmp_path / "benchmarks.md"
    docs.write_text(DOC_STUB + "\n<!-- finetune:start -->\nold text\n<!-- finetune:end -->\n")
    stdout = _bench("bench_finetune.py", tmp_path, "--smoke", "--out", str(out),
                    "--docs", str(docs))
    rows = _rows(stdout, "before") + _rows(stdout, "default") + _rows(stdout, "2×")
    # iterations: the smoke budget, then 2x; a kept run adds its last stage on every
    # verified frame (a third as many)
    assert [r[1].split(" + ")[0] for r in rows] == ["0", "4", "8"]
    assert all(0 <= _number(r[7]) <= 1 for r in rows)  # the bold mean Dice column
    assert "within the 10-minute target" in stdout and "2× iterations − default" in stdout
    result = json.loads(out.read_text())
    assert result["meta"]["verified"] == [0, 5] and result["meta"]["mode"] == "semi"
    assert [r["iterations"] for r in result["runs"]] == [4, 8]
    for r in result["runs"]:
        assert r["train_frames"] == 1 and r["val_frames"] == 1 and r["unlabelled_frames"] == 8
        assert r["it_per_s"] > 0 and r["peak_rss_mb"] > 100 and r["wall_s"] >= r["train_s"] > 0
        assert r["best_iteration"] == r["iterations"] and math.isfinite(r["best_val_dice"])
        assert math.isfinite(r["mean_dice"]) and 0 <= r["mean_dice"] <= 1
        assert math.isfinite(r["raw_mean_dice"]) and r["temperature"] > 0
        # the dock's guard: the run is used unless it validates below its start
        assert r["kept"] == (r["best_val_dice"] >= r["val_dice_before"])
        assert r["refit_iterations"] == (round(r["iterations"] / 3) if r["kept"] else 0)
    assert math.isfinite(result["before"]["mean_dice"])
    text = docs.read_text()
    assert "old text" not in text and "| default (GUI) | 4" in text
    assert "bench_finetune.py --smoke" in text and "old uncertainty text" in text
    assert text.endswith("<!-- finetune:end -->\n")


def test_speed_benchmark_checks_the_fast_sampler_against_the_naive_one(tmp_path):
    out = tmp_path / "speed.json"
    stdout = _bench("bench_inference.py", tmp_path, "--sizes", "48", "--steps", "1", "3",
                    "--samples", "2", "--frames", "1", "--train-size", "48",
                    "--train-iterations", "1", "--no-docs", "--out", str(out),
                    "--precision", "fp32")  # the naive reference is fp32
    result = json.loads(out.read_text())
    assert [(r["steps"], r["samples"]) for r in result["speed"]] == [(1, 2), (3, 2)]
    for row in result["speed"]:
        # same noise, same network: the engine's folded loop and the naive one agree
        assert row["labels_equal"] > 0.999 and row["max_prob_diff"] < 1e-3
        assert row["peak_rss_mb"] > 50 and row["fps"] > 0
    assert [r["mode"] for r in result["train"]] == ["semi", "supervised", "semi"]
    assert len(_rows(stdout, "48 |")) == 2


def test_memory_benchmark_segments_a_uint16_cine_through_the_cli(tmp_path):
    out = tmp_path / "memory.json"
    stdout = _bench("bench_memory.py", tmp_path, "--size", "64", "--frames", "5", "--steps",
                    "1", "--samples", "2", "--no-docs", "--out", str(out))
    result = json.loads(out.read_text())
    assert result["uncertainty_maps_written"] == 5
    assert 50 < result["peak_rss_mb"] < 3000
    assert "| 64² × 5, uint16 |" in stdout


def test_propagation_benchmark_smoke(tmp_path):
    out = tmp_path / "propagation.json"
    docs = tmp_path / "benchmarks.md"
    docs.write_text(DOC_STUB)
    stdout = _bench("bench_propagation.py", tmp_path, "--smoke", "--out", str(out),
                    "--docs", str(docs), "--ablation", "--anchor-frames", "3")
    rows = (_rows(stdout, "nothing") + _rows(stdout, "(a)") + _rows(stdout, "(b)")
            + _rows(stdout, "(c)"))
    assert len(rows) == 4 and all(0 <= _number(r[1]) <= 1 for r in rows)
    assert "target of a ≥ 30% relative error reduction" in stdout
    result = json.loads(out.read_text())
    (video,) = result["videos"]
    assert video["corrected"] == [5] and video["finetune_s"] > 0
    # the ablation: frame-wise vs temporal context, without and with anchors
    # the dock's settings (FINETUNE_ANCHOR_FRAMES = 4) are run once more than the ablation
    assert sorted(video["variants"]) == ["c0a0", "c0a3", "c0a4", "c1a0", "c1a3"]
    ablation = _rows(stdout, "frame-wise") + _rows(stdout, "t ± 1")
    assert [r[2] for r in ablation] == ["no", "± 3 frames", "no", "± 3 frames"]
    assert all(0 <= _number(r[4]) <= 1 for r in ablation)
    text = docs.read_text()
    assert "<!-- propagation:start -->" in text and "bench_propagation.py --smoke" in text
    assert "old uncertainty text" in text


def test_review_speed_benchmark_times_both_review_choices(tmp_path):
    docs = tmp_path / "benchmarks.md"
    docs.write_text("# Benchmarks\n")
    stdout = _bench("bench_review_speed.py", tmp_path, "--sizes", "64", "--frames", "1",
                    "--docs", str(docs))
    rows = _rows(stdout, "64 |")
    assert len(rows) == 3 and {"diffusion samples, 4 × 4",
                               "test-time augmentation, 8 views (default)"} <= set(
        r[1] for r in rows)
    assert all(float(r[2]) > 0 for r in rows)
    text = docs.read_text()
    assert "<!-- review-speed:start -->" in text and "bench_review_speed.py" in text


def _load_bench(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


def test_pooled_scores_truth_as_perfect_and_a_miss_as_the_diagonal():
    bench = _load_bench("bench_pooled")
    truth = np.zeros((2, 32, 32), np.uint8)
    truth[:, 10:20, 5:25] = 1
    truth[0, 2:4, 2:30] = 2  # a catheter in frame 0 only
    perfect = bench.frame_scores(truth, truth)
    assert np.nanmax(np.abs(perfect[..., 0] - 1)) == 0 and np.nanmax(perfect[..., 1]) == 0
    missed = truth.copy()
    missed[0][missed[0] == 2] = 0
    scores = bench.frame_scores(missed, truth)
    assert scores[0, 1, 0] == 0 and scores[0, 1, 1] == pytest.approx(math.hypot(32, 32))
    assert np.isnan(scores[1, 1]).all() and np.isnan(scores[:, 2]).all()  # absent: no score
    summary = bench.summarise([perfect, scores])
    # catheter: frame 0 of the perfect video and frame 0 of the miss
    assert summary["per_class"]["catheter"]["dice"] == pytest.approx(0.5)
    assert summary["hd95"] == pytest.approx(math.hypot(32, 32) / 4)  # (0 + 45.25 / 2) / 2
    interval = bench.bootstrap([perfect, scores], draws=50)
    assert interval["hd95"][0] <= summary["hd95"] <= interval["hd95"][1]


def test_pooled_benchmark_smoke_caches_the_labels(tmp_path):
    import torch

    from napari_diffseg.data.sequences import DEFAULT_NORMALISATION
    from napari_diffseg.engine.checkpoint import Checkpoint, save_checkpoint
    from napari_diffseg.model import DiffSegNet, ModelConfig

    config = ModelConfig(num_classes=4, width=8, depth=2, label_width=8, label_blocks=1,
                         time_dim=16, denoiser_stride=1, encoder_stride=1)
    torch.manual_seed(0)
    model = save_checkpoint(tmp_path / "tiny.pt", Checkpoint(
        config.to_dict(), DiffSegNet(config).state_dict(),
        {0: "background", 1: "vessel", 2: "catheter", 3: "guidewire"},
        dict(DEFAULT_NORMALISATION), {"timesteps": 10}))
    out, cache = tmp_path / "pooled.json", tmp_path / "cache"
    args = ("--preset", "smoke", "--model", str(model), "--cache", str(cache), "--out", str(out))
    stdout = _bench("bench_pooled.py", tmp_path, *args)
    result = json.loads(out.read_text())
    assert list(result["groups"]) == ["held_out", "any_edge", "bottom_right", "strands",
                                      "current"]
    pooled = result["pooled"]
    assert pooled["videos"] == 6 and pooled["groups"] == ["held_out", "any_edge",
                                                          "bottom_right"]
    assert 0 <= pooled["dice"] <= 1 and 0 <= pooled["hd95"] <= math.hypot(64, 64)
    assert pooled["interval"]["hd95"][0] <= pooled["hd95"] <= pooled["interval"]["hd95"][1]
    assert len(_rows(stdout, "**pooled**")) == 1 and len(_rows(stdout, "current")) == 1
    cached = sorted(p.name for p in cache.rglob("*.npy"))
    assert len(cached) == 10  # 2 videos x 5 groups (strands: bottom_right's seeds, other switches)
    # again without the static-vessel step: the labels come from the cache, same files
    stdout = _bench("bench_pooled.py", tmp_path, *args, "--keep-static", "--groups", "held_out")
    assert sorted(p.name for p in cache.rglob("*.npy")) == cached
    assert json.loads(out.read_text())["static_vessel"] is False
    assert "**pooled**" in stdout
