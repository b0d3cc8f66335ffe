"""Speck removal keeps structures and drops isolated pixels of a class."""

from __future__ import annotations

import numpy as np
import pytest

from napari_diffseg.engine.postprocess import min_component_pixels, remove_specks


def test_specks_go_and_thin_long_structures_stay():
    labels = np.zeros((2, 128, 128), np.uint8)
    labels[:, 10:110, 64] = 3        # a 1 px wide, 100 px long wire: one component
    labels[:, 40:44, 20:24] = 1      # a 16 px vessel speck
    labels[1, 90:93, 90:93] = 2      # a 9 px catheter speck
    out = remove_specks(labels, min_component=400)  # 400 px at 512² = 25 px at 128²
    assert (out[:, 10:110, 64] == 3).all()
    assert not (out == 1).any() and not (out == 2).any()
    assert (remove_specks(labels, 0) == labels).all()
    assert labels[0, 41, 21] == 1  # the input is not modified


def test_the_threshold_scales_with_the_frame_area():
    assert min_component_pixels(64, (512, 512)) == 64
    assert min_component_pixels(64, (1024, 1024)) == 256
    assert min_component_pixels(64, (64, 64)) == 1


# -- the guidewire the contrast bolus hides -------------------------------------------------
from napari_diffseg.data import DEFAULT_CLASSES, SyntheticConfig, generate_sequence  # noqa: E402
from napari_diffseg.engine.postprocess import (  # noqa: E402
    consecutive_runs,
    drop_unseen_wire,
    hidden_wire_classes,
    keep_hidden_wire,
    track_wire,
    track_wire_runs,
)

WIRE, VESSEL = 3, 1


def _bolus_video(before=3, during=4, after=3, size=128):
    """Labels as a model gives them: a 1 px wire seen in the frames before and after the
    bolus; during it a 9 px wide vessel covers the wire's left half, and the model, seeing
    only dark iodine there, labels that half vessel (the right half stays wire)."""
    n = before + during + after
    labels = np.zeros((n, size, size), np.uint8)
    labels[:, 20:110, 60] = WIRE
    for t in range(before, before + during):
        labels[t, 20:110, 56:65] = VESSEL
        labels[t, 20:70, 60] = VESSEL   # the hidden half
        labels[t, 70:110, 60] = WIRE    # the half outside the contrast, still seen
    return labels


def test_the_wire_hidden_by_the_bolus_is_kept_inside_the_vessel_only():
    labels = _bolus_video()
    out = keep_hidden_wire(labels, WIRE, VESSEL)
    for t in range(3, 7):
        # the hidden half is back (but for the pixel next to the wire the frame shows: that
        # is the same wire, within WIRE_GAP)
        assert (out[t, 20:69, 60] == WIRE).all(), t
        assert (out[t, 70:110, 60] == WIRE).all()
        assert 89 <= np.count_nonzero(out[t] == WIRE) <= 90  # one 1 px line, nothing else
        assert (out[t, 20:110, 56:60] == VESSEL).all()  # the rest of the vessel stays
    assert (out[:3] == labels[:3]).all() and (out[7:] == labels[7:]).all()
    assert (labels[4, 20:70, 60] == VESSEL).all()  # the input is not modified


def test_a_wire_not_seen_on_both_sides_or_too_short_is_not_carried():
    labels = _bolus_video()
    # seen before the bolus only (the video ends while the contrast is in)
    cut = labels[:7]
    assert (keep_hidden_wire(cut, WIRE, VESSEL) == cut).all()
    # a short false wire (40 px at 128 px = 640 at 512, but 10 px = 160 at 512 < 200)
    short = np.zeros_like(labels)
    short[:, 30:40, 60] = WIRE
    short[3:7, 28:42, 56:65] = VESSEL
    assert (keep_hidden_wire(short, WIRE, VESSEL) == short).all()
    # fewer than 3 frames, or a frame alone
    assert (keep_hidden_wire(labels[:2], WIRE, VESSEL) == labels[:2]).all()
    assert (keep_hidden_wire(labels[4], WIRE, VESSEL) == labels[4]).all()


