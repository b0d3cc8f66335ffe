"""Checkpoints: round trip, atomic writes, and a CheckpointError naming the file for bad ones."""

from __future__ import annotations

import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_diffseg import __version__
from napari_diffseg.engine import checkpoint as checkpoint_module
from napari_diffseg.engine.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    build_model,
    load_checkpoint,
    save_checkpoint,
)

HAS_NETWORK = importlib.util.find_spec("napari_diffseg.model.network") is not None
needs_network = pytest.mark.skipif(not HAS_NETWORK, reason="napari_diffseg.model.network missing")

CLASSES = {0: "background", 1: "vessel", 2: "catheter"}


class Arbitrary:
    """Not something weights_only loading accepts."""

    def __init__(self) -> None:
        self.value = 42


def make_checkpoint(**overrides: object) -> Checkpoint:
    conv = torch.nn.Conv2d(1, 2, 3)
    optimiser = torch.optim.Adam(conv.parameters(), lr=1e-3)
    conv(torch.zeros(1, 1, 5, 5)).sum().backward()
    optimiser.step()
    fields: dict = {
        "model_config": {"num_classes": 3, "width": 8, "channels": (8, 16)},
        "state_dict": conv.state_dict(),
        "classes": CLASSES,
        "normalisation": {"method": "percentile", "low": 1.0, "high": 99.0},
        "schedule": {"timesteps": 10},
        "train_options": {"iterations": 5, "lr": 1e-3, "augment": True, "seed": None},
        "data_summary": {"sequences": ["a", "b"], "frames": 12},
        "metrics": {"mean": {"dice": 0.8, "hd95": None}},
        "training_state": {
            "optimizer": optimiser.state_dict(),
            "iteration": 5,
            "torch_rng": torch.get_rng_state(),
        },
    }
    fields.update(overrides)
    return Checkpoint(**fields)


def test_round_trip_all_fields(tmp_path: Path) -> None:
    ckpt = make_checkpoint()
    path = save_checkpoint(tmp_path / "model.ckpt", ckpt)
    assert path == tmp_path / "model.ckpt"
    loaded = load_checkpoint(path)

    assert loaded.source == path
    assert loaded.classes == CLASSES and all(isinstance(k, int) for k in loaded.classes)
    assert loaded.model_config == ckpt.model_config
    assert loaded.normalisation == ckpt.normalisation
    assert loaded.schedule == ckpt.schedule
    assert loaded.train_options == ckpt.train_options
    assert loaded.data_summary == ckpt.data_summary
    assert loaded.metrics == ckpt.metrics
    assert loaded.library_version == __version__
    assert loaded.created == ckpt.created and "+00:00" in loaded.created
    assert loaded.state_dict.keys() == ckpt.state_dict.keys()
    for name, tensor in ckpt.state_dict.items():
        assert torch.equal(loaded.state_dict[name], tensor)
    state = loaded.training_state
    assert state is not None and state["iteration"] == 5
    assert torch.equal(state["torch_rng"], ckpt.training_state["torch_rng"])
    optimiser = torch.optim.Adam(torch.nn.Conv2d(1, 2, 3).parameters())
    optimiser.load_state_dict(state["optimizer"])  # resumable


