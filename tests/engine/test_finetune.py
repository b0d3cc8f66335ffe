"""Fine-tuning data from the GUI's state, and training in a child process that can be stopped,
paused and killed (real spawned processes on tiny frames and a tiny model)."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from engine_testdata import TINY

from napari_diffseg.data import SyntheticConfig, generate_sequence
from napari_diffseg.data.sequences import DEFAULT_NORMALISATION
from napari_diffseg.engine.checkpoint import (
    Checkpoint,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from napari_diffseg.engine.finetune import (
    OOM_MESSAGE,
    FinetuneProcess,
    FinetuneRequest,
    build_finetune_data,
    error_event,
    finetune_request,
    held_out_frames,
    last_path,
    run_finetune,
)
from napari_diffseg.engine.training import TrainOptions, context_frames_for, validation_dice
from napari_diffseg.model import DiffSegNet, ModelConfig

FRAMES, SIZE = 8, 32


@pytest.fixture(scope="module")
def video():
    """A synthetic (T, H, W) uint8 video with its (T, H, W) uint8 labels and class names."""
    return generate_sequence(SyntheticConfig(size=SIZE, frames=FRAMES, seed=3, guidewire=False))


@pytest.fixture(scope="module")
def data(video):
    return build_finetune_data(video.frames, video.labels, [0, 3, 6], classes=video.classes)[0]


@pytest.fixture(scope="module")
def init_path(tmp_path_factory, video) -> str:
    """A checkpoint of an untrained tiny model that predicts the video's classes."""
    cfg = ModelConfig(**{**TINY.to_dict(), "num_classes": 4})
    torch.manual_seed(0)
    ckpt = Checkpoint(cfg.to_dict(), DiffSegNet(cfg).state_dict(), video.classes,
                      dict(DEFAULT_NORMALISATION), {"timesteps": 4})
    return str(save_checkpoint(tmp_path_factory.mktemp("init") / "init.pt", ckpt))


def options(**kw) -> TrainOptions:
    base = {"iterations": 4, "batch_size": 2, "crop_size": SIZE, "device": "cpu",
            "timesteps": 4, "pseudo_steps": 1, "pseudo_samples": 1, "val_every": 0,
            "val_steps": 1}
    return TrainOptions(**{**base, **kw})


def watched(job: FinetuneProcess, limit: float = 60.0) -> Iterator[dict]:
    """job.events(), but a hang ends in a forced kill (and a failing test) after `limit` s."""
    watchdog = threading.Timer(limit, job.kill, kwargs={"timeout": 0.0})
    watchdog.start()
    try:
        yield from job.events(poll=0.05)
    finally:
        watchdog.cancel()


def weights(ckpt: Checkpoint) -> torch.Tensor:
    return torch.cat([v.flatten().float() for v in ckpt.state_dict.values()])


# -- build_finetune_data -------------------------------------------------------------------
def test_verified_frames_are_labelled_and_the_others_unlabelled(video):
    extra = np.random.default_rng(0).integers(0, 4000, (3, 40, 36), dtype=np.uint16)
    rgb = np.repeat(video.frames[..., None], 3, axis=-1)
    no_background = {k: v for k, v in video.classes.items() if k != 0}
    train, val = build_finetune_data(rgb, video.labels, [5, 1, 5], classes=no_background,
                                     extra_unlabelled=[extra])
    assert val is None
    assert len(train.images) == 2 and len(train.unlabelled) == FRAMES - 2 + 3
    np.testing.assert_array_equal(train.labels[0], video.labels[1])
    assert train.labels[0].dtype == np.uint8 and train.images[0].dtype == np.float32
    assert train.images[0].shape == (SIZE, SIZE) and train.unlabelled[-1].shape == (40, 36)
    assert -1.6 < train.unlabelled[-1].min() and train.unlabelled[-1].max() < 1.6  # own range
    assert train.classes[0] == "background"


@pytest.mark.parametrize(("verified", "fraction", "n_val"),
                         [([0, 2, 4, 6], 0.25, 1), ([0, 2, 4, 6], 0.5, 2), ([0, 2], 0.9, 1),
                          ([0, 2, 4, 6], 0.01, 1), ([3], 0.5, 0)])
