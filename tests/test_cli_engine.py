"""`napari-diffseg train / segment / evaluate` end to end on generated datasets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from PIL import Image
from testutils import marking_and_bolus

from napari_diffseg.cli import main
from napari_diffseg.engine import load_checkpoint

TRAIN = ["--iterations", "6", "--batch-size", "2", "--crop-size", "64", "--width", "16",
         "--device", "cpu"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "synth"
    assert main(["make-sample", str(out), "--sequences", "2", "--frames", "11", "--size", "64",
                 "--label-every", "5"]) == 0
    return out


@pytest.fixture(scope="module")
def model(dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    assert main(["train", str(dataset), "--out", str(path), "--init", "none",
                 "--mode", "semi", *TRAIN]) == 0
    return path


def test_train_writes_a_self_describing_checkpoint(model, dataset):
    ckpt = load_checkpoint(model)
    assert ckpt.classes == {0: "background", 1: "vessel", 2: "catheter", 3: "guidewire"}
    assert ckpt.train_options["mode"] == "semi"
    assert ckpt.data_summary["labelled_frames"] == 6
    assert ckpt.data_summary["unlabelled_frames"] == 16
    assert ckpt.metrics["iterations"] == 6


def test_train_resumes_from_its_checkpoint(model, dataset, tmp_path):
    out = tmp_path / "more.pt"
    assert main(["train", str(dataset), "--out", str(out), "--resume", str(model),
                 "--iterations", "9", "--batch-size", "2", "--crop-size", "64",
                 "--device", "cpu"]) == 0
    assert load_checkpoint(out).metrics["iterations"] == 9


def test_segment_writes_labels_uncertainty_and_summary(model, dataset, tmp_path):
    seq = dataset / "JPEGImages" / "seq001"
    out = tmp_path / "seg"
    assert main(["segment", str(seq), "--model", str(model), "--out", str(out),
                 "--steps", "2", "--samples", "2", "--device", "cpu"]) == 0
    names = sorted(p.stem for p in seq.glob("*.png"))
    assert sorted(p.stem for p in (out / "labels").glob("*.png")) == names
    assert sorted(p.stem for p in (out / "uncertainty").glob("*.tif")) == names
    labels = np.asarray(Image.open(out / "labels" / "00003.png"))
    assert labels.shape == (64, 64) and labels.max() <= 3
    unc = tifffile.imread(out / "uncertainty" / "00003.tif")
    assert unc.dtype == np.float32 and unc.shape == (64, 64) and np.all(unc >= 0)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["frame_scores"]) == set(names)
    assert sorted(summary["review_order"]) == names
    assert summary["device"].startswith("cpu") and summary["timings"]["total_s"] > 0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_segment_and_evaluate_say_and_use_the_precision_asked_for(model, dataset, tmp_path,
                                                                   capsys, precision):
    seq = dataset / "JPEGImages" / "seq001"
    out = tmp_path / "seg"
    args = ["--model", str(model), "--device", "cpu", "--uncertainty", "samples", "--steps",
            "2", "--samples", "2", "--precision", precision]
    assert main(["segment", str(seq), "--out", str(out), *args]) == 0
    assert json.loads((out / "summary.json").read_text())["precision"] == precision
    assert f"2 steps x 2 samples, {precision})" in capsys.readouterr().err
    assert main(["evaluate", str(seq), "--json", *args]) == 0
    assert json.loads(capsys.readouterr().out)["review"].endswith(f", {precision}")


def test_segment_reads_any_input_format(model, tmp_path):
    import imageio.v3 as iio

    frames = np.random.default_rng(0).integers(0, 255, (3, 48, 40), dtype=np.uint8)
    video = tmp_path / "clip.mp4"
    iio.imwrite(video, frames, plugin="pyav", codec="libx264", fps=10, in_pixel_format="gray")
    assert main(["segment", str(video), "--model", str(model), "--out", str(tmp_path / "o"),
                 "--steps", "1", "--samples", "1", "--device", "cpu"]) == 0
    assert sorted(p.name for p in (tmp_path / "o" / "labels").iterdir()) == [
        "00000.png", "00001.png", "00002.png"]


def test_evaluate_reports_per_class_metrics(model, dataset, capsys):
    capsys.readouterr()
    assert main(["evaluate", str(dataset), "--model", str(model), "--json", "--steps", "2",
                 "--samples", "1", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 6
    assert set(report["per_class"]) >= {"vessel", "catheter"}
    for name in ("vessel", "catheter"):
        assert {"dice", "iou", "hd95"} <= set(report["per_class"][name])
    assert 0 <= report["mean"]["dice"] <= 1
    assert main(["evaluate", str(dataset), "--model", str(model), "--steps", "1",
                 "--samples", "1", "--device", "cpu"]) == 0
    assert "vessel" in capsys.readouterr().out


@pytest.mark.parametrize("review", [[], ["--uncertainty", "samples", "--steps", "2",
                                      "--samples", "2"]])
def test_evaluate_scores_the_labels_segment_writes(model, dataset, tmp_path, capsys, review):
    """evaluate and segment with the same options give the same labels (by default both the
    8-view TTA), so a user's evaluation is of what they get."""
    from napari_diffseg.engine.metrics import evaluate_frames
    from napari_diffseg.io import read

    seq = dataset / "JPEGImages" / "seq001"
    capsys.readouterr()
    assert main(["evaluate", str(seq), "--model", str(model), "--json", "--device", "cpu",
                 *review]) == 0
    report = json.loads(capsys.readouterr().out)
    assert ("test-time augmentation" in report["review"]) == (not review)
    out = tmp_path / "seg"
    assert main(["segment", str(seq), "--model", str(model), "--out", str(out),
                 "--device", "cpu", *review]) == 0
    video = read(seq)
    names = video.meta.frame_names
    preds = np.stack([np.asarray(Image.open(out / "labels" / f"{names[i]}.png"))
                      for i in video.labelled])
    classes = load_checkpoint(model).classes
    expected = evaluate_frames(preds, video.labels[video.labelled], classes).to_dict()
    assert report["mean"] == pytest.approx(expected["mean"], nan_ok=True)
    assert report["per_class"].keys() == expected["per_class"].keys()
    for name, scores in expected["per_class"].items():
        assert report["per_class"][name] == pytest.approx(scores, nan_ok=True)


