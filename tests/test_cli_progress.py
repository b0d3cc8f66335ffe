"""What `train`, `segment` and `evaluate` tell a user who waits: sizes per device, progress
lines with rate and total even when stderr is not a terminal, and silence with --quiet."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from napari_diffseg import engine
from napari_diffseg._cli_engine import choose_train_sizes
from napari_diffseg.cli import main

# tiny and quick: one 32 px crop per iteration, a width-8 network, supervised (no pseudo-labels)
TINY_TRAIN = ["--init", "none", "--mode", "supervised", "--iterations", "2", "--batch-size",
              "1", "--crop-size", "32", "--width", "8", "--device", "cpu"]
TINY_SEGMENT = ["--steps", "1", "--samples", "1", "--device", "cpu"]
# tqdm's rate, either way round, after the count: "... 2/2 [00:01<00:00, 1.52it/s"
RATE = r"\d+(\.\d+)?(it|frame)/s|\d+(\.\d+)?s/(it|frame)"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("progress") / "synth"
    assert main(["make-sample", str(out), "--sequences", "1", "--frames", "6", "--size", "64",
                 "--label-every", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def model(dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("progress_model") / "tiny.pt"
    assert main(["train", str(dataset), "--out", str(path), "--quiet", *TINY_TRAIN]) == 0
    return path


def _progress_lines(err: str, desc: str, total: int) -> list[str]:
    return [line for line in err.splitlines()
            if line.startswith(f"{desc}:") and f"/{total} [" in line]


def test_train_prints_progress_lines_with_rate_and_total_without_a_terminal(
        dataset, tmp_path, capsys):
    assert main(["train", str(dataset), "--out", str(tmp_path / "m.pt"), *TINY_TRAIN]) == 0
    err = capsys.readouterr().err
    lines = _progress_lines(err, "train", 2)
    assert lines, err
    assert "\r" not in err  # plain lines in a log, not a bar redrawn in place
    assert lines[-1].startswith("train: 100% 2/2 [")
    assert re.search(RATE, lines[-1]) and "loss=" in lines[-1]
    # and what comes before the first iteration is said, not silent
    assert "reading" in err and "building the model" in err


@pytest.mark.parametrize("command", ["segment", "evaluate", "evaluate-annotated"])
def test_segment_and_evaluate_print_frames_per_second(command, dataset, model, tmp_path,
                                                      capsys):
    if command == "segment":
        argv = ["segment", str(dataset / "JPEGImages" / "seq000"), "--out", str(tmp_path)]
        total = 6
    elif command == "evaluate":
        argv = ["evaluate", str(dataset)]
        total = 6  # every frame, for the wire tracking (frames 0, 2, 4 are annotated)
    else:
        argv = ["evaluate", str(dataset), "--no-wire-tracking"]
        total = 3  # the annotated frames 0, 2, 4 only
    command = command.split("-")[0]
    assert main([*argv, "--model", str(model), *TINY_SEGMENT]) == 0
    err = capsys.readouterr().err
    lines = _progress_lines(err, command, total)
    assert lines, err
    assert lines[-1].startswith(f"{command}: 100% {total}/{total} [")
    assert re.search(RATE, lines[-1]) and "frame" in lines[-1]
    assert "loading the model" in err


@pytest.mark.parametrize("command", ["train", "segment", "evaluate"])
def test_quiet_prints_nothing_on_stderr_but_keeps_the_result(command, dataset, model, tmp_path,
                                                             capsys):
    argv = {
        "train": ["train", str(dataset), "--out", str(tmp_path / "m.pt"), *TINY_TRAIN],
        "segment": ["segment", str(dataset / "JPEGImages" / "seq000"), "--out", str(tmp_path),
                    "--model", str(model), *TINY_SEGMENT],
        "evaluate": ["evaluate", str(dataset), "--model", str(model), *TINY_SEGMENT],
    }[command]
    assert main([*argv, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.strip()  # the result line (or table) is output, not chatter


def test_quiet_still_prints_errors(tmp_path, capsys):
    missing = tmp_path / "nothing_here"
    assert main(["train", str(missing), "--out", str(tmp_path / "m.pt"), "--quiet",
                 "--device", "cpu"]) == 2
    assert "nothing_here" in capsys.readouterr().err


def test_train_on_a_cpu_takes_the_cpu_sizes_and_says_so(dataset, tmp_path, capsys,
                                                        monkeypatch):
    seen = {}
    real_train = engine.train

    def recording_train(data, options, **kwargs):  # keep the options, skip the iterations
        seen["options"] = options
        return real_train(data, dataclasses.replace(options, iterations=0), **kwargs)

    monkeypatch.setattr(engine, "train", recording_train)
    assert main(["train", str(dataset), "--out", str(tmp_path / "m.pt"), "--init", "none",
                 "--iterations", "1", "--width", "8", "--device", "cpu"]) == 0
    assert (seen["options"].batch_size, seen["options"].crop_size) == (4, 128)
    err = capsys.readouterr().err
    assert re.search(r"^cpu \(\d+ threads?\): batch 4, crops 128 px; CPU defaults, override "
                     r"with --batch-size/--crop-size$", err, re.MULTILINE), err


@pytest.mark.parametrize(
    ("device", "given", "world", "expected", "why"),
    [
        ("cpu", (None, None), 1, (4, 128), "CPU defaults, override with"),
        ("cuda", (None, None), 1, (8, 256), "GPU defaults, override with"),
        ("cpu", (2, None), 1, (2, 128), "--crop-size is the CPU default"),
        ("cuda", (None, 96), 1, (8, 96), "--batch-size is the GPU default"),
        ("cpu", (3, 64), 1, (3, 64), "as given"),
        ("cuda", (None, None), 3, (9, 256), "x 3 processes"),  # a multiple of the processes
    ],
)
def test_choose_train_sizes_fills_only_what_the_user_left_out(device, given, world, expected,
                                                              why):
    sizes = choose_train_sizes(torch.device(device), *given, world=world)
    assert (sizes.batch_size, sizes.crop_size) == expected
    assert f"batch {expected[0]}, crops {expected[1]} px" in sizes.line
    assert why in sizes.line