def test_hidden_wire_classes_come_from_the_class_names():
    assert hidden_wire_classes(DEFAULT_CLASSES) == (3, 1)
    assert hidden_wire_classes({0: "background", 1: "Vessel", 5: "Guidewire"}) == (5, 1)
    assert hidden_wire_classes({0: "background", 1: "vessel", 2: "catheter"}) is None


def test_on_a_generated_video_the_hidden_wire_comes_back():
    """The generator labels the wire inside the contrast-filled lumen, where no frame shows
    it. Labels as a model gives them (the wire pixels inside the vessel called vessel in the
    frames full of contrast) regain most of that wire, and nothing off the wire."""
    cfg = SyntheticConfig(size=256, frames=20, seed=200_003, guidewire=True)
    seq = generate_sequence(cfg)
    truth = seq.labels
    from scipy import ndimage
    model = truth.copy()
    vessel_area = (truth == VESSEL).sum(axis=(1, 2))
    full = vessel_area > 0.5 * vessel_area.max()
    hidden = np.zeros_like(truth, dtype=bool)
    for t in np.flatnonzero(full):
        inside = (truth[t] == WIRE) & ndimage.binary_dilation(truth[t] == VESSEL, iterations=2)
        model[t][inside] = VESSEL
        hidden[t] = inside
    assert full.sum() >= 4 and hidden.sum() > 200  # the test has something to find
    out = keep_hidden_wire(model, WIRE, VESSEL)
    back = (out == WIRE) & hidden
    assert back.sum() > 0.4 * hidden.sum()  # 56 % measured
    added = (out == WIRE) & (model != WIRE)
    near_truth = ndimage.binary_dilation(truth == WIRE, iterations=3, structure=np.ones((1, 3, 3)))
    assert (added & ~near_truth).sum() < 0.05 * added.sum()  # 0 measured


def test_a_wire_no_frame_shows_outside_the_vessel_becomes_vessel():
    """The network sometimes draws a wire along the centreline of a contrast-filled vessel
    in a video without any (its training labels put wires in lumens). No frame shows such
    a wire outside the vessel; a real one is seen outside it before the bolus."""
    guess = np.zeros((6, 128, 128), np.uint8)
    guess[:, 20:110, 56:65] = VESSEL
    guess[2:5, 30:100, 60] = WIRE            # only ever inside the vessel
    guess[3, 100:104, 70] = WIRE              # 4 px outside: 64 at 512, under the 100
    out = drop_unseen_wire(guess, WIRE, VESSEL)
    assert not (out == WIRE).any()
    assert (out[2:5, 30:100, 60] == VESSEL).all() and (out[3, 100:104, 70] == 0).all()
    assert (guess[2, 30:100, 60] == WIRE).all()  # the input is not modified
    # a wire seen outside the vessel in one frame (90 px, over 100 at 512 = 6 px at 128)
    real = guess.copy()
    real[0, 20:110, 100] = WIRE
    assert (drop_unseen_wire(real, WIRE, VESSEL) == real).all()
    # the bolus video's wire is seen outside the vessel before the bolus: tracking keeps it
    # and restores its hidden half
    bolus = _bolus_video()
    assert (track_wire(bolus, WIRE, VESSEL) == keep_hidden_wire(bolus, WIRE, VESSEL)).all()
    assert (drop_unseen_wire(guess[:2], WIRE, VESSEL) == guess[:2]).all()  # too few frames


def test_wire_tracking_runs_over_each_run_of_consecutive_frames():
    assert consecutive_runs([6, 0, 1, 2, 5]) == [[0, 1, 2], [5, 6]]
    labels = np.concatenate([_bolus_video(), _bolus_video()])  # frames 0-9 and 10-19
    # a segmentation of every frame but 12: in 0-11 frames 3-6 regain their wire; 13-19 is
    # a run of its own that starts inside the bolus, with no whole wire to carry
    changed = track_wire_runs(labels, [i for i in range(20) if i != 12], WIRE, VESSEL)
    assert sorted(changed) == [3, 4, 5, 6]
    assert sorted(track_wire_runs(labels, range(20), WIRE, VESSEL)) == [3, 4, 5, 6, 13, 14,
                                                                         15, 16]
    assert all((changed[t][20:69, 60] == WIRE).all() for t in changed)


