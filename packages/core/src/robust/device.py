"""Which device a run uses and which mixed precision goes with it."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

import torch

from robust.errors import DeviceError


def resolve_device(spec: str) -> torch.device:
    """``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``, checked against this machine."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not match:
        raise DeviceError(f"Unknown device {spec!r}. Expected auto, cpu, cuda or cuda:N (for example --device cuda:0).")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"Device {spec!r} was requested but this machine has no usable CUDA GPU (torch "
            f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). Use --device cpu, or "
            "install a CUDA build of torch on a machine with an NVIDIA GPU."
        )
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise DeviceError(
            f"Device {spec!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s), "
            f"numbered 0 to {torch.cuda.device_count() - 1}."
        )
    return torch.device("cuda", index)


@dataclass
class Precision:
    """Autocast settings and, for fp16, the gradient scaler."""

    dtype: torch.dtype | None
    device_type: str
    scaler: torch.amp.GradScaler | None = None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def name(self) -> str:
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """``torch.autocast`` at the run's dtype; in fp32 a no-op context (entered every step: no generator)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


def resolve_precision(amp: str, device: torch.device) -> Precision:
    """AMP is for GPUs: ``auto`` picks bf16 where supported, else fp16 with a grad scaler; CPU runs in fp32."""
    if device.type != "cuda" or amp == "off":
        return Precision(None, device.type)
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if amp == "bf16":
        return Precision(torch.bfloat16, device.type)
    return Precision(torch.float16, device.type, torch.amp.GradScaler(device.type))