def test_file_is_a_plain_dict(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.ckpt", make_checkpoint(training_state=None))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["format_version"] == FORMAT_VERSION
    assert set(raw["classes"]) == {"0", "1", "2"}
    assert raw["training_state"] is None
    assert load_checkpoint(path).training_state is None


def test_defaults_and_conversions(tmp_path: Path) -> None:
    @dataclass
    class Config:
        num_classes: int = 2
        width: int = 8

    ckpt = Checkpoint(
        model_config=Config(),  # type: ignore[arg-type]
        state_dict={"w": torch.ones(2)},
        classes={"0": "background", "1": "vessel"},  # type: ignore[dict-item]
        normalisation={},
        schedule={"timesteps": 10},
        metrics={"dice": np.float64(0.5), "where": tmp_path},
    )
    assert ckpt.model_config == {"num_classes": 2, "width": 8}
    assert ckpt.classes == {0: "background", 1: "vessel"}
    assert ckpt.train_options == {} and ckpt.training_state is None
    loaded = load_checkpoint(save_checkpoint(tmp_path / "sub" / "dir" / "m.ckpt", ckpt))
    assert loaded.metrics == {"dice": 0.5, "where": str(tmp_path)}
    assert type(loaded.metrics["dice"]) is float


def test_unstorable_field_is_refused_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "m.ckpt"
    with pytest.raises(CheckpointError, match=r"m\.ckpt.*data_summary\['mask'\].*ndarray"):
        save_checkpoint(path, make_checkpoint(data_summary={"mask": np.zeros(3)}))
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_checkpoint(tmp_path / "m.ckpt", make_checkpoint(metrics={"run": 1}))
    before = path.read_bytes()

    def broken_save(obj: object, f: object, *args: object, **kwargs: object) -> None:
        Path(f).write_bytes(b"partial")  # type: ignore[arg-type]
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match=r"m\.ckpt.*disk full"):
        save_checkpoint(path, make_checkpoint(metrics={"run": 2}))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.ckpt"]
    monkeypatch.undo()
    assert load_checkpoint(path).metrics == {"run": 1}


def test_interrupted_save_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "m.ckpt", make_checkpoint())
    assert list(tmp_path.iterdir()) == []


def test_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nope\.ckpt.*does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")
    (tmp_path / "empty.ckpt").touch()
    with pytest.raises(CheckpointError, match=r"empty\.ckpt.*is empty"):
        load_checkpoint(tmp_path / "empty.ckpt")
    with pytest.raises(CheckpointError, match="is not a file"):
        load_checkpoint(tmp_path)