def test_a_bad_checkpoint_is_a_clear_error(dataset, tmp_path, capsys):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["segment", str(dataset / "JPEGImages" / "seq000"), "--model", str(bad),
                 "--out", str(tmp_path / "x"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "broken.pt" in err and "Traceback" not in err


def test_train_and_evaluate_on_a_mosxav_download(tmp_path, capsys):
    from napari_diffseg.data import make_mosxav

    root = make_mosxav(tmp_path / "MOSXAV", trainval=3, test=1, frames=10, size=64)
    model = tmp_path / "m.pt"
    assert main(["train", str(root / "trainval"), "--split", "train", "--out", str(model),
                 "--init", "none", "--mode", "semi", *TRAIN]) == 0
    ckpt = load_checkpoint(model)
    assert ckpt.classes[1] == "vessel" and ckpt.classes[2] == "contrast catheter"
    train_names = (root / "trainval" / "ImageSets" / "train.txt").read_text().split()
    assert ckpt.data_summary["sequences"] == len(train_names)
    capsys.readouterr()
    assert main(["evaluate", str(root / "test"), "--model", str(model), "--json",
                 "--steps", "1", "--samples", "1", "--device", "cpu"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["frames"] == 10  # every test frame is annotated


def test_make_sample_mosxav_layout_and_segment_back_into_it(model, tmp_path):
    from napari_diffseg.io import MOSXAV_COLORS, read

    root = tmp_path / "MOSXAV"
    assert main(["make-sample", str(root), "--layout", "mosxav", "--sequences", "2",
                 "--test-sequences", "1", "--frames", "6", "--size", "64"]) == 0
    for split, sets in [("trainval", {"train.txt", "val.txt"}), ("test", {"test.txt"})]:
        assert {p.name for p in (root / split / "ImageSets").iterdir()} == sets
        assert (root / split / "labels.json").is_file()
    seq = next((root / "test" / "JPEGImages").iterdir())
    source = read(seq)
    assert source.meta.extra["mask_encoding"] == "rgb"
    out = tmp_path / "export"
    assert main(["segment", str(seq), "--model", str(model), "--out", str(out), "--mosxav",
                 "--steps", "1", "--samples", "1", "--device", "cpu"]) == 0
    written = sorted((out / "Annotations_Semantic" / seq.name).glob("*.png"))
    assert [p.stem for p in written] == source.meta.frame_names
    mask = np.asarray(Image.open(written[0]))
    assert mask.ndim == 3  # the source's encoding: RGB class colours
    allowed = {tuple(c) for c in MOSXAV_COLORS.values()}
    assert {tuple(px) for px in mask.reshape(-1, 3)} <= allowed
    assert (out / "labels.json").is_file()


def test_train_without_init_fine_tunes_the_bundled_model(dataset, tmp_path, capsys):
    from napari_diffseg.models import default_model_path

    out = tmp_path / "tuned.pt"
    assert main(["train", str(dataset), "--out", str(out), "--iterations", "1",
                 "--batch-size", "1", "--crop-size", "64", "--device", "cpu"]) == 0
    assert "fine-tuning the bundled model" in capsys.readouterr().err
    assert load_checkpoint(out).model_config == load_checkpoint(default_model_path()).model_config


def test_train_on_something_that_is_not_a_dataset_is_a_clear_error(tmp_path, capsys):
    clip = tmp_path / "clip.tif"
    tifffile.imwrite(clip, np.zeros((2, 16, 16), dtype=np.uint8))
    assert main(["train", str(clip), "--out", str(tmp_path / "m.pt"), "--init", "none"]) == 2
    err = capsys.readouterr().err
    assert "clip.tif" in err and "not a DAVIS or MOSXAV dataset" in err


def test_train_layout_options_reach_the_checkpoint(dataset, tmp_path, capsys):
    path = tmp_path / "full_res.pt"
    assert main(["train", str(dataset), "--out", str(path), "--init", "none", "--mode",
                 "supervised", "--encoder-stride", "1", "--denoiser-stride", "2", *TRAIN]) == 0
    config = load_checkpoint(path).model_config
    assert (config["encoder_stride"], config["denoiser_stride"]) == (1, 2)
    assert config["width"] == 16
    bad = main(["train", str(dataset), "--out", str(tmp_path / "bad.pt"), "--init", "none",
                "--encoder-stride", "4", "--denoiser-stride", "2", *TRAIN])
    assert bad == 2 and "multiple of --encoder-stride 4" in capsys.readouterr().err
    assert not (tmp_path / "bad.pt").exists()


def test_train_with_temporal_context_and_segment_with_it(model, dataset, tmp_path):
    """--context-frames 1 from a frame-wise --init: the model is expanded, the dataset's
    frames stacked with their neighbours, and segment reads them."""
    path = tmp_path / "temporal.pt"
    assert main(["train", str(dataset), "--out", str(path), "--init", str(model),
                 "--mode", "supervised", "--context-frames", "1", *TRAIN]) == 0
    ckpt = load_checkpoint(path)
    assert ckpt.model_config["context_frames"] == 1
    assert ckpt.data_summary["context_frames"] == 1
    # fine-tuning it again without the option keeps its context
    again = tmp_path / "again.pt"
    assert main(["train", str(dataset), "--out", str(again), "--init", str(path),
                 "--mode", "supervised", *TRAIN]) == 0
    assert load_checkpoint(again).model_config["context_frames"] == 1
    video = next((dataset / "JPEGImages").iterdir())
    out = tmp_path / "seg"
    assert main(["segment", str(video), "--model", str(again), "--out", str(out),
                 "--steps", "1", "--samples", "1", "--uncertainty", "samples",
                 "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 11


def test_train_global_context_adds_the_frame_level_block(model, dataset, tmp_path):
    """--global-context on an --init model without the block: the checkpoint has it, learned
    (it starts at zero), and segment reads the result."""
    path = tmp_path / "global.pt"
    assert load_checkpoint(model).model_config["global_context"] is False
    assert main(["train", str(dataset), "--out", str(path), "--init", str(model),
                 "--mode", "supervised", "--global-context", *TRAIN]) == 0
    ckpt = load_checkpoint(path)
    assert ckpt.model_config["global_context"] is True
    assert float(ckpt.state_dict["encoder.global_mix.2.weight"].abs().max()) > 0
    video = next((dataset / "JPEGImages").iterdir())
    out = tmp_path / "seg"
    assert main(["segment", str(video), "--model", str(path), "--out", str(out),
                 "--steps", "1", "--samples", "1", "--device", "cpu"]) == 0
    assert json.loads((out / "summary.json").read_text())["frames"] == 11


@pytest.fixture
def tiny_init(tmp_path):
    """An untrained tiny checkpoint with the generator's classes."""
    import torch

    from napari_diffseg.data.sequences import DEFAULT_NORMALISATION
    from napari_diffseg.engine.checkpoint import Checkpoint, save_checkpoint
    from napari_diffseg.model import DiffSegNet, ModelConfig

    cfg = ModelConfig(num_classes=4, width=8, depth=2, label_width=8, label_blocks=1,
                      time_dim=16, denoiser_stride=1, encoder_stride=1)
    torch.manual_seed(0)
    classes = {0: "background", 1: "vessel", 2: "catheter", 3: "guidewire"}
    return save_checkpoint(tmp_path / "tiny.pt", Checkpoint(
        cfg.to_dict(), DiffSegNet(cfg).state_dict(), classes, dict(DEFAULT_NORMALISATION),
        {"timesteps": 10}))


@pytest.mark.parametrize("labels_as", ["none", "tiff", "davis"])
def test_adapt_writes_a_model_from_zero_or_some_corrected_frames(
    tiny_init, tmp_path, capsys, labels_as
):
    from napari_diffseg.data import SyntheticConfig, generate_sequence

    seq = generate_sequence(SyntheticConfig(size=64, frames=6, seed=4))
    video = tmp_path / "cine.tif"
    tifffile.imwrite(video, seq.frames)
    extra = []
    if labels_as == "tiff":
        corrected = np.zeros_like(seq.labels)
        corrected[2] = seq.labels[2]
        tifffile.imwrite(tmp_path / "corrected.tif", corrected)
        extra = ["--labels", str(tmp_path / "corrected.tif")]
    elif labels_as == "davis":
        (tmp_path / "ann").mkdir()
        Image.fromarray(seq.labels[2]).save(tmp_path / "ann" / "00002.png")
        extra = ["--labels", str(tmp_path / "ann")]
    out = tmp_path / "adapted.pt"
    assert main(["adapt", str(video), "--out", str(out), "--model", str(tiny_init),
                 "--iterations", "3", "--samples", "1", "--steps", "1", "--device", "cpu",
                 *extra]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.metrics["iterations"] == 3
    assert ckpt.metrics["pseudo_labels"]["verified"] == (0 if labels_as == "none" else 1)
    assert ckpt.data_summary["unlabelled_frames"] == (6 if labels_as == "none" else 5)
    assert "saved" in capsys.readouterr().out


@pytest.mark.parametrize("keep", [True, False])
def test_segment_keeps_the_wire_the_bolus_hides(model, tmp_path, monkeypatch, keep):
    """The labels segment writes are the model's with the wire tracking applied (unless
    --no-wire-tracking), and summary.json names the frames it changed. The model's labels are
    replaced by a known bolus pattern: a wire seen in frames 0-2 and 7-9, covered by a
    vessel the model calls vessel in frames 3-6."""
    pattern = np.zeros((10, 64, 64), np.uint8)
    pattern[:, 8:56, 30] = 3
    pattern[3:7, 8:56, 28:33] = 1
    written, tracking = _segment_pattern(model, tmp_path, monkeypatch, pattern,
                                         [] if keep else ["--no-wire-tracking"])
    assert tracking["applied"] is keep and tracking["dropped"] == []
    if keep:
        assert (written[3:7, 8:56, 30] == 3).all()
        assert (written[3:7, 8:56, 28] == 1).all()
        assert len(tracking["kept_hidden"]) == 4
    else:
        assert (written == pattern).all() and tracking["kept_hidden"] == []


def test_segment_drops_a_wire_no_frame_shows_outside_the_vessel(model, tmp_path, monkeypatch):
    pattern = np.zeros((10, 64, 64), np.uint8)
    pattern[:, 8:56, 28:33] = 1
    pattern[4:7, 10:50, 30] = 3  # a wire guessed along the vessel's centreline
    written, tracking = _segment_pattern(model, tmp_path, monkeypatch, pattern, [])
    assert not (written == 3).any() and (written[4:7, 10:50, 30] == 1).all()
    assert len(tracking["dropped"]) == 3 and tracking["kept_hidden"] == []


def _segment_pattern(model, tmp_path, monkeypatch, pattern, extra, frames=None,
                     key="wire_tracking"):
    """Run `segment` on a random 64 px video (or `frames`) with the model's labels replaced
    by `pattern` (the rest of the run is real); returns (the label maps written,
    summary[key]). The wire tests keep static vessel (--keep-static): noise frames have no
    contrast to judge it by."""
    from dataclasses import replace

    import napari_diffseg.engine.pipeline as pipeline

    real = pipeline.iter_segment

    def model_answer(*args, **kwargs):
        for chunk in real(*args, **kwargs):
            yield replace(chunk, labels=pattern[chunk.indices])

    monkeypatch.setattr(pipeline, "iter_segment", model_answer)  # what `segment` runs
    if frames is None:
        frames = np.random.default_rng(1).integers(0, 255, pattern.shape, dtype=np.uint8)
        extra = [*extra, "--keep-static"]
    tifffile.imwrite(tmp_path / "run.tif", frames)
    out = tmp_path / "seg"
    assert main(["segment", str(tmp_path / "run.tif"), "--model", str(model), "--out", str(out),
                 "--uncertainty", "samples", "--steps", "1", "--samples", "1",
                 "--device", "cpu", "--quiet", *extra]) == 0
    written = np.stack([np.asarray(Image.open(p))
                        for p in sorted((out / "labels").glob("*.png"))])
    return written, json.loads((out / "summary.json").read_text())[key]


@pytest.mark.parametrize("keep", [False, True])
def test_segment_drops_vessel_the_frames_before_the_contrast_show_too(model, tmp_path,
                                                                     monkeypatch, keep):
    """A lung marking the model calls vessel in every frame, and a vessel that fills in
    frames 3-6: segment writes the marking as background (unless --keep-static) and names
    the frames it changed."""
    frames, pattern, _, _ = marking_and_bolus()
    written, static = _segment_pattern(model, tmp_path, monkeypatch, pattern,
                                       ["--keep-static"] if keep else [],
                                       frames=frames.astype(np.uint8), key="static_vessel")
    assert static["applied"] is not keep
    assert (written[3:7, 60:68, 10:118] == 1).all()
    if keep:
        assert (written == pattern).all() and static["frames"] == []
    else:
        assert not (written[:, 20:24, 10:60] == 1).any()
        assert len(static["frames"]) == 10
