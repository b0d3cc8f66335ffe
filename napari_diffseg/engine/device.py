"""Choosing the torch device that training and inference run on."""

from __future__ import annotations

import logging

import torch

from napari_diffseg.engine.defaults import PRECISIONS

logger = logging.getLogger(__name__)

AUTO = "auto"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """Names of the devices torch can use here, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names.extend(f"cuda:{index}" for index in range(torch.cuda.device_count()))
    if _mps_available():
        names.append("mps")
    return names


def resolve_device(name: str = AUTO) -> torch.device:
    """Turn a device name into a usable :class:`torch.device`.

    ``"auto"`` picks CUDA if available, else Apple MPS, else the CPU. Explicit names
    (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) are checked against what is available.

    Raises:
        ValueError: the name is not a device torch knows, or the device is not available here;
            the message names the device asked for and lists the available ones.
    """
    text = (name or AUTO).strip().lower()
    if text == AUTO:
        if torch.cuda.is_available():
            device = torch.device("cuda")
        elif _mps_available():
            device = torch.device("mps")
        else:
            device = torch.device("cpu")
        logger.debug("device 'auto' resolved to %s", device)
        return device

    available = ", ".join(available_devices())
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError) as exc:
        raise ValueError(
            f"unknown device {name!r}; use 'auto' or one of the available devices: {available}"
        ) from exc

    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} was asked for, but CUDA is not available here; "
                f"available devices: {available}"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device {name!r} was asked for, but only {count} CUDA device(s) exist here; "
                f"available devices: {available}"
            )
        return device
    if device.type == "mps":
        if not _mps_available():
            raise ValueError(
                f"device {name!r} was asked for, but MPS is not available here; "
                f"available devices: {available}"
            )
        return device
    raise ValueError(
        f"device {name!r} is not supported by napari-diffseg; available devices: {available}"
    )


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` computes bfloat16 in hardware: CUDA GPUs that support it, CPUs with
    AVX-512 BF16 or AMX (where oneDNN's bf16 convolutions are faster than fp32; elsewhere
    bf16 on a CPU is emulated and slower)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        cpu = torch.cpu
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return False


def inference_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype:
    """The dtype inference computes in: "fp32", "bf16" (autocast), or "auto": bf16 where
    :func:`native_bf16` says the device computes it in hardware, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return torch.bfloat16 if native_bf16(device) else torch.float32
    return torch.bfloat16 if precision == "bf16" else torch.float32


def precision_name(device: torch.device | str, precision: str = "auto") -> str:
    """"bf16" or "fp32": what :func:`inference_dtype` resolves `precision` to on `device`."""
    return "bf16" if inference_dtype(device, precision) == torch.bfloat16 else "fp32"


def device_description(device: torch.device | str) -> str:
    """Human-readable description, e.g. ``"cuda:0 (NVIDIA H100)"`` or ``"cpu (2 threads)"``."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            index = device.index if device.index is not None else torch.cuda.current_device()
            return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
        except (RuntimeError, AssertionError):  # torch without CUDA raises AssertionError
            return f"{device} (unavailable)"
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    if device.type == "mps":
        return "mps (Apple Metal)"
    return str(device)
