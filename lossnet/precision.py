"""The arithmetic the loss network runs in: fp32, or bf16/fp16 autocast in channels-last layout.

VGG's convolutions are most of a Gatys iteration and of a training step. On CPUs with
AVX512_BF16 or AMX, oneDNN runs them far faster in bfloat16, and the channels-last layout is
what its fast kernels read; on a GPU, bf16 where supported, else fp16. Only the convolution
stack changes: ``LossNetwork`` hands back float32 activations, so Gram matrices, losses and
the optimizer stay in float32. Whether reduced precision pays, and paints like fp32, is
measured per machine (``optimize.precision``); this module only says what a precision is and
whether the machine has the instructions for it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch

from core.cpu import cpu_flags

AUTO = "auto"
#: What may be asked for. ``bf16`` means reduced precision: bfloat16, or float16 on a GPU without bf16.
PRECISIONS = ("fp32", "bf16")
#: CPU flags whose presence makes bf16 convolutions native (AVX512_BF16, or AMX's bf16 tiles).
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


class PrecisionUnavailable(ValueError):
    """An explicitly asked-for precision this machine cannot run natively; the message says why."""


@dataclass(frozen=True)
class Precision:
    """``name`` is ``fp32``, ``bf16`` or ``fp16`` (the reduced form a GPU without bf16 runs)."""

    name: str
    device_type: str = "cpu"

    @property
    def dtype(self) -> torch.dtype | None:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def channels_last(self) -> bool:
        """Reduced precision reads channels-last tensors (oneDNN's and cuDNN's fast layout)."""
        return self.dtype is not None

    def autocast(self) -> AbstractContextManager:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)


FP32 = Precision("fp32")


def reduced(device: torch.device | str) -> Precision | None:
    """The reduced precision this device runs natively, or ``None`` (plain AVX2/AVX-512 CPUs)."""
    device = torch.device(device)
    if device.type == "cuda":
        return Precision("bf16" if torch.cuda.is_bf16_supported() else "fp16", "cuda")
    if device.type == "cpu" and any(flag in cpu_flags() for flag in BF16_CPU_FLAGS):
        return Precision("bf16", "cpu")
    return None


def explicit(name: str, device: torch.device | str) -> Precision:
    """The precision asked for by name (not ``auto``); ``PrecisionUnavailable`` where the device
    lacks it: emulated bf16 on such a CPU is slower than fp32 and would only look like a choice."""
    if name not in PRECISIONS:
        raise PrecisionUnavailable(f"precision must be one of {AUTO}, {', '.join(PRECISIONS)}; got {name!r}")
    device = torch.device(device)
    if name == "fp32":
        return Precision("fp32", device.type)
    found = reduced(device)
    if found is None:
        raise PrecisionUnavailable(
            "precision bf16 needs a CPU with AVX512_BF16 or AMX (or a GPU); this one has neither: "
            "use precision auto or fp32")
    return found
