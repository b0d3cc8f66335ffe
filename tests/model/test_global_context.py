"""The encoder's frame-level block (ModelConfig.global_context): added to a trained model it
changes nothing until trained, its signal is one value per channel for the whole frame, it is
learned by training and kept by checkpoints; checkpoints written before it load without it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_diffseg.data import DEFAULT_CLASSES, SyntheticConfig, generate_sequence
from napari_diffseg.data.sequences import DEFAULT_NORMALISATION, SparseDataset
from napari_diffseg.engine.checkpoint import (
    Checkpoint,
    build_model,
    load_checkpoint,
    save_checkpoint,
)
from napari_diffseg.engine.training import TrainOptions, train
from napari_diffseg.model import DiffSegNet, ModelConfig, add_global_context

TINY = ModelConfig(num_classes=4, width=8, depth=2, label_width=8, label_blocks=1,
                   time_dim=16, denoiser_stride=2, encoder_stride=1)


def test_an_added_block_answers_as_the_model_did_until_trained():
    torch.manual_seed(0)
    plain = DiffSegNet(TINY).eval()
    wide = add_global_context(plain).eval()
    assert wide.config.global_context and not plain.config.global_context
    assert add_global_context(wide) is wide
    image, x_t, t = torch.randn(2, 1, 32, 32), torch.randn(2, 4, 32, 32), torch.tensor([.2, .8])
    with torch.no_grad():
        a, _ = plain(image, x_t, t)
        b, _ = wide(image, x_t, t)
    torch.testing.assert_close(a, b)


def test_the_block_adds_one_value_per_channel_for_the_whole_frame():
    """Whatever its weights, the block's contribution at the bottleneck is the same at every
    position of a frame and differs between frames: a frame-level signal."""
    torch.manual_seed(1)
    model = DiffSegNet(ModelConfig(**{**TINY.to_dict(), "global_context": True})).eval()
    torch.nn.init.normal_(model.encoder.global_mix[2].weight)
    seen = {}
    model.encoder.mid.register_forward_hook(lambda m, i, out: seen.__setitem__("mid", out))
    model.encoder.up_blocks[0].register_forward_pre_hook(
        lambda m, args: seen.__setitem__("up_input", args[0]))
    with torch.no_grad():
        model.encode(torch.randn(2, 1, 32, 32))
        added = model.encoder.global_mix(seen["mid"].mean(dim=(2, 3)))
    assert added.abs().min() > 0
    assert not torch.allclose(added[0], added[1])
    # what the up path reads is the bottleneck plus `added`, broadcast over the frame
    mid = seen["mid"]
    expected = model.encoder.upsamples[0](torch.nn.functional.interpolate(
        mid + added[:, :, None, None], scale_factor=2.0, mode="nearest"))
    torch.testing.assert_close(seen["up_input"][:, : expected.shape[1]], expected)


def test_training_with_the_block_learns_it_and_the_checkpoint_keeps_it(tmp_path):
    torch.manual_seed(0)
    start = save_checkpoint(tmp_path / "start.pt", Checkpoint(
        TINY.to_dict(), DiffSegNet(TINY).state_dict(), dict(DEFAULT_CLASSES),
        dict(DEFAULT_NORMALISATION), {"timesteps": 10}))
    seq = generate_sequence(SyntheticConfig(size=64, frames=4, seed=3))
    data = SparseDataset(images=list(seq.frames.astype(np.float32) / 255.0),
                         labels=list(seq.labels), classes=dict(DEFAULT_CLASSES))
    options = TrainOptions(mode="supervised", iterations=6, batch_size=2, crop_size=32,
                           lr=1e-3, val_every=0, device="cpu", global_context=True)
    result = train(data, options, init=load_checkpoint(start))
    assert result.model.config.global_context
    out = save_checkpoint(tmp_path / "out.pt", result.checkpoint)
    again = load_checkpoint(out)
    assert again.model_config["global_context"] is True
    learned = again.state_dict["encoder.global_mix.2.weight"]
    assert learned.abs().max() > 0  # it started at zero
    build_model(again)  # loads strictly
    # fine-tuning it further (the option left at None) keeps the block
    kept = train(data, TrainOptions(mode="supervised", iterations=1, batch_size=2,
                                    crop_size=32, val_every=0, device="cpu"), init=again)
    assert kept.model.config.global_context


def test_a_checkpoint_written_before_the_block_loads_without_it(tmp_path):
    config = TINY.to_dict()
    del config["global_context"]
    path = save_checkpoint(tmp_path / "old.pt", Checkpoint(
        config, DiffSegNet(TINY).state_dict(), dict(DEFAULT_CLASSES),
        dict(DEFAULT_NORMALISATION), {"timesteps": 10}))
    ckpt = load_checkpoint(path)
    assert ckpt.model_config["global_context"] is False
    assert build_model(ckpt).encoder.global_mix is None


@pytest.mark.parametrize("flag", [False, True])
def test_a_new_model_has_the_block_only_when_asked(flag):
    seq = generate_sequence(SyntheticConfig(size=32, frames=2, seed=1))
    data = SparseDataset(images=list(seq.frames.astype(np.float32) / 255.0),
                         labels=list(seq.labels), classes=dict(DEFAULT_CLASSES))
    result = train(data, TrainOptions(mode="supervised", iterations=1, batch_size=1,
                                      crop_size=32, val_every=0, device="cpu",
                                      global_context=flag), model_config=TINY)
    assert result.model.config.global_context is flag
