"""Where this process runs: one process, or one rank of a ``torchrun`` job (PyTorch DDP).

Everything is decided at run time from the environment ``torchrun`` sets (``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``): a GPU per rank with NCCL when CUDA is present, CPU with gloo
otherwise; mixed precision only on the GPU.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from core import settings
from lossnet import AUTO, VGG
from lossnet import precision as precisions
from optimize import precision as precision_choice


@dataclass(frozen=True)
class Runtime:
    """This process's place in the job."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, samples and writes checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | None = None) -> Runtime:
    """Joins the ``torchrun`` process group if there is one; picks the device.

    ``device`` forces one ("cpu", "cuda"); by default a rank takes GPU ``LOCAL_RANK`` when
    CUDA is available, else the CPU."""
    world_size = settings.env("WORLD_SIZE")
    local_rank = settings.env("LOCAL_RANK")
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(kind, local_rank) if kind == "cuda" else torch.device(kind)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=chosen if chosen.type == "cuda" else None)
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Runtime(rank, world_size, local_rank, chosen)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def mean_over_ranks(values: dict[str, float], runtime: Runtime) -> dict[str, float]:
    """Averages logged numbers over all ranks (a collective: every rank must call it)."""
    if not runtime.distributed:
        return values
    names = sorted(values)
    tensor = torch.tensor([values[n] for n in names], dtype=torch.float64, device=runtime.device)
    dist.all_reduce(tensor)
    return {n: float(v) / runtime.world_size for n, v in zip(names, tensor.tolist(), strict=True)}


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


@dataclass
class Precision:
    """Automatic mixed precision for a training step: the loss network's precision on this
    machine (``lossnet.precision``), chosen as the Gatys path chooses it (``auto``: on a GPU,
    bf16 where it has it, else fp16 with a ``GradScaler``; on a CPU, bf16 only where
    ``optimize.precision`` measured it faster and painting like fp32), or as asked."""

    device_type: str
    dtype: torch.dtype | None
    scaler: torch.amp.GradScaler
    reason: str = ""

    @classmethod
    def choose(cls, device: torch.device, asked: str = "auto", vgg: VGG | None = None) -> Precision:
        if asked != AUTO:
            chosen, reason = precisions.explicit(asked, device), "asked for"
        elif device.type == "cuda":
            chosen, reason = precisions.reduced(device), "the GPU's native reduced precision"
        elif vgg is None:
            chosen, reason = precisions.FP32, "no loss network to measure with"
        else:
            choice = precision_choice.choose(vgg, device)
            chosen, reason = choice.precision, choice.reason
        scaler = torch.amp.GradScaler(device.type, enabled=chosen.dtype == torch.float16)
        return cls(device.type, chosen.dtype, scaler, reason)

    @property
    def lossnet_precision(self) -> precisions.Precision:
        """The same precision for the loss network's convolutions (channels-last when reduced)."""
        names = {torch.bfloat16: "bf16", torch.float16: "fp16"}
        return precisions.Precision(names.get(self.dtype, "fp32"), self.device_type)

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def describe(self) -> str:
        kind = "float32" if self.dtype is None else f"AMP {str(self.dtype).removeprefix('torch.')}"
        return f"{kind} ({self.reason})" if self.reason else kind
