"""A lighter denoiser (model.keep_label_blocks, TrainOptions.label_blocks): a trained model's
denoiser keeps its first residual blocks with their weights and dilations, the copy runs
fewer convolutions per step, fine-tuning from it trains the kept blocks and the checkpoint
keeps the smaller architecture; it never adds blocks."""

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
from napari_diffseg.model import DiffSegNet, ModelConfig, keep_label_blocks

TINY = ModelConfig(num_classes=4, width=8, depth=2, label_width=8, label_blocks=3,
                   time_dim=16, denoiser_stride=2, encoder_stride=1)


def test_the_kept_blocks_keep_their_weights_and_dilations():
    torch.manual_seed(0)
    full = DiffSegNet(TINY).eval()
    light = keep_label_blocks(full, 2).eval()
    assert light.config.label_blocks == 2 and full.config.label_blocks == 3
    assert len(light.denoiser.blocks) == 2
    assert [b.conv1.dilation for b in light.denoiser.blocks] == [(1, 1), (2, 2)]
    for name, value in light.state_dict().items():
        torch.testing.assert_close(value, full.state_dict()[name])
    assert keep_label_blocks(full, 3) is full
    # the copy is the model with its last block's residual branch removed: with that
    # branch zeroed, the full model answers exactly as the copy
    last = full.denoiser.blocks[2]
    torch.nn.init.zeros_(last.conv2.weight)
    torch.nn.init.zeros_(last.conv2.bias)
    image, x_t, t = torch.randn(2, 1, 32, 32), torch.randn(2, 4, 32, 32), torch.tensor([.2, .8])
    with torch.no_grad():
        a, latent_a = full(image, x_t, t)
        b, latent_b = light(image, x_t, t)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(latent_a, latent_b)


def test_kept_blocks_chosen_by_index_keep_their_own_dilations(tmp_path):
    """Keeping blocks 0 and 2 (dilations 1 and 4) drops the middle one: the copy records the
    dilations, a checkpoint keeps them, and the copy is the model without that block."""
    torch.manual_seed(2)
    full = DiffSegNet(TINY).eval()
    light = keep_label_blocks(full, (0, 2)).eval()
    assert light.config.label_dilations == (1, 4) == light.config.dilations
    assert [b.conv1.dilation for b in light.denoiser.blocks] == [(1, 1), (4, 4)]
    torch.testing.assert_close(light.state_dict()["denoiser.blocks.1.conv2.weight"],
                               full.state_dict()["denoiser.blocks.2.conv2.weight"])
    middle = full.denoiser.blocks[1]
    torch.nn.init.zeros_(middle.conv2.weight)
    torch.nn.init.zeros_(middle.conv2.bias)
    image, x_t, t = torch.randn(2, 1, 32, 32), torch.randn(2, 4, 32, 32), torch.tensor([.3, .6])
    with torch.no_grad():
        torch.testing.assert_close(full(image, x_t, t)[0], light(image, x_t, t)[0])
    # the first blocks keep the default cycle, so nothing needs recording
    assert keep_label_blocks(full, (0, 1)).config.label_dilations == ()
    path = save_checkpoint(tmp_path / "light.pt", Checkpoint(
        light.config.to_dict(), light.state_dict(), dict(DEFAULT_CLASSES),
        dict(DEFAULT_NORMALISATION), {"timesteps": 10}))
    again = build_model(load_checkpoint(path))
    assert again.config.dilations == (1, 4)
    with pytest.raises(ValueError, match="a dilation >= 1 for each"):
        ModelConfig(**{**TINY.to_dict(), "label_dilations": (1, 2)})


@pytest.mark.parametrize("blocks", [0, 4, (3,), ()])
def test_blocks_can_only_go(blocks):
    with pytest.raises(ValueError, match="cannot keep"):
        keep_label_blocks(DiffSegNet(TINY), blocks)


def _data() -> SparseDataset:
    seq = generate_sequence(SyntheticConfig(size=64, frames=4, seed=3))
    return SparseDataset(images=list(seq.frames.astype(np.float32) / 255.0),
                         labels=list(seq.labels), classes=dict(DEFAULT_CLASSES))


def test_fine_tuning_with_fewer_blocks_trains_them_and_the_checkpoint_keeps_them(tmp_path):
    torch.manual_seed(0)
    full = DiffSegNet(TINY)
    start = save_checkpoint(tmp_path / "start.pt", Checkpoint(
        TINY.to_dict(), full.state_dict(), dict(DEFAULT_CLASSES),
        dict(DEFAULT_NORMALISATION), {"timesteps": 10}))
    options = TrainOptions(mode="supervised", iterations=4, batch_size=2, crop_size=32,
                           lr=1e-3, val_every=0, device="cpu", label_blocks=1)
    result = train(_data(), options, init=load_checkpoint(start))
    assert result.model.config.label_blocks == 1
    out = load_checkpoint(save_checkpoint(tmp_path / "out.pt", result.checkpoint))
    assert out.model_config["label_blocks"] == 1
    assert not any(k.startswith("denoiser.blocks.1.") for k in out.state_dict)
    kept = out.state_dict["denoiser.blocks.0.conv1.weight"]
    assert not torch.equal(kept, full.state_dict()["denoiser.blocks.0.conv1.weight"])
    build_model(out)  # loads strictly
    # fine-tuning further with the option left at None keeps the smaller denoiser
    again = train(_data(), TrainOptions(mode="supervised", iterations=1, batch_size=2,
                                        crop_size=32, val_every=0, device="cpu"), init=out)
    assert again.model.config.label_blocks == 1
    with pytest.raises(ValueError, match="can keep fewer"):
        train(_data(), TrainOptions(mode="supervised", iterations=1, batch_size=2,
                                    crop_size=32, val_every=0, device="cpu", label_blocks=2),
              init=out)


def test_fine_tuning_can_keep_blocks_by_index(tmp_path):
    torch.manual_seed(0)
    start = save_checkpoint(tmp_path / "start.pt", Checkpoint(
        TINY.to_dict(), DiffSegNet(TINY).state_dict(), dict(DEFAULT_CLASSES),
        dict(DEFAULT_NORMALISATION), {"timesteps": 10}))
    result = train(_data(), TrainOptions(mode="supervised", iterations=2, batch_size=2,
                                         crop_size=32, val_every=0, device="cpu",
                                         label_blocks=[0, 2]), init=load_checkpoint(start))
    assert result.model.config.dilations == (1, 4)
    with pytest.raises(ValueError, match="can keep fewer"):
        train(_data(), TrainOptions(mode="supervised", iterations=1, batch_size=2,
                                    crop_size=32, val_every=0, device="cpu",
                                    label_blocks=(0, 3)), init=load_checkpoint(start))


def test_a_new_model_gets_the_blocks_asked_for():
    result = train(_data(), TrainOptions(mode="supervised", iterations=1, batch_size=1,
                                         crop_size=32, val_every=0, device="cpu",
                                         label_blocks=2), model_config=TINY)
    assert result.model.config.label_blocks == 2
    with pytest.raises(ValueError, match="at least 1"):
        TrainOptions(label_blocks=0)