def test_truncated_file(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.ckpt", make_checkpoint())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"m\.ckpt.*truncated or corrupt") as info:
        load_checkpoint(path)
    assert info.value.__cause__ is not None


def test_garbage_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes\.txt"):
        load_checkpoint(path)


@pytest.mark.parametrize("payload", [{"a": 1}, {"format": "other"}, [1, 2], torch.zeros(2)])
def test_foreign_torch_file(tmp_path: Path, payload: object) -> None:
    path = tmp_path / "foreign.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"foreign\.pt: is not a napari-diffseg checkpoint"):
        load_checkpoint(path)


class RunsCode:
    """A pickle that would run a program when loaded without weights_only."""

    def __reduce__(self):
        import os

        return (os.system, ("echo this must never run",))


@pytest.mark.parametrize("payload, name", [(Arbitrary(), "Arbitrary"), (RunsCode(), "system"),
                                           (np.zeros(3), "numpy")])
def test_code_in_a_checkpoint_is_refused_as_code(tmp_path: Path, payload, name) -> None:
    """Whatever torch's current wording of a weights_only refusal, the user reads that the
    file was refused because it contains code (not that it is corrupt)."""
    with_torch = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": payload}, with_torch)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(with_torch)
    message = str(info.value)
    assert message.startswith(f"{with_torch}: refused because it contains code")
    assert name in message and "corrupt" not in message and "\n" not in message


def test_plain_pickle_with_code_is_refused(tmp_path: Path) -> None:
    plain_pickle = tmp_path / "evil.pkl"
    plain_pickle.write_bytes(pickle.dumps(Arbitrary(), protocol=2))
    with pytest.raises(CheckpointError, match=r"evil\.pkl: refused because it contains code"):
        load_checkpoint(plain_pickle)


@pytest.mark.parametrize("wording", [
    "Weights only load failed. ... Unsupported global: GLOBAL numpy.dtype was not an allowed "
    "global by default. Please use `torch.serialization.add_safe_globals([numpy.dtype])`",
    "Weights only load failed. Trying to load unsupported GLOBAL posix.system whose module "
    "posix is blocked.",
    "Weights only load failed. Unsupported class builtins.eval",
    "Weights only load failed. Trying to call reduce for unrecognized function <built-in>",
])
def test_refusal_wordings_of_torch_versions(tmp_path: Path, monkeypatch, wording) -> None:
    path = save_checkpoint(tmp_path / "m.pt", make_checkpoint())

    def refuse(*args, **kwargs):
        raise pickle.UnpicklingError(wording)

    monkeypatch.setattr(torch, "load", refuse)
    with pytest.raises(CheckpointError, match=r"m\.pt: refused because it contains code"):
        load_checkpoint(path)


def test_corrupt_pickle_is_not_called_code(tmp_path: Path, monkeypatch) -> None:
    path = save_checkpoint(tmp_path / "m.pt", make_checkpoint())

    def corrupt(*args, **kwargs):
        raise pickle.UnpicklingError("Weights only load failed.\nWeightsUnpickler error: "
                                     "Unsupported operand 149")

    monkeypatch.setattr(torch, "load", corrupt)
    with pytest.raises(CheckpointError, match=r"m\.pt: checkpoint file is truncated or corrupt"):
        load_checkpoint(path)


@pytest.mark.parametrize("classes, why", [
    ({0: "background", 1: "vessel", 2: "catheter", 3: "guidewire"}, r"names for \[3\] match no"),
    ({0: "background", 5: "vessel"}, r"names for \[5\] match no output; outputs \[1, 2\]"),
])
def test_class_names_for_missing_outputs_are_refused(tmp_path: Path, classes, why) -> None:
    path = save_checkpoint(tmp_path / "m.pt", make_checkpoint(classes=classes))
    with pytest.raises(CheckpointError, match=r"m\.pt: refused: its class names .*3 output "
                       rf"classes 0\.\.2 \({why}"):
        load_checkpoint(path)


def test_unnamed_outputs_are_named_and_warned_about(tmp_path: Path, caplog) -> None:
    """An older file whose training data did not name every output still loads."""
    path = save_checkpoint(tmp_path / "m.pt",
                           make_checkpoint(classes={0: "background", 1: "vessel"}))
    with caplog.at_level("WARNING", logger="napari_diffseg"):
        ckpt = load_checkpoint(path)
    assert ckpt.classes == {0: "background", 1: "vessel", 2: "class 2"}
    assert "outputs [2] of the network have no class name" in caplog.text


def test_future_version(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.ckpt", make_checkpoint())
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = FORMAT_VERSION + 1
    raw["library_version"] = "9.0.0"
    torch.save(raw, path)
    with pytest.raises(
        CheckpointError, match=rf"m\.ckpt: checkpoint format version {FORMAT_VERSION + 1}.*9\.0\.0"
    ) as info:
        load_checkpoint(path)
    assert "upgrade napari-diffseg" in str(info.value)


def test_incomplete_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "m.ckpt"
    torch.save({"format": FORMAT, "format_version": 1, "model_config": {}}, path)
    with pytest.raises(CheckpointError, match=r"m\.ckpt.*missing state_dict, classes"):
        load_checkpoint(path)


def test_map_location(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.ckpt", make_checkpoint())
    loaded = load_checkpoint(path, map_location=torch.device("cpu"))
    assert all(t.device.type == "cpu" for t in loaded.state_dict.values())


def small_config() -> dict:
    return {
        "num_classes": 3,
        "width": 8,
        "depth": 2,
        "label_width": 8,
        "label_blocks": 1,
        "time_dim": 16,
        "denoiser_stride": 4,
        "encoder_stride": 2,
        "detail_width": 4,
    }


@needs_network
def test_build_model_round_trip(tmp_path: Path) -> None:
    from napari_diffseg.model.network import DiffSegNet, ModelConfig

    torch.manual_seed(0)
    model = DiffSegNet(ModelConfig(**small_config()))
    ckpt = make_checkpoint(model_config=small_config(), state_dict=model.state_dict())
    built = build_model(load_checkpoint(save_checkpoint(tmp_path / "m.ckpt", ckpt)))
    assert isinstance(built, DiffSegNet) and not built.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(built.state_dict()[name], tensor)


@needs_network
def test_checkpoint_from_before_encoder_stride_builds_the_old_network(tmp_path: Path) -> None:
    """Files written before ModelConfig.encoder_stride and detail_width existed (the bundled
    model of 0.1, the users' fine-tuned models) have no such keys: full-resolution encoder,
    no detail branch."""
    from napari_diffseg.model.network import DiffSegNet, ModelConfig

    new_fields = ("encoder_stride", "detail_width")
    old = {k: v for k, v in small_config().items() if k not in new_fields}
    old["denoiser_stride"] = 2
    model = DiffSegNet(ModelConfig(**old, encoder_stride=1, detail_width=0))
    ckpt = make_checkpoint(model_config=old, state_dict=model.state_dict())
    built = build_model(load_checkpoint(save_checkpoint(tmp_path / "m.ckpt", ckpt)))
    assert built.config.encoder_stride == 1 and built.config.detail_width == 0
    x = torch.randn(1, 1, 16, 16)
    t = torch.full((1,), 0.5)
    labels = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(built(x, labels, t)[0], model.eval()(x, labels, t)[0])


@needs_network
def test_build_model_with_mismatched_weights(tmp_path: Path) -> None:
    """One line with a short summary of what differs, not torch's hundred-line list."""
    from napari_diffseg.model.network import DiffSegNet, ModelConfig

    model = DiffSegNet(ModelConfig(**small_config()))
    wider = {**small_config(), "width": 16}
    weights = dict(model.state_dict())
    weights["stray.weight"] = torch.zeros(1)
    del weights[next(iter(weights))]
    ckpt = make_checkpoint(model_config=wider, state_dict=weights)
    loaded = load_checkpoint(save_checkpoint(tmp_path / "m.ckpt", ckpt))
    with pytest.raises(CheckpointError, match=r"m\.ckpt: the weights don't match the arch") as info:
        build_model(loaded)
    message = str(info.value)
    assert "\n" not in message and len(message) < 700, message
    assert "1 missing (" in message and "1 unexpected (stray.weight)" in message
    assert "of another shape (" in message and "more)" in message


@needs_network
def test_build_model_with_unknown_config_key(tmp_path: Path) -> None:
    ckpt = make_checkpoint(model_config={**small_config(), "no_such_option": 1})
    loaded = load_checkpoint(save_checkpoint(tmp_path / "m.ckpt", ckpt))
    with pytest.raises(CheckpointError, match=r"m\.ckpt: its model_config cannot be used"):
        build_model(loaded)


def test_opening_a_checkpoint_removes_stale_temps_beside_it(tmp_path: Path) -> None:
    """A killed save leaves `.<name>.<pid>-<hex>.tmp`; opening the folder's checkpoint removes
    those of dead writers, and nothing else."""
    import os
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    path = save_checkpoint(tmp_path / "finetuned.pt", make_checkpoint())
    stale = tmp_path / f".finetuned.pt.{child.pid}-feedbeef.tmp"
    fresh = tmp_path / f".other.pt.{child.pid}-feedbee0.tmp"
    foreign = tmp_path / "notes.tmp"
    for file in (stale, fresh, foreign):
        file.write_bytes(b"half")
    os.utime(stale, (0, 0))
    os.utime(foreign, (0, 0))

    load_checkpoint(path)

    assert not stale.exists() and fresh.exists() and foreign.exists()


def test_average_is_the_mean_of_the_weights(tmp_path: Path) -> None:
    """Averaging gives each float weight's mean, keeps integer weights, names the parts and
    drops the training state; mismatched architectures are refused with the file named."""
    from napari_diffseg.engine.checkpoint import average_checkpoints

    a, b = make_checkpoint(), make_checkpoint()
    b.state_dict = {k: v + 1.0 for k, v in a.state_dict.items()}
    a.state_dict = {**a.state_dict, "steps": torch.tensor([3])}
    b.state_dict = {**b.state_dict, "steps": torch.tensor([3])}
    pa, pb = save_checkpoint(tmp_path / "a.pt", a), save_checkpoint(tmp_path / "b.pt", b)
    mean = average_checkpoints([pa, pb])
    for name, tensor in a.state_dict.items():
        if tensor.is_floating_point():
            torch.testing.assert_close(mean.state_dict[name], tensor + 0.5)
        else:
            assert torch.equal(mean.state_dict[name], tensor)
    assert mean.training_state is None and mean.metrics == {}
    assert mean.data_summary["averaged"] == ["a.pt", "b.pt"]
    save_checkpoint(tmp_path / "mean.pt", mean)  # storable as it is
    other = save_checkpoint(tmp_path / "other.pt",
                            make_checkpoint(model_config={"num_classes": 3, "width": 16}))
    with pytest.raises(CheckpointError, match="other.pt.*model_config"):
        average_checkpoints([pa, other])
    with pytest.raises(CheckpointError, match="at least two"):
        average_checkpoints([pa])