def test_the_users_frames_are_evidence_for_the_wire_and_stay_as_they_are():
    """Frames the user verified or painted join the runs as evidence and are never changed."""
    labels = _bolus_video()  # the wire is whole in frames 0-2 and 7-9, half hidden in 3-6
    # only the bolus frames were segmented: alone they show no wire outside the vessel
    # (it is dropped) and none to carry
    alone = track_wire_runs(labels, range(3, 7), WIRE, VESSEL)
    assert not any((new == WIRE).any() for new in alone.values())
    # with the user's frames 2 and 7 beside them, the hidden half comes back in 3-6
    changed = track_wire_runs(labels, range(3, 7), WIRE, VESSEL, trusted=[2, 7])
    assert sorted(changed) == [3, 4, 5, 6]
    assert all((changed[t][20:69, 60] == WIRE).all() for t in changed)
    # a user's frame inside the run is left as the user made it (here without the hidden
    # half); the carries pass through it to the frames beside it
    changed = track_wire_runs(labels, range(10), WIRE, VESSEL, trusted=[4])
    assert sorted(changed) == [3, 5, 6]
    assert all((changed[t][20:69, 60] == WIRE).all() for t in changed)
    # a wire the user drew, even only inside the vessel, shows that the video has one
    guess = np.zeros((6, 128, 128), np.uint8)
    guess[:, 20:110, 56:65] = VESSEL
    guess[:, 30:100, 60] = WIRE
    assert not (track_wire(guess, WIRE, VESSEL) == WIRE).any()
    assert (track_wire(guess, WIRE, VESSEL, trusted=[5]) == guess).all()
    assert track_wire_runs(guess, range(5), WIRE, VESSEL, trusted=[5]) == {}
    assert sorted(track_wire_runs(guess, range(6), WIRE, VESSEL)) == list(range(6))


# -- vessel that was there before the contrast ---------------------------------------------
from testutils import marking_and_bolus  # noqa: E402

from napari_diffseg.engine.postprocess import (  # noqa: E402
    clean_video,
    clean_video_runs,
    drop_static_vessel,
    drop_static_vessel_runs,
    vessel_class,
)


def _static_video(joined: bool = False, contrast=range(3, 7)):
    """10 frames of 128 px: a dark strand in every frame, a vessel dark only in the
    `contrast` frames (testutils.marking_and_bolus); `joined`: a catheter stretch runs from
    the strand into the tree."""
    frames, labels, strand, lumen = marking_and_bolus(contrast=contrast)
    if joined:
        strand = strand.copy()
        strand[24:60, 30:34] = True
        frames[:, 24:60, 30:34] -= 50
        labels[:, 24:60, 30:34] = 1
    return frames.astype(np.float32), labels, strand, lumen


@pytest.mark.parametrize("joined", [False, True])
def test_vessel_over_what_the_contrast_free_frames_show_goes_and_the_filled_lumen_stays(joined):
    frames, labels, strand, lumen = _static_video(joined)
    out = drop_static_vessel(frames, labels, 1)
    for t in range(10):
        # the strand (or the catheter stretch joined to the tree) is gone in every frame
        assert (out[t][strand & ~lumen] == 1).mean() < 0.05
        if t in range(3, 7):  # the lumen that filled stays
            assert (out[t][lumen] == 1).mean() > 0.95
    assert (labels[0][strand] == 1).all()  # the input is not modified


def test_a_video_with_contrast_in_every_frame_is_left_alone():
    frames, labels, *_ = _static_video(contrast=range(10))
    assert (drop_static_vessel(frames, labels, 1) == labels).all()
    # too short to hold reference frames
    assert (drop_static_vessel(frames[:2], labels[:2], 1) == labels[:2]).all()


