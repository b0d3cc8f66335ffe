"""OS faults on the command line: every subcommand answers a permission, no-space or read-only
error with one line naming the path and a non-zero exit, checks its output folder before the
work, and never leaves a half-written output file."""

from __future__ import annotations

import errno
import json
import os
import pathlib

import numpy as np
import pytest

import napari_diffseg.io
from napari_diffseg.cli import main
from napari_diffseg.io import _atomic

FAULTS = [(errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only file system"),
          (errno.ENOSPC, "No space left on device")]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained 4-class network as a checkpoint: enough to run `segment` in seconds."""
    import torch

    from napari_diffseg.engine.checkpoint import Checkpoint, save_checkpoint
    from napari_diffseg.engine.training import DEFAULT_NORMALISATION
    from napari_diffseg.model import ModelConfig
    from napari_diffseg.model.network import DiffSegNet

    torch.manual_seed(0)
    config = ModelConfig(num_classes=4, width=8, depth=2, label_width=8, label_blocks=1,
                         time_dim=16)
    ckpt = Checkpoint(model_config=config, state_dict=DiffSegNet(config).state_dict(),
                      classes={0: "background", 1: "vessel", 2: "catheter", 3: "guidewire"},
                      normalisation=dict(DEFAULT_NORMALISATION), schedule={"timesteps": 10})
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", ckpt)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    import tifffile

    path = tmp_path_factory.mktemp("video") / "run.tif"
    rng = np.random.default_rng(0)
    tifffile.imwrite(path, rng.integers(0, 255, (3, 32, 32), dtype=np.uint8),
                     photometric="minisblack")
    return path


def _segment(video, model, out, *extra):
    return main(["segment", str(video), "--model", str(model), "--out", str(out), "--steps", "1",
                 "--samples", "1", "--device", "cpu", "-q", *extra])


def _one_error_line(capsys, command: str, path) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"napari-diffseg {command}: error: ")
    assert str(path) in lines[0], lines[0]
    return lines[0]


def _refuse_writes_in(monkeypatch, folder, code):
    """Every file created in `folder` fails as a read-only folder, a read-only file system or
    a full disk would (the tests run as root, where chmod does not stop a write)."""
    real_open = os.open

    def guarded(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and pathlib.Path(path).resolve().parent == folder.resolve():
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(_atomic.os, "open", guarded)


@pytest.mark.parametrize("code, words", FAULTS)
def test_segment_checks_its_output_folder_before_the_work(video, tiny_model, tmp_path, capsys,
                                                          monkeypatch, code, words):
    out = tmp_path / "out"
    out.mkdir()
    _refuse_writes_in(monkeypatch, out, code)
    started = []
    from napari_diffseg.engine import inference

    monkeypatch.setattr(inference, "load_for_inference",
                        lambda *a, **k: started.append(1) or pytest.fail("work started"))

    assert _segment(video, tiny_model, out) == 2

    line = _one_error_line(capsys, "segment", out)
    assert words in line and "not writable" in line
    assert not started and list(out.iterdir()) == []


def test_disk_full_at_the_summary_leaves_no_summary_and_one_line(video, tiny_model, tmp_path,
                                                                 capsys, monkeypatch):
    out = tmp_path / "out"
    real_write_text = pathlib.Path.write_text

    def full(self, text, *args, **kwargs):
        if self.name.startswith(".summary.json"):
            real_write_text(self, text[: len(text) // 2])  # the disk fills up halfway
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_text(self, text, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", full)

    assert _segment(video, tiny_model, out) != 0

    line = _one_error_line(capsys, "segment", out / "summary.json")
    assert "No space left on device" in line
    assert not (out / "summary.json").exists()
    assert not [p.name for p in out.rglob("*.tmp")]  # nothing half-written left behind
    assert len(list((out / "labels").glob("*.png"))) == 3  # what was complete stays


def test_summary_replaces_the_previous_one_whole(video, tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert _segment(video, tiny_model, out) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 3
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("code, words", FAULTS)
def test_an_os_error_anywhere_is_one_line_naming_the_path(video, tmp_path, capsys, monkeypatch,
                                                          code, words):
    """Whatever raises it, an OSError ends the command with one line and exit code 2."""
    target = tmp_path / "deep" / "file.json"

    def fails(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(target))

    monkeypatch.setattr(napari_diffseg.io, "read", fails)

    assert main(["info", str(video)]) == 2

    assert words in _one_error_line(capsys, "info", target)


@pytest.mark.parametrize("command", ["train", "adapt", "make-sample"])
def test_every_writing_subcommand_checks_its_output_first(tmp_path, capsys, monkeypatch,
                                                          command, video, tiny_model):
    out = tmp_path / "ro"
    out.mkdir()
    _refuse_writes_in(monkeypatch, out, errno.EROFS)
    argv = {
        "train": ["train", str(tmp_path / "no-data-needed"), "--out", str(out / "m.pt"),
                  "--device", "cpu", "-q"],
        "adapt": ["adapt", str(video), "--out", str(out / "m.pt"), "--model", str(tiny_model),
                  "--device", "cpu", "-q"],
        "make-sample": ["make-sample", str(out)],
    }[command]

    assert main(argv) == 2

    line = _one_error_line(capsys, command, out)
    assert "Read-only file system" in line and "not writable" in line
    assert list(out.iterdir()) == []
