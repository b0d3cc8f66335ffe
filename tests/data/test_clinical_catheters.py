"""The wide style's guiding catheters as clinical cines show them
(SyntheticConfig.clinical_catheters): faint, wider lumens and J-shaped loops."""
import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from napari_diffseg.data import SyntheticConfig, generate_sequence
from napari_diffseg.data.config import FAINT_CATHETERS, draw_scene_params
from napari_diffseg.data.synthetic import _draw_scene, _streams

CATHETER = 2
SEEDS = range(900, 920)


def _params(config: SyntheticConfig):
    return draw_scene_params(config, _streams(config.seed)[0][0])


def _scene(config: SyntheticConfig):
    return _draw_scene(config, _streams(config.seed)[0])


def _faint(seed: int) -> bool:
    config = SyntheticConfig(size=512, seed=seed)
    return _params(config).catheter_iodine < 1.0


def _make(seed: int, clinical: bool, size: int = 256, frames: int = 3):
    return generate_sequence(SyntheticConfig(size=size, frames=frames, seed=seed,
                                             difficulty=0.3, noise=False, degrade=0,
                                             clinical_catheters=clinical))


@pytest.fixture(scope="module")
def faint_pairs():
    return [(s, _make(s, True), _make(s, False)) for s in SEEDS if _faint(s)]


def test_a_share_of_scenes_has_faint_catheters_and_nothing_else_changes(faint_pairs):
    expected = FAINT_CATHETERS * len(SEEDS)
    assert 0.5 * expected <= len(faint_pairs) <= 1.6 * expected
    # a scene without a faint catheter or a J loop is exactly the scene of before
    for seed in (s for s in SEEDS if not _faint(s)):
        if _params(SyntheticConfig(size=256, seed=seed)).catheter_side == "top":
            continue
        on, off = _make(seed, True, frames=1), _make(seed, False, frames=1)
        assert np.array_equal(on.frames, off.frames) and np.array_equal(on.labels, off.labels)
    for seed, on, off in faint_pairs:
        if _params(SyntheticConfig(size=256, seed=seed)).catheter_side == "top":
            continue  # a J loop may change the guidewire's path too
        # tree, wire and background are the same scene; the catheter's pixels (either
        # version's, it may be wider) are all that differ
        either = (on.labels == CATHETER) | (off.labels == CATHETER)
        assert np.array_equal(on.labels[~either], off.labels[~either])
        cath = ndimage.binary_dilation(either, iterations=3, axes=(1, 2))
        diff = np.abs(on.frames.astype(int) - off.frames.astype(int))
        # (the detector blur's tails reach a little further: a grey level or two)
        assert diff[~cath].max() <= 3 and diff[~cath].mean() < 0.05


def test_faint_catheters_hold_the_same_diluted_lumen_in_every_frame(faint_pairs):
    for _seed, on, _off in faint_pairs:
        mask = on.labels == CATHETER
        inside = [float(on.frames[t][mask[t]].mean()) for t in range(3)]
        # the faint lumen looks the same before, during and after the bolus
        assert max(inside) - min(inside) < 8


def test_faint_catheters_are_diluted_against_the_vessels():
    for seed in range(900, 960):
        config = SyntheticConfig(size=512, seed=seed)
        params = _params(config)
        before = _params(dataclasses.replace(config, clinical_catheters=False))
        if params.catheter_iodine == before.catheter_iodine:
            assert before.catheter_iodine >= 1.3  # undiluted: darker than the vessels
            continue
        assert 0.3 <= params.catheter_iodine <= 0.9  # of the vessels' peak concentration
        assert params.catheter_residual == 1.0
        assert 6.0 <= 2 * params.catheter_radius <= 11.0
        assert dataclasses.replace(params, catheter_iodine=before.catheter_iodine,
                                   catheter_residual=before.catheter_residual,
                                   catheter_radius=before.catheter_radius,
                                   clinical_catheters=False) == before


def test_faint_catheters_reach_the_width_of_clinical_guiding_catheters():
    widths = []
    for seed in (906, 920, 921, 936):  # faint ones among 900..939 (6.4, 10.4, 9.5, 10.8 px)
        assert _faint(seed)
        on = generate_sequence(SyntheticConfig(size=512, frames=1, seed=seed, noise=False,
                                               degrade=0))
        depth = ndimage.distance_transform_edt(on.labels[0] == CATHETER)
        widths.append(2 * float(np.percentile(depth[depth > 0], 99)))
    # 6..11 px at 512, against 6..8.5 px drawn before
    assert max(widths) > 9.5
    assert min(widths) < 7.5


def _loop_shape(config: SyntheticConfig):
    """(depth of the catheter's lowest point below the ostium, the tip's approach angle from
    below in degrees: 0 straight up into the ostium, 90 sideways) of a top-entry scene."""
    scene = _scene(config)
    pts = scene.catheter.points
    ostium = pts[-1]
    depth = (pts[:, 0].max() - ostium[0]) / config.shape[0]
    step = pts[-1] - pts[-max(len(pts) // 8, 2)]
    return depth, float(np.degrees(np.arctan2(abs(step[1]), -step[0])))


def test_some_top_loops_are_wide_shallow_js_approaching_from_the_side():
    on, off = [], []
    for seed in range(0, 40):
        for clinical, out in ((True, on), (False, off)):
            config = SyntheticConfig(size=256, seed=seed, catheter_side="top",
                                     clinical_catheters=clinical)
            out.append(_loop_shape(config))
    on, off = np.array(on), np.array(off)
    # before: the U loops (60 % of the top entries) came straight up into the ostium from
    # below; the rest come down into it from above
    loops = off[:, 1] < 20
    assert 0.4 < loops.mean() < 0.8
    assert np.all(off[~loops, 1] > 90)
    # scenes without a loop keep their path (up to a wider faint catheter's margin)
    assert np.all(np.abs(on[~loops] - off[~loops]) < (0.03, 5))
    js = loops & (on[:, 1] > 30)
    assert 0.25 * loops.sum() <= js.sum() <= 0.75 * loops.sum()
    # a J sweeps in from the side, shallower than the U it replaces
    assert np.all(on[js, 0] < 0.2) and np.all(on[js, 0] < off[js, 0])
    assert np.median(on[js, 1]) > 40