class _OneAtATime:
    """A video that hands out single frames only (as a lazily read file does) and counts the
    reads; it cannot be turned into one array."""

    def __init__(self, frames) -> None:
        self.frames, self.reads = frames, []

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, t):
        if not isinstance(t, (int, np.integer)):
            raise TypeError("one frame at a time")
        self.reads.append(int(t))
        return self.frames[t]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole video was asked for at once")


def test_the_static_vessel_step_reads_the_video_one_frame_at_a_time():
    """A long 1024 px cine must not be held as float arrays of the whole video (it was, twice:
    1 GB more than the segmentation itself); the labels are the same as from an array, in
    colour too."""
    frames, labels, *_ = _static_video()
    video = _OneAtATime(frames)
    expected = drop_static_vessel(frames, labels, 1)
    np.testing.assert_array_equal(drop_static_vessel(video, labels, 1), expected)
    assert sorted(set(video.reads)) == list(range(10))
    colour = np.repeat(frames[..., None], 3, axis=-1)
    np.testing.assert_array_equal(drop_static_vessel(colour, labels, 1), expected)
    runs = drop_static_vessel_runs(_OneAtATime(frames), labels, range(10), 1)
    assert sorted(runs) == [t for t in range(10) if (expected[t] != labels[t]).any()]
    with pytest.raises(ValueError, match="differ in shape"):
        drop_static_vessel(frames[:, :64], labels, 1)


def test_static_vessel_runs_leave_the_users_frames_and_report_only_changes():
    frames, labels, strand, lumen = _static_video()
    changed = drop_static_vessel_runs(frames, labels, range(10), 1, trusted=[4])
    assert sorted(changed) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert all((changed[t][strand] == 0).all() for t in changed)
    # only the frames a segmentation wrote (and runs of at least 3) are looked at
    assert sorted(drop_static_vessel_runs(frames, labels, [0, 1, 2, 3, 4, 8], 1)) == [0, 1, 2, 3, 4]


def test_clean_video_runs_drops_static_vessel_then_tracks_the_wire():
    frames, labels, strand, lumen = _static_video()
    classes = dict(DEFAULT_CLASSES)
    assert vessel_class(classes) == 1 and vessel_class({0: "bg", 5: "Vessel"}) == 5
    assert vessel_class({0: "background", 1: "catheter"}) is None
    done = clean_video_runs(frames, labels, range(10), classes)
    assert done.static == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] and sorted(done.changed) == done.static
    assert done.kept_hidden == [] and done.dropped == []
    kept = clean_video_runs(frames, labels, range(10), classes, static=False)
    assert kept.changed == {} and kept.static == []
    assert clean_video_runs(None, labels, range(10), classes).changed == {}  # no frames


def test_clean_video_removes_specks_then_writes_the_whole_video_step_in():
    frames, labels, strand, lumen = _static_video()
    labels[5, 100:103, 100:103] = 2  # a 9 px catheter speck
    classes = dict(DEFAULT_CLASSES)
    out = clean_video(frames, labels, classes, min_component=400)  # 25 px at 128²
    assert (out[5, 100:103, 100:103] == 0).all()  # the speck is gone
    assert all((out[t][strand & ~lumen] == 1).mean() < 0.05 for t in range(10))  # static: gone
    assert (out[3:7][:, lumen] == 1).mean() > 0.95  # the filled lumen stays
    assert labels[5, 101, 101] == 2 and (labels[0][strand] == 1).all()  # input untouched
    kept = clean_video(frames, labels, classes, min_component=400, static=False)
    assert (kept[:, strand] == 1).all() and (kept[5, 100:103, 100:103] == 0).all()
    # apply writes exactly the changed frames
    done = clean_video_runs(frames, labels, range(10), classes)
    copy = labels.copy()
    done.apply(copy)
    assert all((copy[t] == done.changed[t]).all() for t in done.changed)
    assert (copy[4] != labels[4]).any()
