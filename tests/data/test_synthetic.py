"""Tests of the synthetic angiography generator: API, determinism, bolus, visibility, motion."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_diffseg.data import DEFAULT_CLASSES, SyntheticConfig, generate_sequence

VESSEL, CATHETER, GUIDEWIRE = 1, 2, 3


def _ring(mask: np.ndarray, inner: int = 1, outer: int = 3) -> np.ndarray:
    """Pixels between ``inner`` and ``outer`` dilations of ``mask`` (H, W)."""
    return ndi.binary_dilation(mask, iterations=outer) & ~ndi.binary_dilation(mask,
                                                                                iterations=inner)


def _local_darkening(frame: np.ndarray, labels: np.ndarray, target: np.ndarray) -> float:
    """Mean of (local background - frame) over the ``target`` pixels (H, W).

    The local background is the mean of the unlabelled ring around all labelled structures
    within a 9 x 9 window, so large-scale anatomy gradients do not bias the comparison.
    """
    ring = (_ring(labels > 0) & (labels == 0)).astype(float)
    frame = frame.astype(float)
    local = ndi.uniform_filter(frame * ring, 9) / np.maximum(ndi.uniform_filter(ring, 9), 1e-6)
    return float((local - frame)[target].mean())


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_shapes_dtypes_and_metadata(seq_with_wire):
    seq = seq_with_wire
    assert seq.frames.shape == seq.labels.shape == (24, 96, 96)
    assert seq.frames.dtype == np.uint8 and seq.labels.dtype == np.uint8
    assert seq.classes == DEFAULT_CLASSES
    assert seq.fps == 15.0 and seq.name == "seq000"
    assert set(np.unique(seq.labels)) <= set(DEFAULT_CLASSES)


def test_deterministic_for_a_seed():
    config = SyntheticConfig(size=64, frames=6, seed=11, guidewire=True)
    a, b = generate_sequence(config), generate_sequence(config)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_seeds_differ(seqs_by_seed):
    mid = [s.labels[10] for s in seqs_by_seed]
    for i in range(len(mid)):
        for j in range(i + 1, len(mid)):
            assert _iou(mid[i] == VESSEL, mid[j] == VESSEL) < 0.5
            assert _iou(mid[i] == CATHETER, mid[j] == CATHETER) < 0.5
            assert np.abs(seqs_by_seed[i].frames[0].astype(int)
                          - seqs_by_seed[j].frames[0]).mean() > 3.0


def test_all_classes_in_a_middle_frame(seq_with_wire):
    present = set(np.unique(seq_with_wire.labels[12]))
    assert present == {0, VESSEL, CATHETER, GUIDEWIRE}


def test_guidewire_switch():
    off = generate_sequence(SyntheticConfig(size=64, frames=3, seed=5, guidewire=False))
    assert not (off.labels == GUIDEWIRE).any()
    on = generate_sequence(SyntheticConfig(size=64, frames=3, seed=5, guidewire=True))
    assert all((on.labels[i] == GUIDEWIRE).any() for i in range(3))
    drawn = [(generate_sequence(SyntheticConfig(size=64, frames=1, seed=s)).labels
              == GUIDEWIRE).any() for s in range(12)]
    assert 0 < sum(drawn) < 12


def test_bolus_washes_in_and_out(seqs_by_seed):
    for seq in seqs_by_seed:
        counts = (seq.labels == VESSEL).sum(axis=(1, 2))
        n = len(counts)
        peak = counts.max()
        assert peak > 0.02 * seq.labels[0].size
        assert counts[0] < 0.1 * peak
        # the middle of the plateau (thick vessels are fully labelled early on)
        plateau = np.flatnonzero(counts >= 0.9 * peak)
        assert n // 5 <= int(np.median(plateau)) <= 4 * n // 5
        assert counts[-1] < 0.8 * peak


def test_labelled_vessel_is_darker_than_its_surroundings(seqs_by_seed):
    for seq in seqs_by_seed:
        t = int(np.argmax((seq.labels == VESSEL).sum(axis=(1, 2))))
        assert _local_darkening(seq.frames[t], seq.labels[t], seq.labels[t] == VESSEL) > 10.0


def test_catheter_visible_in_every_frame(seq_with_wire):
    seq = seq_with_wire
    for frame, labels in zip(seq.frames, seq.labels, strict=True):
        cath = labels == CATHETER
        assert cath.sum() > 20
        assert _local_darkening(frame, labels, cath) > 10.0


def test_guidewire_is_dark(seq_with_wire):
    seq = seq_with_wire
    for frame, labels in zip(seq.frames, seq.labels, strict=True):
        assert _local_darkening(frame, labels, labels == GUIDEWIRE) > 10.0


def test_motion_changes_labels_but_frames_overlap(seqs_by_seed):
    for seq in seqs_by_seed:
        counts = (seq.labels == VESSEL).sum(axis=(1, 2))
        peak = np.flatnonzero(counts >= 0.8 * counts.max())
        vessel = seq.labels == VESSEL
        ious = [_iou(vessel[i], vessel[i + 1]) for i in peak[:-1] if i + 1 in peak]
        assert ious and min(ious) > 0.3
        assert min(ious) < 0.999  # the tree moves
        cath = seq.labels == CATHETER
        assert any(not np.array_equal(cath[0], cath[i]) for i in range(1, len(cath)))


def test_difficulty_increases_noise():
    def residual_std(difficulty: float) -> float:
        seq = generate_sequence(SyntheticConfig(size=96, frames=2, seed=4, difficulty=difficulty))
        frame = seq.frames[0].astype(float)
        background = ndi.binary_erosion(seq.labels[0] == 0, iterations=4)
        return float((frame - ndi.gaussian_filter(frame, 2.0))[background].std())

    stds = [residual_std(d) for d in (0.0, 0.5, 1.0)]
    assert stds[0] < stds[1] < stds[2]


def test_difficulty_keeps_the_scene_layout():
    easy = generate_sequence(SyntheticConfig(size=96, frames=1, seed=8, difficulty=0.0))
    hard = generate_sequence(SyntheticConfig(size=96, frames=1, seed=8, difficulty=1.0))
    assert _iou(easy.labels[0] == CATHETER, hard.labels[0] == CATHETER) > 0.5


@pytest.mark.parametrize("size", [64, (80, 120), (120, 72)])
def test_small_and_non_square_sizes(size):
    config = SyntheticConfig(size=size, frames=12, seed=2, guidewire=True)
    seq = generate_sequence(config)
    assert seq.frames.shape == (12, *config.shape)
    assert set(np.unique(seq.labels[6])) == {0, VESSEL, CATHETER, GUIDEWIRE}


def test_single_frame():
    seq = generate_sequence(SyntheticConfig(size=64, frames=1, seed=0))
    assert seq.frames.shape == (1, 64, 64)
    assert (seq.labels[0] == VESSEL).any()  # a single frame shows the bolus at its peak


def test_noise_free_option():
    config = SyntheticConfig(size=64, frames=2, seed=1, noise=False)
    frame = generate_sequence(config).frames[0].astype(float)
    noisy = generate_sequence(SyntheticConfig(size=64, frames=2, seed=1)).frames[0]
    hp = lambda f: (f - ndi.gaussian_filter(f, 2.0)).std()  # noqa: E731
    assert hp(frame) < hp(noisy.astype(float))


@pytest.mark.parametrize("kwargs", [dict(size=8), dict(frames=0), dict(difficulty=1.5),
                                    dict(fps=0.0), dict(catheter_side="middle")])
def test_invalid_config(kwargs):
    with pytest.raises(ValueError):
        SyntheticConfig(**kwargs)