def test_validation_split_holds_out_frames_deterministically(video, verified, fraction, n_val):
    split = [build_finetune_data(video.frames, video.labels, verified, classes=video.classes,
                                 val_fraction=fraction, seed=seed) for seed in (7, 7)]
    (train, val), (_, val_again) = split
    assert len(train.images) == len(verified) - n_val >= 1
    assert len(train.unlabelled) == FRAMES - len(verified)  # held-out frames are not reused
    if n_val == 0:
        assert val is None
    else:
        assert len(val.images) == n_val
        for a, b in zip(val.labels, val_again.labels, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("frames", "labels", "verified", "match"), [
    ((8, 32, 32), (8, 32, 32), [], "no verified frames to train on"),
    ((8, 32, 32), (8, 32, 32), [8], r"\[8\] are outside the video, which has 8 frames"),
    ((8, 32, 32), (8, 32, 32), [-1], "outside the video"),
    ((8, 32, 32), (8, 32, 30), [0], "do not match"),
    ((8, 32), (8, 32), [0], "frames x height x width"),
])
def test_bad_inputs_raise_clear_errors(frames, labels, verified, match):
    with pytest.raises(ValueError, match=match):
        build_finetune_data(np.zeros(frames, np.uint8), np.zeros(labels, np.uint8), verified,
                            classes={1: "vessel"})


def test_label_values_that_are_not_classes_are_refused(video):
    with pytest.raises(ValueError, match=r"frame 2 has label value\(s\) \[2\]"):
        build_finetune_data(video.frames, np.full_like(video.labels, 2), [2], classes={1: "v"})


# -- in-process: the logic the child runs --------------------------------------------------
def test_output_keeps_the_best_validation_weights(video, tmp_path):
    train, val = build_finetune_data(video.frames, video.labels, [0, 2, 4, 6],
                                     classes=video.classes, val_fraction=0.25)
    out = tmp_path / "tuned.pt"
    events: list[dict] = []
    request = FinetuneRequest(train, val, options(iterations=6, val_every=2), str(out),
                              model_config=TINY.to_dict(), checkpoint_every=3)
    done = run_finetune(request, events.append)
    assert done == events[-1] and not done["stopped"]
    dices = {e["iteration"]: e["val_dice"] for e in events if e["kind"] == "progress"}
    assert [i for i, d in dices.items() if d is not None] == [2, 4, 6]
    best_it = max((i for i in (2, 4, 6) if math.isfinite(dices[i])), key=dices.get)
    saved = load_checkpoint(out)
    assert saved.training_state is None  # small: a model, not a resumable run
    assert saved.metrics["best_iteration"] == best_it == done["best_iteration"]
    assert saved.metrics["final"]["iterations"] == 6
    assert done["best_val_dice"] == pytest.approx(dices[best_it])
    # the file holds that iteration's weights (not the last ones): validated again, the same
    opts = request.options
    again = validation_dice(build_model(saved), val, opts.timesteps, opts.val_steps,
                            opts.val_samples, opts.seed)
    assert again == pytest.approx(dices[best_it], abs=1e-6)
    written = [(e["path"], e["iteration"]) for e in events if e["kind"] == "checkpoint"]
    assert (str(last_path(out)), 6) in written and (str(last_path(out)), 3) in written
    assert load_checkpoint(last_path(out)).metrics["iterations"] == 6


