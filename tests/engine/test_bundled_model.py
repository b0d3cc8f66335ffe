"""The bundled default model ships, loads, and segments generated angiography usefully."""

from __future__ import annotations

import json
from pathlib import Path

from napari_diffseg.data import DEFAULT_CLASSES, SyntheticConfig, generate_sequence
from napari_diffseg.engine import SegmentOptions, segment
from napari_diffseg.engine.inference import load_for_inference
from napari_diffseg.engine.metrics import evaluate_frames
from napari_diffseg.models import default_model_path

FIGURES = Path(__file__).resolve().parents[2] / "docs" / "model_figures.json"


def test_bundled_model_loads_with_its_description():
    model, ckpt = load_for_inference(default_model_path(), "cpu")
    assert ckpt.classes == DEFAULT_CLASSES
    assert ckpt.training_state is None  # weights only: small
    assert default_model_path().stat().st_size < 10e6
    assert model.config.num_classes == 4
    # the figures in docs/model.md come from the run that made this file
    figures = json.loads(FIGURES.read_text())
    assert ckpt.metrics["held_out"]["dice"] == figures["report"]["mean"]["dice"]


def test_bundled_model_segments_held_out_generated_video():
    """Mid-bolus frames of a generated (wide-style) video the model never saw: vessel, catheter
    and wire are found (an untrained or trivial predictor scores about 0 here)."""
    model, ckpt = load_for_inference(default_model_path(), "cpu")
    seq = generate_sequence(SyntheticConfig(size=256, frames=20, seed=424242, guidewire=True))
    frames = slice(8, 12)
    seg = segment(model, seq.frames[frames], normalisation=ckpt.normalisation,
                  timesteps=ckpt.schedule["timesteps"],
                  options=SegmentOptions(steps=2, samples=2, seed=0))
    report = evaluate_frames(seg.labels, seq.labels[frames], DEFAULT_CLASSES)
    # measured 0.54 / 0.59 / 0.36 (mean 0.50): the retrained model is weak on the guidewire
    # (docs/model.md), so the wire's floor is low but still far above an empty prediction
    assert report.per_class["vessel"]["dice"] > 0.4
    assert report.per_class["catheter"]["dice"] > 0.4
    assert report.per_class["guidewire"]["dice"] > 0.2
    assert report.mean["dice"] > 0.4


def test_the_dock_knows_the_bundled_classes_without_torch():
    """The dock makes its layers with BUNDLED_CLASSES before any model is loaded: they must be
    the checkpoint's own."""
    from napari_diffseg.models import BUNDLED_CLASSES

    _, ckpt = load_for_inference(default_model_path(), "cpu")
    assert ckpt.classes == BUNDLED_CLASSES


def test_the_bundled_denoiser_reads_the_image_not_only_x_t():
    """Issue 13: a denoiser that copies x_t gives samples that spread by their noise, not by
    the image's ambiguity. From an x_t built from an all-background map the bundled model must
    still find most of the foreground (the first model: 0.002-0.013, benchmarks/probe_x_t.py;
    the phase-4 model 0.75 here at t = 5 of 10, 0.85 from the truth), and do better from the
    true labels."""
    import numpy as np
    import torch

    from napari_diffseg.data.sequences import (
        apply_normalisation,
        context_stack,
        normalisation_range,
    )
    from napari_diffseg.model.losses import labels_to_analog
    from napari_diffseg.model.schedule import NoiseSchedule

    model, ckpt = load_for_inference(default_model_path(), "cpu")
    seq = generate_sequence(SyntheticConfig(size=128, frames=2, seed=200_003, difficulty=0.5))
    lo, hi = normalisation_range(seq.frames, ckpt.normalisation)
    # the frames as the model reads them: with their neighbours when it sees some (the
    # bundled model sees t +- 1; with 2 frames each is the other's neighbour)
    frames = apply_normalisation(seq.frames, lo, hi).astype(np.float32)
    stacks = context_stack(frames, model.config.context_frames)
    image = torch.from_numpy(stacks if stacks.ndim == 4 else stacks[:, None])
    truth = torch.from_numpy(seq.labels.astype(np.int64))
    schedule = NoiseSchedule(ckpt.schedule["timesteps"])
    t = torch.full((2,), 5)
    noise = torch.randn((2, 4, 128, 128), generator=torch.Generator().manual_seed(0))
    accuracy = []
    with torch.no_grad():
        cond = model.encode(image)
        for start in (truth, torch.zeros_like(truth)):
            x_t = schedule.q_sample(labels_to_analog(start, 4), t, noise)
            logits, _ = model.denoise(x_t, cond, schedule.time(t))
            accuracy.append(float((logits.argmax(1) == truth)[truth > 0].float().mean()))
    from_truth, from_background = accuracy
    assert from_background > 0.5, accuracy
    assert from_truth >= from_background - 0.02, accuracy


def test_bf16_labels_agree_with_fp32_and_keep_the_dice():
    """precision="auto" runs bf16 on CPUs with AVX-512 BF16 (about 25 % faster here): the
    bundled model's labels must stay those of fp32 on >= 99.5 % of the pixels, with the same
    Dice on the truth, and bf16 must really have run (the probabilities differ)."""
    import numpy as np

    model, ckpt = load_for_inference(default_model_path(), "cpu")
    seq = generate_sequence(SyntheticConfig(size=128, frames=4, seed=424243, guidewire=True))
    runs = {}
    for precision in ("fp32", "bf16"):
        runs[precision] = segment(model, seq.frames, normalisation=ckpt.normalisation,
                                  timesteps=ckpt.schedule["timesteps"],
                                  options=SegmentOptions(steps=2, samples=2, seed=0,
                                                         precision=precision))
    fp32, bf16 = runs["fp32"], runs["bf16"]
    assert not np.array_equal(fp32.probabilities, bf16.probabilities)
    assert (fp32.labels == bf16.labels).mean() >= 0.995
    dice = [evaluate_frames(r.labels, seq.labels, DEFAULT_CLASSES).mean["dice"]
            for r in (fp32, bf16)]
    assert abs(dice[0] - dice[1]) < 0.02, dice
