"""MOSXAV-only classes of the synthetic generator: balloon (4), contrast catheter (2) vs
catheter (3), and the default scheme left untouched."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_diffseg.data import SyntheticConfig, generate_sequence
from napari_diffseg.data.config import draw_scene_params
from napari_diffseg.data.physics import catheter_filled

SIZE, FRAMES, SEEDS = 128, 20, range(10)
VESSEL, CONTRAST_CATHETER, CATHETER, BALLOON, OTHERS = 1, 2, 3, 4, 5
#: sha1 of frames + labels of SyntheticConfig(size=96, frames=8, seed=3), computed before
#: the MOSXAV balloon / catheter-filling changes (the classic style keeps those arrays).
DEFAULT_SHA1 = "939f56ded4d879d62c47d0db506ffdcc854772c8"


@pytest.fixture(scope="module")
def pairs():
    """(mosxav, default) sequences of the same seeds."""
    return [(generate_sequence(SyntheticConfig(size=SIZE, frames=FRAMES, seed=s,
                                               scheme="mosxav")),
             generate_sequence(SyntheticConfig(size=SIZE, frames=FRAMES, seed=s)))
            for s in SEEDS]


def test_default_scheme_unchanged():
    seq = generate_sequence(SyntheticConfig(size=96, frames=8, seed=3, style="classic"))
    assert hashlib.sha1(seq.frames.tobytes() + seq.labels.tobytes()).hexdigest() == DEFAULT_SHA1
    assert seq.labels.max() <= 3


def test_balloon_in_some_sequences_only(pairs):
    has = [bool((m.labels == BALLOON).any()) for m, _ in pairs]
    assert any(has) and not all(has)
    for (m, d), present in zip(pairs, has, strict=True):
        assert present <= bool((m.labels == OTHERS).any())  # it rides on the guidewire
        assert not (d.labels > 3).any()


def test_balloon_lies_on_the_tree_and_keeps_the_precedence(pairs):
    for m, d in pairs:
        ball = m.labels == BALLOON
        if not ball.any():
            continue
        # same geometry as the default scheme: on / next to its vessel or guidewire (the
        # balloon is centred on the vessel the wire runs in, so within its own diameter of
        # the wire where the vessel holds no labelled contrast)
        for t in np.flatnonzero(ball.any(axis=(1, 2))):
            tree = ndi.binary_dilation(np.isin(d.labels[t], (1, 3)), iterations=2)
            inflated = ball[t] | (d.labels[t] == 3)  # the wire hides part of the balloon
            diameter = int(np.ceil(2.0 * ndi.distance_transform_edt(inflated).max()))
            tree |= ndi.binary_dilation(d.labels[t] == 3, iterations=max(diameter, 2))
            assert tree[ball[t]].all()
        # guidewire > balloon: the wire is exactly the default one
        np.testing.assert_array_equal(m.labels == OTHERS, d.labels == 3)
        # balloon > catheter > vessel: they only lose pixels to the balloon
        np.testing.assert_array_equal(m.labels == VESSEL, (d.labels == 1) & ~ball)
        np.testing.assert_array_equal(np.isin(m.labels, (2, 3)), (d.labels == 2) & ~ball)
        # a sausage a few pixels long on a proximal/mid vessel
        assert 5 <= ball.sum(axis=(1, 2)).max() <= 80


def test_balloon_is_darker_than_its_surroundings(pairs):
    checked = 0
    for m, _ in pairs:
        for t in range(FRAMES):
            ball = m.labels[t] == BALLOON
            # at 128 px a balloon covers 12-28 px; the smallest (under the wire, at the
            # image edge) blur into their surroundings
            if ball.sum() < 20:
                continue
            ring = (ndi.binary_dilation(ball, iterations=4)
                    & ~ndi.binary_dilation(ball, iterations=2) & (m.labels[t] == 0))
            frame = m.frames[t].astype(float)
            assert frame[ring].mean() - frame[ball].mean() > 15
            checked += 1
    assert checked >= 20


def test_balloon_onset_keeps_it_from_some_frame_on():
    seq = generate_sequence(SyntheticConfig(size=SIZE, frames=FRAMES, seed=32, scheme="mosxav"))
    present = (seq.labels == BALLOON).any(axis=(1, 2))
    first = int(np.argmax(present))
    assert 0 < first < FRAMES - 1 and present[first:].all()


def test_catheter_class_follows_the_injection(pairs):
    for seed, (m, _) in zip(SEEDS, pairs, strict=True):
        config = SyntheticConfig(size=SIZE, frames=FRAMES, seed=seed, scheme="mosxav")
        params = draw_scene_params(config, np.random.default_rng(
            np.random.SeedSequence(seed).spawn(1)[0]))
        filled = np.array([catheter_filled((i + 0.5) / FRAMES, params) for i in range(FRAMES)])
        contrast = (m.labels == CONTRAST_CATHETER).any(axis=(1, 2))
        empty = (m.labels == CATHETER).any(axis=(1, 2))
        np.testing.assert_array_equal(contrast, filled)
        np.testing.assert_array_equal(empty, ~filled)
        assert contrast.any() and empty.any()
        # one injection: a single run of contrast-catheter frames, empty at the end
        assert np.count_nonzero(np.diff(contrast.astype(int)) == 1) <= 1 and not contrast[-1]
        # the filled catheter is darker than the empty one
        dark_filled = np.mean([m.frames[t][m.labels[t] == CONTRAST_CATHETER].mean()
                               for t in np.flatnonzero(contrast)])
        dark_empty = np.mean([m.frames[t][m.labels[t] == CATHETER].mean()
                              for t in np.flatnonzero(empty)])
        assert dark_empty - dark_filled > 10


def test_empty_catheter_lumen_is_lighter_than_its_wall():
    config = SyntheticConfig(size=256, frames=20, seed=1, scheme="mosxav", noise=False)
    seq = generate_sequence(config)
    params = draw_scene_params(config, np.random.default_rng(
        np.random.SeedSequence(1).spawn(1)[0]))
    t_empty = FRAMES - 1
    t_full = next(i for i in range(FRAMES) if catheter_filled((i + 0.5) / FRAMES, params))
    depth = {}
    # away from the tree: the catheter tip lies over the (wide) stem, whose residual
    # contrast would darken the lumen there
    tree = ndi.binary_dilation((seq.labels == VESSEL).any(axis=0), iterations=3)
    for t in (t_empty, t_full):
        cath = np.isin(seq.labels[t], (2, 3)) & ~tree
        inside = ndi.distance_transform_edt(cath)
        frame = seq.frames[t].astype(float)
        # centre (deepest pixels) minus the rim just inside the wall
        depth[t] = frame[inside >= inside.max() - 0.5].mean() - frame[(inside > 1)
                                                                      & (inside <= 2)].mean()
    assert depth[t_empty] > depth[t_full]