def test_validation_before_training_is_reported(video, init_path, tmp_path):
    """The Dice of the initial model, by the same routine, before the first iteration: what
    the GUI shows beside the best Dice after; the held-out frames are the ones announced."""
    verified = [0, 2, 4, 6]
    held = held_out_frames(verified, 0.25)
    assert held == held_out_frames(verified, 0.25) and len(held) == 1 and held[0] in verified
    train, val = build_finetune_data(video.frames, video.labels, verified,
                                     classes=video.classes, val_fraction=0.25)
    assert len(val.images) == 1
    np.testing.assert_array_equal(val.labels[0], video.labels[held[0]])
    events: list[dict] = []
    request = FinetuneRequest(train, val, options(iterations=2, val_every=2),
                              str(tmp_path / "tuned.pt"), init=init_path)
    done = run_finetune(request, events.append)
    kinds = [e["kind"] for e in events]
    assert kinds.index("validation_before") < kinds.index("progress")
    before = next(e for e in events if e["kind"] == "validation_before")["val_dice"]
    assert 0.0 <= before <= 1.0 or math.isnan(before)
    assert done["val_dice_before"] == before
    # no validation set: nothing to report
    events.clear()
    request = FinetuneRequest(train, None, options(iterations=1), str(tmp_path / "t2.pt"),
                              init=init_path)
    assert run_finetune(request, events.append)["val_dice_before"] is None
    assert "validation_before" not in [e["kind"] for e in events]


