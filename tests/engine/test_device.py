"""Device selection: 'auto', explicit names, and clear errors for unavailable devices."""

from __future__ import annotations

import pytest
import torch

from napari_diffseg.engine import device as device_module
from napari_diffseg.engine.device import available_devices, device_description, resolve_device


@pytest.fixture
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend neither CUDA nor MPS exists."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend two CUDA devices exist (nothing is allocated on them in these tests)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: f"Fake GPU {index}")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(device_module, "_mps_available", lambda: False)


def test_auto_falls_back_to_cpu(cpu_only: None) -> None:
    assert resolve_device() == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    assert available_devices() == ["cpu"]


def test_auto_prefers_cuda(two_gpus: None) -> None:
    assert resolve_device("auto").type == "cuda"
    assert available_devices() == ["cpu", "cuda:0", "cuda:1"]


def test_auto_uses_mps_without_cuda(cpu_only: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(device_module, "_mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")
    assert resolve_device("mps") == torch.device("mps")


def test_explicit_devices(two_gpus: None) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(" CUDA:0 ") == torch.device("cuda", 0)


@pytest.mark.parametrize("name", ["cuda", "cuda:1", "mps"])
def test_unavailable_device_is_an_error(cpu_only: None, name: str) -> None:
    with pytest.raises(ValueError, match="available devices: cpu") as info:
        resolve_device(name)
    assert repr(name) in str(info.value)


def test_cuda_index_out_of_range(two_gpus: None) -> None:
    with pytest.raises(ValueError, match=r"'cuda:2'.*only 2 CUDA.*cuda:0, cuda:1"):
        resolve_device("cuda:2")


def test_unknown_name(cpu_only: None) -> None:
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


def test_real_resolution_is_usable() -> None:
    device = resolve_device("auto")
    assert torch.zeros(2, device=device).device.type == device.type


def test_descriptions(two_gpus: None) -> None:
    threads = torch.get_num_threads()
    assert device_description("cpu").startswith(f"cpu ({threads} thread")
    assert device_description(torch.device("cuda", 1)) == "cuda:1 (Fake GPU 1)"
    assert device_description("cuda") == "cuda:0 (Fake GPU 0)"
    assert device_description("mps") == "mps (Apple Metal)"


def test_precision_resolves_by_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_diffseg.engine.device import inference_dtype, native_bf16, precision_name

    assert inference_dtype("cpu", "fp32") == torch.float32
    assert inference_dtype("cpu", "bf16") == torch.bfloat16
    for native in (True, False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda n=native: n)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        assert native_bf16("cpu") is native
        assert precision_name("cpu", "auto") == ("bf16" if native else "fp32")
    assert precision_name("cpu", "fp32") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        inference_dtype("cpu", "fp16")


def test_segment_options_reject_an_unknown_precision() -> None:
    from napari_diffseg.engine.inference import SegmentOptions

    with pytest.raises(ValueError, match="precision"):
        SegmentOptions(precision="half")
