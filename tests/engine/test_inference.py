"""Sampling: reproducible for a seed, uncertainty where samples disagree, any frame size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_testdata import TINY

from napari_diffseg.engine.inference import (
    Cancelled,
    SegmentOptions,
    class_argmax,
    segment,
    uncertainty_from_samples,
)
from napari_diffseg.model import DiffSegNet, ModelConfig

NORM = {"method": "percentile", "low": 1.0, "high": 99.0}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DiffSegNet(ModelConfig(**{**TINY.to_dict(), "num_classes": 3})).eval()


def _frames(t=3, h=40, w=52):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (t, h, w), dtype=np.uint8)


def test_segment_shapes_any_size_and_dtype(model):
    frames = _frames(h=40, w=52).astype(np.uint16) * 200  # not multiples of 4; 16-bit
    seg = segment(model, frames, normalisation=NORM, timesteps=10,
                  options=SegmentOptions(steps=2, samples=3, batch_size=2))
    assert seg.probabilities.shape == (3, 3, 40, 52)
    assert seg.labels.shape == (3, 40, 52) and seg.labels.dtype == np.uint8
    assert seg.entropy.shape == seg.mutual_information.shape == (3, 40, 52)
    assert seg.frame_scores.shape == (3,)
    np.testing.assert_allclose(seg.probabilities.astype(np.float32).sum(axis=1), 1, atol=5e-3)
    assert np.all(seg.mutual_information >= 0)
    assert np.all(seg.mutual_information <= seg.entropy + 1e-5)


def test_segment_is_reproducible_for_a_seed(model):
    frames = _frames()
    opts = SegmentOptions(steps=2, samples=2, seed=3)
    a = segment(model, frames, normalisation=NORM, timesteps=10, options=opts)
    b = segment(model, frames, normalisation=NORM, timesteps=10, options=opts)
    c = segment(model, frames, normalisation=NORM, timesteps=10,
                options=SegmentOptions(steps=2, samples=2, seed=4))
    np.testing.assert_array_equal(a.probabilities, b.probabilities)
    assert not np.array_equal(a.probabilities, c.probabilities)


def test_mutual_information_is_high_where_samples_disagree():
    agree = torch.tensor([0.9, 0.1])
    samples = torch.empty(1, 4, 2, 2, 2)
    samples[..., 0] = agree[None, None, :, None]  # column 0: all samples say class 0
    samples[0, :2, :, :, 1] = torch.tensor([0.9, 0.1])[:, None]  # column 1: 2 vs 2
    samples[0, 2:, :, :, 1] = torch.tensor([0.1, 0.9])[:, None]
    mean, entropy, mi = uncertainty_from_samples(samples)
    assert mi[0, :, 0].abs().max() < 1e-6
    assert mi[0, :, 1].min() > 0.3
    assert torch.all(entropy[0, :, 1] > entropy[0, :, 0])
    assert torch.allclose(mean[0, :, :, 1], torch.full((2, 2), 0.5))


def test_segmentation_can_be_cancelled(model):
    calls = []
    with pytest.raises(Cancelled):
        segment(model, _frames(t=6), normalisation=NORM, timesteps=10,
                options=SegmentOptions(steps=1, samples=1, batch_size=2),
                progress=lambda done, total: calls.append(done),
                should_stop=lambda: len(calls) >= 1)
    assert calls == [2]


def test_iter_segment_streams_chunks_for_chosen_frames(model):
    from napari_diffseg.engine.inference import iter_segment

    frames = _frames(t=5)
    opts = SegmentOptions(steps=2, samples=2, batch_size=2, seed=1)
    chunks = list(iter_segment(model, frames, normalisation=NORM, timesteps=10, options=opts,
                               indices=[4, 1, 3]))
    assert [c.indices.tolist() for c in chunks] == [[4, 1], [3]]
    assert [c.done for c in chunks] == [2, 3] and chunks[-1].total == 3
    first = chunks[0]
    assert first.labels.shape == (2, 40, 52) and first.class_scores.shape == (2, 3)
    # the frame is normalised with the whole video's range: same result alone or in the run
    alone = next(iter_segment(model, frames, normalisation=NORM, timesteps=10,
                              options=SegmentOptions(steps=2, samples=2, batch_size=1, seed=1),
                              indices=[4]))
    np.testing.assert_allclose(alone.probabilities.astype(np.float32),
                               first.probabilities[:1].astype(np.float32), atol=2e-3)


@pytest.mark.parametrize("review", [{"samples": 2}, {"tta": 3}])
def test_a_frame_gets_the_same_answer_alone_or_anywhere_in_a_run(model, review):
    """Each frame draws from its own random stream: frame 3 of a video gets the same
    probabilities whether it is segmented alone, in a range or in the whole video, in any
    batch size (the dock segments the current frame, a range or all; evaluate scores only
    the annotated frames)."""
    from napari_diffseg.engine.inference import iter_segment

    frames = _frames(t=5)

    def frame3(indices, batch_size):
        opts = SegmentOptions(steps=2, seed=7, batch_size=batch_size, **review)
        for chunk in iter_segment(model, frames, normalisation=NORM, timesteps=10,
                                  options=opts, indices=indices):
            if 3 in chunk.indices.tolist():
                return chunk.probabilities[chunk.indices.tolist().index(3)].astype(np.float32)

    alone = frame3([3], 1)
    for indices, batch_size in [(None, 1), (None, 2), (None, 5), ([1, 3], 2), ([4, 0, 3], 3)]:
        np.testing.assert_allclose(frame3(indices, batch_size), alone, atol=2e-3)
    other_seed = next(iter_segment(model, frames, normalisation=NORM, timesteps=10,
                                   options=SegmentOptions(steps=2, seed=8, **review),
                                   indices=[3]))
    assert np.abs(other_seed.probabilities[0].astype(np.float32) - alone).max() > 1e-2


def test_iter_segment_rejects_bad_indices(model):
    from napari_diffseg.engine.inference import iter_segment

    with pytest.raises(ValueError, match="0..2"):
        next(iter_segment(model, _frames(), normalisation=NORM, timesteps=10, indices=[3]))


def test_class_scores_cover_plausible_pixels_only():
    from napari_diffseg.engine.inference import class_scores

    probs = np.zeros((1, 3, 2, 2), np.float32)
    probs[0, 0] = 1.0
    probs[0, :, 0, 0] = [0.5, 0.5, 0.0]  # class 1 plausible at one pixel only
    entropy = np.array([[[0.7, 0.0], [0.0, 0.0]]], np.float32)
    scores = class_scores(probs, entropy)
    assert scores[0, 1] == pytest.approx(0.7)
    assert scores[0, 0] == pytest.approx(0.175)
    assert np.isnan(scores[0, 2])


def test_cancel_is_noticed_between_sampling_steps(model):
    from napari_diffseg.engine.inference import iter_segment

    calls = []

    def stop_after_first_step():
        calls.append(1)
        return len(calls) > 1  # the batch check passes, the first DDIM step stops it

    with pytest.raises(Cancelled):
        next(iter_segment(model, _frames(), normalisation=NORM, timesteps=10,
                          options=SegmentOptions(steps=4, samples=1, batch_size=3),
                          should_stop=stop_after_first_step))
    assert len(calls) == 2


def test_sample_chunking_does_not_change_the_result(model, monkeypatch):
    """On a CPU the (frame, sample) rows run in cache-sized chunks with the mean and entropy
    accumulated chunk by chunk; the result must be the one of all rows at once."""
    import napari_diffseg.engine.inference as inference

    frames = _frames(t=3)
    opts = SegmentOptions(steps=2, samples=3, seed=2, batch_size=3)
    monkeypatch.setattr(inference, "CPU_CHUNK_PIXELS", 10**9)  # all 9 rows at once
    whole = segment(model, frames, normalisation=NORM, timesteps=10, options=opts)
    monkeypatch.setattr(inference, "CPU_CHUNK_PIXELS", 2 * 48 * 64)  # 2 padded rows a chunk
    chunked = segment(model, frames, normalisation=NORM, timesteps=10, options=opts)
    np.testing.assert_allclose(chunked.probabilities.astype(np.float32),
                               whole.probabilities.astype(np.float32), atol=1e-3)
    np.testing.assert_allclose(chunked.entropy, whole.entropy, atol=1e-5)
    np.testing.assert_allclose(chunked.mutual_information, whole.mutual_information, atol=1e-5)
    assert (chunked.mutual_information > 1e-4).any()  # the samples do differ


def test_streamed_labels_and_scores_match_the_numpy_definitions(model):
    """iter_segment computes labels, frame and class scores in torch from float32; they must
    be what frame_scores / class_scores / argmax give on the float16 arrays it returns."""
    from napari_diffseg.engine.inference import class_scores, frame_scores, iter_segment

    chunk = next(iter_segment(model, _frames(t=2), normalisation=NORM, timesteps=10,
                              options=SegmentOptions(steps=2, samples=3, batch_size=2)))
    probs = chunk.probabilities
    agree = (chunk.labels == probs.argmax(axis=1)).mean()
    assert agree > 0.999  # float16 rounding may flip an exact tie
    np.testing.assert_allclose(chunk.frame_scores, frame_scores(probs, chunk.entropy), rtol=1e-3)
    np.testing.assert_allclose(chunk.class_scores, class_scores(probs, chunk.entropy),
                               rtol=1e-2, atol=1e-4)


@pytest.mark.parametrize("flag", ["channels_last", "compile"])
def test_channels_last_and_compile_give_the_same_segmentation(flag):
    """The GPU speed options must not change the result (checked on the CPU: compile builds
    with the C++ toolchain here, about 20 s)."""
    if flag == "compile":
        import shutil

        if shutil.which("g++") is None and shutil.which("cc") is None:
            pytest.skip("torch.compile needs a C++ compiler on the CPU")
    torch.manual_seed(0)
    net = DiffSegNet(ModelConfig(**{**TINY.to_dict(), "num_classes": 3})).eval()
    frames = _frames(t=2)
    # in fp32: bf16 roundings depend on the layout's order of accumulation (bf16 against
    # fp32 is test_bf16_labels_agree_with_fp32_and_keep_the_dice)
    base = SegmentOptions(steps=2, samples=2, seed=1, precision="fp32")
    ref = segment(net, frames, normalisation=NORM, timesteps=10, options=base)
    fast = segment(net, frames, normalisation=NORM, timesteps=10,
                   options=SegmentOptions(**{**base.__dict__, flag: True}))
    np.testing.assert_allclose(fast.probabilities.astype(np.float32),
                               ref.probabilities.astype(np.float32), atol=2e-3)
    assert (fast.labels == ref.labels).mean() > 0.999


def test_dihedral_views_invert_and_are_distinct():
    from napari_diffseg.engine.uncertainty import DIHEDRAL, dihedral, dihedral_inverse

    x = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(2, 3, 5)
    seen = set()
    for view in range(len(DIHEDRAL)):
        y = dihedral(x, view)
        assert torch.equal(dihedral_inverse(y, view), x)
        seen.add(tuple(y.flatten().tolist()))
    assert len(seen) == len(DIHEDRAL)


def test_expected_dice_error_known_values():
    from napari_diffseg.engine.uncertainty import expected_dice_error, expected_dice_frame_score

    mean = torch.zeros(2, 3, 10, 10)
    mean[:, 0] = 1.0
    # frame 0: class 1 certain on 20 px -> error 0; class 2 absent
    mean[0, :, :2] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]
    # frame 1: class 1 at 0.6 (argmax) on 20 px, the rest background:
    # soft Dice = 2 * 12 / (12 + 20) = 0.75
    mean[1, :, :2] = torch.tensor([0.4, 0.6, 0.0])[:, None, None]
    err = expected_dice_error(mean)
    assert torch.isnan(err[:, 0]).all() and torch.isnan(err[:, 2]).all()
    assert err[0, 1] == pytest.approx(0.0, abs=1e-6)
    assert err[1, 1] == pytest.approx(0.25, abs=1e-6)
    torch.testing.assert_close(expected_dice_frame_score(err), torch.tensor([0.0, 0.25]))


def test_test_time_augmentation_and_new_maps(model):
    frames = _frames(t=2, h=40, w=52)  # not square: quarter turns swap H and W
    opts = SegmentOptions(tta=4, seed=1, class_disagreement=True,
                          uncertainty_map="disagreement", frame_score="expected_dice")
    seg = segment(model, frames, normalisation=NORM, timesteps=10, options=opts)
    assert seg.probabilities.shape == (2, 3, 40, 52)
    assert seg.class_disagreement.shape == (2, 3, 40, 52)
    assert seg.uncertainty.shape == (2, 40, 52)
    np.testing.assert_allclose(seg.uncertainty,
                               seg.class_disagreement.astype(np.float32).max(axis=1), atol=2e-3)
    assert seg.expected_dice.shape == (2, 3) and np.isnan(seg.expected_dice[:, 0]).all()
    np.testing.assert_allclose(seg.frame_scores, np.nanmean(seg.expected_dice, axis=1),
                               rtol=1e-5)
    assert (seg.mutual_information > 1e-4).any()  # the views differ
    # one view, no jitter, is the plain 1-step, 1-sample segmentation with the same noise
    one = segment(model, frames, normalisation=NORM, timesteps=10,
                  options=SegmentOptions(tta=1, seed=5))
    plain = segment(model, frames, normalisation=NORM, timesteps=10,
                    options=SegmentOptions(steps=1, samples=1, seed=5))
    np.testing.assert_allclose(one.probabilities.astype(np.float32),
                               plain.probabilities.astype(np.float32), atol=2e-3)


def test_temperature_flattens_the_probabilities(model):
    frames = _frames(t=1)
    base = SegmentOptions(steps=1, samples=1, seed=0)
    ref = segment(model, frames, normalisation=NORM, timesteps=10, options=base)
    hot = segment(model, frames, normalisation=NORM, timesteps=10,
                  options=SegmentOptions(steps=1, samples=1, seed=0, temperature=2.0))
    assert (hot.labels == ref.labels).mean() > 0.999  # T does not move a single pass's argmax
    assert hot.entropy.mean() > ref.entropy.mean()
    with pytest.raises(ValueError, match="temperature"):
        SegmentOptions(temperature=0)
    with pytest.raises(ValueError, match="frame_score"):
        SegmentOptions(frame_score="nope")


def test_class_argmax_is_argmax_over_the_classes_first_on_ties():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand((3, 5, 37, 41), generator=g).softmax(dim=1)
    torch.testing.assert_close(class_argmax(probs), probs.argmax(dim=1))
    tied = torch.zeros((1, 4, 6, 6))
    tied[:, 1:3] = 0.5  # classes 1 and 2 equal everywhere: the first wins, as argmax says
    tied[:, 3, 0, 0] = 0.9
    expected = torch.ones((1, 6, 6), dtype=torch.long)
    expected[0, 0, 0] = 3
    torch.testing.assert_close(class_argmax(tied), expected)