def test_errors_become_events_that_say_what_to_do(data, tmp_path):
    cfg = ModelConfig(**{**TINY.to_dict(), "num_classes": 2})
    two = save_checkpoint(tmp_path / "two.pt", Checkpoint(
        cfg.to_dict(), DiffSegNet(cfg).state_dict(), {0: "background", 1: "vessel"},
        dict(DEFAULT_NORMALISATION), {"timesteps": 4}))
    with pytest.raises(ValueError, match="4 classes") as caught:
        run_finetune(FinetuneRequest(data, None, options(), str(tmp_path / "o.pt"),
                                     init=str(two)), lambda event: None)
    assert "classes" in error_event(caught.value)["message"]
    oom = error_event(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert oom["message"] == OOM_MESSAGE and oom["error_type"] == "OutOfMemoryError"


def test_a_start_model_with_neighbours_needs_frames_that_carry_them(video, tmp_path):
    """The bundled model sees frames t +- 1, and a fine-tune never takes them away: frames
    built without neighbours are refused with a message before any work (not a shape error
    inside the first layer), and frames built with the model's own context train."""
    cfg = ModelConfig(**{**TINY.to_dict(), "num_classes": 4, "context_frames": 1})
    torch.manual_seed(0)
    init = str(save_checkpoint(tmp_path / "temporal.pt", Checkpoint(
        cfg.to_dict(), DiffSegNet(cfg).state_dict(), video.classes,
        dict(DEFAULT_NORMALISATION), {"timesteps": 4})))
    verified = [0, 2, 4, 6]
    flat, flat_val = build_finetune_data(video.frames, video.labels, verified,
                                         classes=video.classes, val_fraction=0.25)
    events: list[dict] = []
    with pytest.raises(ValueError, match="sees 1 neighbouring frame") as caught:
        run_finetune(FinetuneRequest(flat, flat_val, options(val_every=1), str(tmp_path / "a.pt"),
                                     init=init), events.append)
    assert "context_frames=1" in str(caught.value) and events == []
    # what the dock's job does: the start model's context, whatever the panel asked (0)
    wanted = context_frames_for(cfg.to_dict(), 0)
    train, val = build_finetune_data(video.frames, video.labels, verified, classes=video.classes,
                                     val_fraction=0.25, context_frames=wanted)
    done = run_finetune(FinetuneRequest(train, val, options(iterations=2, val_every=1),
                                        str(tmp_path / "b.pt"), init=init), events.append)
    assert done["val_dice_before"] is not None
    assert load_checkpoint(tmp_path / "b.pt").model_config["context_frames"] == 1


def test_the_fine_tune_request_carries_what_the_start_model_needs(video, tmp_path):
    """finetune_request, what the dock's Fine-tune button and bench_finetune.py run: the start
    model's noise schedule, normalisation and neighbours go into the request, the anchors
    are made, the held-out frames are held_out_frames', and the run trains."""
    cfg = ModelConfig(**{**TINY.to_dict(), "num_classes": 4, "context_frames": 1})
    norm = {"method": "percentile", "low": 5.0, "high": 95.0}
    torch.manual_seed(0)
    init = str(save_checkpoint(tmp_path / "temporal.pt", Checkpoint(
        cfg.to_dict(), DiffSegNet(cfg).state_dict(), video.classes, norm, {"timesteps": 7})))
    verified = [0, 2, 4, 6]
    request = finetune_request(
        video.frames, video.labels, verified, classes=video.classes, init=init,
        output=tmp_path / "tuned.pt", val_fraction=0.25,
        options={**dataclasses.asdict(options(iterations=1, val_every=1)),
                 "context_frames": 0, "anchor_frames": 2})
    assert request.options.timesteps == 7 and request.init == init
    assert request.data.context_frames == 1 and request.data.images[0].shape == (3, SIZE, SIZE)
    held = held_out_frames(verified, 0.25)
    expected, _ = build_finetune_data(video.frames, video.labels, verified,
                                      classes=video.classes, normalisation=norm,
                                      val_fraction=0.25, context_frames=1)
    np.testing.assert_array_equal(request.data.images[0], expected.images[0])
    assert len(request.val.images) == len(held) == 1
    assert sum(a is not None for a in request.data.unlabelled_anchors) > 0
    own = finetune_request(video.frames, video.labels, verified, init=init,
                           output=tmp_path / "other.pt", options={"iterations": 1})
    assert own.data.classes == {int(k): v for k, v in video.classes.items()}  # the model's
    with pytest.raises(ValueError, match="classes"):
        finetune_request(video.frames, video.labels, verified, init=None,
                         output=tmp_path / "new.pt", options={})
    done = run_finetune(request, lambda event: None)
    assert done["metrics"]["iterations"] == 1
    assert load_checkpoint(tmp_path / "tuned.pt").model_config["context_frames"] == 1


# -- real child processes ------------------------------------------------------------------
def test_child_process_trains_and_streams_events(data, init_path, tmp_path):
    out = tmp_path / "tuned.pt"
    job = FinetuneProcess(FinetuneRequest(data, None, options(), str(out), init=init_path,
                                          threads=1))
    job.start()
    events = list(watched(job))
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done", kinds
    assert events[0]["device"].startswith("cpu")
    progress = [e for e in events if e["kind"] == "progress"]
    assert [e["iteration"] for e in progress] == [1, 2, 3, 4]
    json.dumps(events)  # plain data, for a GUI or a log file
    assert all(math.isfinite(v) for e in progress for v in e["losses"].values())
    assert events[-1]["path"] == str(out) and events[-1]["stopped"] is False
    assert not job.alive and job.exitcode == 0
    tuned = load_checkpoint(out)
    assert not torch.equal(weights(tuned), weights(load_checkpoint(init_path)))


def test_stop_while_paused_ends_cleanly_with_a_checkpoint(video, tmp_path):
    train, val = build_finetune_data(video.frames, video.labels, [0, 3, 6],
                                     classes=video.classes, val_fraction=0.3)
    out = tmp_path / "stopped.pt"
    opts = options(iterations=100_000, val_every=1000)
    job = FinetuneProcess(FinetuneRequest(train, val, opts, str(out),
                                          model_config=TINY.to_dict(), threads=1))
    job.start()
    events = []
    for event in watched(job):
        events.append(event)
        if event["kind"] == "progress" and event["iteration"] == 2:
            job.pause()
        elif event["kind"] == "paused":
            assert job.paused and job.alive
            job.stop()
    done = events[-1]
    assert done["kind"] == "done" and done["stopped"] is True, events[-1]
    assert "resumed" not in [e["kind"] for e in events]
    assert not job.alive
    # stopped before the first validation: the last weights are kept, and the user is told
    assert any(e["kind"] == "log" and "no validation Dice" in e["message"] for e in events)
    assert load_checkpoint(out).metrics["iterations"] == done["metrics"]["iterations"] < 100


def test_garbage_init_checkpoint_gives_an_error_event(data, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage, not a checkpoint" * 10)
    job = FinetuneProcess(FinetuneRequest(data, None, options(), str(tmp_path / "o.pt"),
                                          init=str(bad)))
    job.start()
    events = list(watched(job))
    assert [e["kind"] for e in events] == ["error"]
    assert events[0]["error_type"] == "CheckpointError"
    assert str(bad) in events[0]["message"] and "train from scratch" in events[0]["message"]
    assert not job.alive and not (tmp_path / "o.pt").exists()


def test_kill_terminates_a_paused_process(data, tmp_path):
    job = FinetuneProcess(FinetuneRequest(data, None, options(iterations=100_000),
                                          str(tmp_path / "k.pt"), model_config=TINY.to_dict()))
    job.pause()  # paused before the first iteration
    job.start()
    for event in watched(job):
        if event["kind"] == "paused":
            break
    job.kill(timeout=0.0)  # no grace period: terminated, not stopped
    assert not job.alive and job.exitcode != 0
    rest = list(job.events())
    assert rest[-1]["kind"] == "error" and "exited with code" in rest[-1]["message"]


# A caller's script as people write them: no `if __name__ == "__main__":` guard. Spawn used to
# run it again in the child (to rebuild __main__), which re-ran everything it does at import
# time (in napari's case: a second viewer) and then failed to start a process from the child.
UNGUARDED_SCRIPT = """
import sys

with open(sys.argv[1], "a") as log:
    log.write("script ran\\n")

from napari_diffseg.data import SyntheticConfig, generate_sequence
from napari_diffseg.engine.finetune import FinetuneProcess, FinetuneRequest, build_finetune_data
from napari_diffseg.engine.training import TrainOptions, context_frames_for, validation_dice
from napari_diffseg.model import ModelConfig

video = generate_sequence(SyntheticConfig(size=32, frames=4, seed=3, guidewire=False))
data = build_finetune_data(video.frames, video.labels, [0, 2], classes=video.classes)[0]
options = TrainOptions(iterations=1, batch_size=2, crop_size=32, device="cpu", timesteps=4,
                       pseudo_steps=1, pseudo_samples=1, val_every=0, val_steps=1)
config = ModelConfig(num_classes=4, width=8, depth=2, label_width=8, label_blocks=1,
                     time_dim=16, denoiser_stride=1, encoder_stride=1).to_dict()
job = FinetuneProcess(FinetuneRequest(data, None, options, sys.argv[2], model_config=config,
                                      threads=1))
job.start()
print("kinds", [event["kind"] for event in job.events()])
"""


def test_a_script_without_a_main_guard_runs_once(tmp_path):
    import os
    import subprocess
    import sys

    script = tmp_path / "my_script.py"
    script.write_text(UNGUARDED_SCRIPT)
    runs = tmp_path / "runs.txt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, str(script), str(runs), str(tmp_path / "tuned.pt")],
        capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert runs.read_text().splitlines() == ["script ran"], result.stderr
    assert "'done'" in result.stdout, result.stdout + result.stderr


def test_the_guard_refuses_only_a_run_that_validates_below_its_start():
    from napari_diffseg.engine.defaults import worse_than_before

    assert worse_than_before(0.70, 0.75)
    assert not worse_than_before(0.75, 0.75)  # as good: the fine-tuned model is used
    assert not worse_than_before(0.80, 0.75)
    assert not worse_than_before(None, 0.75)  # nothing held out: nothing to compare
    assert not worse_than_before(0.70, None)


# -- the last stage on every verified frame --------------------------------------------------
def _spy_train(monkeypatch) -> list[dict]:
    """Record what each call of engine.finetune's train() trains on (and run it)."""
    from napari_diffseg.engine import finetune as module

    calls: list[dict] = []
    real = module.train

    def spy(data, options, **kw):
        calls.append({"images": [np.array(x) for x in data.images], "options": options,
                      "init": kw.get("init")})
        return real(data, options, **kw)

    monkeypatch.setattr(module, "train", spy)
    return calls


def test_a_kept_run_ends_trained_on_every_verified_frame(video, tmp_path, monkeypatch):
    """Validation chooses the checkpoint; then those weights train on the held-out frames
    too, at a lower rate, and that is the model written. The progress counts on."""
    calls = _spy_train(monkeypatch)
    train, val = build_finetune_data(video.frames, video.labels, [0, 2, 4, 6],
                                     classes=video.classes, val_fraction=0.25)
    out = tmp_path / "tuned.pt"
    events: list[dict] = []
    request = FinetuneRequest(train, val, options(iterations=4, val_every=2, lr=1e-3),
                              str(out), model_config=TINY.to_dict(), refit_iterations=3)
    done = run_finetune(request, events.append)
    assert not done["stopped"] and done["metrics"]["refit_iterations"] == 3
    refit = next(e for e in events if e["kind"] == "refit")
    assert refit == {"kind": "refit", "iterations": 3, "total": 7, "frames": 1}
    stage = [e for e in events if e.get("stage") == "refit"]
    assert [e["iteration"] for e in stage] == [5, 6, 7] and all(e["total"] == 7 for e in stage)
    assert events.index(refit) < events.index(stage[0])
    assert len(calls) == 2
    first, last = calls
    assert len(first["images"]) == 3 and len(last["images"]) == 4  # the held-out frame joins
    assert any(np.array_equal(x, val.images[0]) for x in last["images"])
    assert not any(np.array_equal(x, val.images[0]) for x in first["images"])
    assert last["options"].lr == pytest.approx(0.5e-3) and last["options"].val_every == 0
    assert last["options"].iterations == 3
    best_weights = weights(last["init"])  # the validated checkpoint is where it starts
    saved = load_checkpoint(out)
    assert saved.metrics["refit_iterations"] == 3 and saved.metrics["refit_frames"] == 1
    assert saved.metrics["best_iteration"] == done["best_iteration"]
    assert saved.metrics["best_val_dice"] == pytest.approx(done["best_val_dice"])
    assert not torch.equal(weights(saved), best_weights)


def test_no_last_stage_for_a_run_worse_than_its_start_or_stopped(video, init_path, tmp_path,
                                                                 monkeypatch):
    """A run the dock will not use keeps its validated weights as they are, and so does a
    run the user stops in the last stage."""
    from napari_diffseg.engine import finetune as module

    train, val = build_finetune_data(video.frames, video.labels, [0, 2, 4, 6],
                                     classes=video.classes, val_fraction=0.25)
    # the start model scored above anything the run can reach: worse than before
    monkeypatch.setattr(module, "validation_dice", lambda *a, **k: 2.0)
    calls = _spy_train(monkeypatch)
    events: list[dict] = []
    request = FinetuneRequest(train, val, options(iterations=2, val_every=2),
                              str(tmp_path / "worse.pt"), init=init_path, refit_iterations=3)
    done = run_finetune(request, events.append)
    assert done["val_dice_before"] == 2.0 and len(calls) == 1
    assert "refit" not in [e["kind"] for e in events]
    assert "refit_iterations" not in load_checkpoint(tmp_path / "worse.pt").metrics
    monkeypatch.undo()

    calls = _spy_train(monkeypatch)
    events.clear()
    out = tmp_path / "stopped.pt"
    request = FinetuneRequest(train, val, options(iterations=2, val_every=2), str(out),
                              model_config=TINY.to_dict(), refit_iterations=50)
    done = run_finetune(request, events.append,
                        should_stop=lambda: any(e.get("stage") == "refit" for e in events))
    assert len(calls) == 2 and done["stopped"] is True
    assert [e["iteration"] for e in events if e.get("stage") == "refit"] == [3]
    saved = load_checkpoint(out)
    assert "refit_iterations" not in saved.metrics  # the validated weights, as written
    assert saved.metrics["best_iteration"] == 2 == done["best_iteration"]
    assert torch.equal(weights(saved), weights(calls[1]["init"]))


def test_the_request_sizes_the_last_stage_from_the_iterations(video, tmp_path):
    kw = {"classes": video.classes, "init": None, "output": tmp_path / "t.pt"}
    opts = dataclasses.asdict(options(iterations=30, val_every=10))
    assert finetune_request(video.frames, video.labels, [0, 2, 4, 6], options=opts,
                            val_fraction=0.25, **kw).refit_iterations == 10
    assert finetune_request(video.frames, video.labels, [0, 2, 4, 6], options=opts,
                            val_fraction=0.25, refit_share=0.0, **kw).refit_iterations == 0
    # nothing held out: nothing to add
    assert finetune_request(video.frames, video.labels, [0, 2, 4, 6], options=opts,
                            val_fraction=0.0, **kw).refit_iterations == 0
