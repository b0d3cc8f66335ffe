"""Label corruption for the noisy-label benchmarks (napari_diffseg.data.corrupt)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_diffseg.data import CORRUPTIONS, corrupt_labels, corrupt_mask


def _mask(size: int = 64, shift: int = 0) -> np.ndarray:
    """(H, W) uint8: a thick vessel blob (1), a catheter bar (2), a 1-px guidewire (3)."""
    m = np.zeros((size, size), dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    m[(yy - 20 - shift) ** 2 + (xx - 20) ** 2 <= 64] = 1
    m[40:46, 10 + shift : 50] = 2
    m[5 + shift : 55, 56] = 3
    return m


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_each_kind_changes_the_mask_and_keeps_shape_and_dtype(kind):
    mask = _mask()
    out, applied = corrupt_mask(mask, np.random.default_rng(0), [kind])
    assert applied == [kind]
    assert out.shape == mask.shape and out.dtype == mask.dtype
    assert not np.array_equal(out, mask)
    assert set(np.unique(out)) <= {0, 1, 2, 3}


def test_same_generator_state_same_corruption():
    a, ka = corrupt_mask(_mask(), np.random.default_rng(42))
    b, kb = corrupt_mask(_mask(), np.random.default_rng(42))
    assert ka == kb and np.array_equal(a, b)


def test_drop_thin_removes_the_wire_and_keeps_the_thick_blob():
    mask = _mask()
    out, _ = corrupt_mask(mask, np.random.default_rng(0), ["drop_thin"])
    assert not (out == 3).any()  # the 1-px guidewire is gone
    assert (out == 1).sum() > 0.8 * (mask == 1).sum()  # the blob mostly stays


def test_shift_moves_the_foreground_by_at_most_max_shift():
    mask = _mask()
    out, _ = corrupt_mask(mask, np.random.default_rng(3), ["shift"], max_shift=2)
    before = np.argwhere(mask == 1).mean(axis=0)
    after = np.argwhere(out == 1).mean(axis=0)
    assert 0 < np.abs(after - before).max() <= 2 + 1e-9


def test_swap_relabels_a_class_without_moving_pixels():
    mask = _mask()
    out, _ = corrupt_mask(mask, np.random.default_rng(1), ["swap"], num_classes=4)
    assert np.array_equal(out != 0, mask != 0)
    assert not np.array_equal(out, mask)


def test_background_only_mask_is_returned_unchanged():
    empty = np.zeros((16, 16), dtype=np.uint8)
    out, applied = corrupt_mask(empty, np.random.default_rng(0))
    assert applied == [] and np.array_equal(out, empty)


def test_corrupt_labels_changes_the_asked_fraction_and_leaves_the_input_alone():
    labels = np.stack([_mask(shift=s % 5) for s in range(20)])
    before = labels.copy()
    out, changed = corrupt_labels(labels, 0.3, np.random.default_rng(0))
    assert len(changed) == 6
    differs = [i for i in range(20) if not np.array_equal(out[i], labels[i])]
    assert differs == changed
    assert np.array_equal(labels, before)


def test_corrupt_labels_accepts_frames_of_several_sizes_and_skips_empty_masks():
    labels = [_mask(64), _mask(72), np.zeros((32, 32), np.uint8), _mask(80)]
    out, changed = corrupt_labels(labels, 1.0, np.random.default_rng(0))
    assert [o.shape for o in out] == [m.shape for m in labels]
    assert changed == [0, 1, 3]


@pytest.mark.parametrize("bad", [{"fraction": 1.5}, {"kinds": ["blur"]}])
def test_invalid_arguments_are_refused(bad):
    with pytest.raises(ValueError):
        if "fraction" in bad:
            corrupt_labels([_mask()], bad["fraction"], np.random.default_rng(0))
        else:
            corrupt_mask(_mask(), np.random.default_rng(0), bad["kinds"])
