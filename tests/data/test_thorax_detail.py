"""The wide style's lung strands and surgical clips (SyntheticConfig.thorax_detail)."""

import dataclasses

import numpy as np
from skimage.filters import sato

from napari_diffseg.data import SyntheticConfig, generate_sequence
from napari_diffseg.data.anatomy import CLIP_PROBABILITY, build_anatomy
from napari_diffseg.data.config import draw_scene_params


def _frames(seed: int, detail: bool, size: int = 128, frames: int = 1):
    return generate_sequence(SyntheticConfig(size=size, frames=frames, seed=seed, noise=False,
                                             degrade=0, thorax_detail=detail))


def test_the_detail_is_drawn_on_top_of_the_earlier_background():
    """thorax_detail only adds attenuation on top of the background as drawn before (the
    bundled model's fixed held-out videos use False): the spine layer is the same, the thorax
    layer differs by a non-negative amount, and the labels of a seed are unchanged."""
    for seed in range(3):
        config = SyntheticConfig(size=128, frames=1, seed=seed)
        params = draw_scene_params(config, np.random.default_rng(seed))
        layers = {}
        for detail in (False, True):
            p = dataclasses.replace(params, thorax_detail=detail)
            layers[detail] = build_anatomy(np.random.default_rng(seed + 100), p,
                                           np.array([64.0, 64.0]), pad=4)
        np.testing.assert_array_equal(layers[True].spine, layers[False].spine)
        added = layers[True].thorax - layers[False].thorax
        assert added.min() >= 0.0 and added.max() > 0.0
        plain, detailed = _frames(seed, False, frames=3), _frames(seed, True, frames=3)
        np.testing.assert_array_equal(detailed.labels, plain.labels)
        assert not np.array_equal(detailed.frames, plain.frames)


def test_strands_are_dark_ridges_where_the_lungs_are():
    """The added background shows as thin dark ridges: the black-ridge filter's response over
    the background rises, most where the frame is bright (the lung fields)."""
    gains, bright_gains = [], []
    for seed in range(8):
        plain = _frames(seed, False, size=192)
        detailed = _frames(seed, True, size=192)
        a = plain.frames[0].astype(np.float32)
        b = detailed.frames[0].astype(np.float32)
        background = plain.labels[0] == 0
        ra = sato(a / 255.0, sigmas=(1, 2), black_ridges=True)
        rb = sato(b / 255.0, sigmas=(1, 2), black_ridges=True)
        gains.append(rb[background].mean() - ra[background].mean())
        bright = background & (a > np.percentile(a[background], 75))
        bright_gains.append(rb[bright].mean() - ra[bright].mean())
    assert np.mean(gains) > 0
    assert np.mean(bright_gains) > np.mean(gains)


def test_clips_show_in_about_a_third_of_the_scenes():
    """Clips are dense: a compact spot far darker than any strand. Over 30 scenes the share
    with one is near CLIP_PROBABILITY (a fixed draw, so the test is deterministic)."""
    with_clips = 0
    for seed in range(30):
        a = _frames(seed, False).frames[0].astype(np.float32)
        b = _frames(seed, True).frames[0].astype(np.float32)
        with_clips += int((a - b).max() > 40)
    assert abs(with_clips / 30 - CLIP_PROBABILITY) < 0.2, with_clips
