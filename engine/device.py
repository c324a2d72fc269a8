"""Device and numeric precision, chosen in one place.

CUDA: float16 autocast with a gradient scaler (bfloat16 where the GPU supports it), channels_last.
MPS: float32. CPU: channels_last, and bfloat16 autocast only where the CPU has native bf16
instructions (AVX512-BF16 or AMX); elsewhere float32, which is always a working fallback.
Diffusers pipelines (:func:`pipeline_dtype`): float16 weights on CUDA and MPS, float32 on the CPU.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class DeviceSetup:
    """Where and how to compute."""

    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype, None for plain float32
    channels_last: bool
    use_scaler: bool  # float16 needs loss scaling

    @property
    def label(self) -> str:
        precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]
        return f"{self.device.type} {precision}{' channels_last' if self.channels_last else ''}"


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (otherwise bf16 autocast is slower, not faster)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def available_devices() -> tuple[str, ...]:
    """The devices this machine offers, in the order ``"auto"`` tries them; always ends with ``"cpu"``."""
    found = ["cuda"] if torch.cuda.is_available() else []
    if torch.backends.mps.is_available():
        found.append("mps")
    return (*found, "cpu")


def pick_device(device: str = "auto", precision: str = "auto") -> DeviceSetup:
    """Resolve a device and precision request on this machine; raises ValueError naming what it offers.

    This asks the hardware, so call it when work starts, never from a config's ``__post_init__``:
    a config recorded on a GPU machine must still load on a CPU-only one.
    """
    if device not in DEVICES:
        raise ValueError(f"device={device!r} is not accepted: expected one of {', '.join(DEVICES)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not accepted: expected one of {', '.join(PRECISIONS)}")
    offered = available_devices()
    requested = device
    if device == "auto":
        device = offered[0]
    if device not in offered:
        raise ValueError(
            f"device={device!r} is not available on this machine, which offers {', '.join(offered)}: "
            "use one of those or 'auto'"
        )
    if device == "cuda":
        dtype = {"auto": torch.float16, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        return DeviceSetup(torch.device("cuda"), dtype, True, dtype == torch.float16)
    if device == "mps":
        return DeviceSetup(torch.device("mps"), None, False, False)
    if precision == "fp16":
        chose = ", the only device='auto' finds on this machine" if requested == "auto" else ""
        raise ValueError(f"precision='fp16' is not supported on the CPU{chose}: use 'bf16', 'fp32' or 'auto'")
    use_bf16 = precision == "bf16" or (precision == "auto" and cpu_has_bf16())
    return DeviceSetup(torch.device("cpu"), torch.bfloat16 if use_bf16 else None, True, False)


def pipeline_dtype(device: torch.device) -> torch.dtype:
    """The weights dtype for a diffusers pipeline on ``device``: half precision on GPUs, float32 on the CPU."""
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32
